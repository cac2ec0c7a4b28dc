"""Data: row formats, chat-template rendering with assistant-only weights, packing."""

import json
import pathlib

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import losses
from swiftjax import models
from swiftjax.data import formats
from swiftjax.data import packing
from swiftjax.data import render
from swiftjax.models import decoder
from tests import testutil


class FormatsTest(absltest.TestCase):

  def test_each_format_normalizes(self):
    rows = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"instruction": "a", "input": "x", "output": "b", "system": "s"},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{}"},
                           {"from": "observation", "value": "r"}, {"from": "gpt", "value": "b"}]},
        {"query": "a", "response": "b", "history": [["q0", "r0"]]},
    ]
    roles = [[m["role"] for m in formats.normalize(r)["messages"]] for r in rows]
    self.assertEqual(roles, [["user", "assistant"], ["system", "user", "assistant"],
                             ["user", "tool_call", "tool_response", "assistant"],
                             ["user", "assistant", "user", "assistant"]])
    self.assertEqual(formats.normalize(rows[1])["messages"][1]["content"], "a\nx")

  def test_bad_jsonl_row_names_file_and_line(self):
    path = pathlib.Path(self.create_tempdir().full_path) / "d.jsonl"
    good = json.dumps({"query": "a", "response": "b"})
    path.write_text(f"{good}\n{good}\n{{not json\n{good}\n"
                    + json.dumps({"query": "a"}) + "\n")
    with self.assertRaisesRegex(formats.RowError, rf"{path}:3: invalid JSON"):
      formats.read_rows(path)
    rows, skipped = formats.read_rows(path, skip_bad_rows=True)
    self.assertEqual((len(rows), skipped), (3, 2))

  def test_empty_and_unlearnable(self):
    path = pathlib.Path(self.create_tempdir().full_path) / "d.json"
    path.write_text("[]")
    with self.assertRaisesRegex(formats.RowError, "no usable rows"):
      formats.read_rows(path)
    with self.assertRaisesRegex(ValueError, "no assistant message"):
      formats.normalize({"messages": [{"role": "user", "content": "a"}]})

  def test_saved_datasets_directory(self):
    # A `datasets` save_to_disk directory (Dataset and DatasetDict) reads like the JSON file
    # it was made from: Arrow's None-filled missing keys are dropped again.
    import datasets  # pylint: disable=g-import-not-at-top
    tmp = pathlib.Path(self.create_tempdir().full_path)
    rows = [{"messages": [{"role": "user", "content": "a"},
                          {"role": "assistant", "content": "b", "loss": False},
                          {"role": "user", "content": "c"},
                          {"role": "assistant", "content": "d"}], "tools": "[]"},
            {"messages": [{"role": "user", "content": "e"}, {"role": "assistant", "content": "f"}],
             "tools": json.dumps([{"name": "f", "description": "g", "parameters": {}}])}]
    (tmp / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    want, _ = formats.read_rows(tmp / "d.jsonl")
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp / "dict"))
    for name in ("saved", "dict"):
      got, skipped = formats.read_rows(tmp / name)
      self.assertEqual((got, skipped), (want, 0), name)
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp / "no_train"))
    with self.assertRaisesRegex(Exception, r"no_train has splits \['validation'\] and no 'train'"):
      formats.read_rows(tmp / "no_train")
    (tmp / "empty").mkdir()
    with self.assertRaisesRegex(Exception, r"empty is not a saved `datasets` dataset"):
      formats.read_rows(tmp / "empty")
    with self.assertRaisesRegex(Exception, r"dataset file .*nope.jsonl does not exist"):
      formats.read_rows(tmp / "nope.jsonl")

  def test_real_files(self):
    for name, fmt_key in (("alpaca_en_demo.json", 999), ("glaive_toolcall_en_demo.json", 300)):
      rows, skipped = formats.read_rows(testutil.require_shared("llamafactory", "data", name))
      self.assertEqual((len(rows), skipped), (fmt_key, 0))


class RenderAndPackTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from swiftjax import tokenizer  # pylint: disable=g-import-not-at-top
    cls.tok = tokenizer.load_tokenizer(testutil.require_default_model())

  def test_weights_token_by_token(self):
    messages = [{"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "It is 4."},
                {"role": "user", "content": "And 3+3?", "loss": True},
                {"role": "assistant", "content": "It is 6.", "loss": False}]
    ex = render.render(self.tok, messages)
    trained = self.tok.decode(ex.input_ids[ex.weights > 0])
    skipped = self.tok.decode(ex.input_ids[ex.weights == 0])
    # A forced non-assistant turn is trained whole, header included.
    self.assertEqual(trained, "It is 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n")
    self.assertIn("What is 2+2?", skipped)
    self.assertIn("It is 6.", skipped)
    self.assertIn("<|im_start|>assistant\n", skipped)  # the prompt header is never trained
    self.assertEqual(self.tok.decode(ex.input_ids), ex.text)

  def test_packed_loss_equals_unpacked(self):
    cfg = models.ModelConfig(vocab_size=len(self.tok), hidden_size=32, intermediate_size=64,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
    params = decoder.init(cfg, jax.random.key(0))
    examples = [render.render(self.tok, [{"role": "user", "content": q},
                                         {"role": "assistant", "content": a}])
                for q, a in (("hi", "hello there"), ("name three colors", "red, green, blue"),
                             ("2+2?", "4"), ("say yes", "yes"), ("count to five", "1 2 3 4 5"))]
    n = max(len(e.input_ids) for e in examples)
    packed = packing.pack(examples, 2 * n)
    self.assertLess(len(packed.tokens), len(examples))
    self.assertEqual(int(packed.segment_ids.max()) >= 2, True)
    plain = packing.pad(examples, n)

    def total(batch):
      logits, _ = decoder.apply(params, jnp.asarray(batch.tokens), cfg,
                                segment_ids=jnp.asarray(batch.segment_ids),
                                positions=jnp.asarray(batch.positions))
      return losses.next_token_loss(logits, jnp.asarray(batch.tokens),
                                    jnp.asarray(batch.weights),
                                    jnp.asarray(batch.segment_ids), reduction="sum")

    (l_packed, w_packed), (l_plain, w_plain) = total(packed), total(plain)
    self.assertEqual(float(w_packed), float(w_plain))
    self.assertGreater(float(w_plain), 10)
    np.testing.assert_allclose(float(l_packed), float(l_plain), rtol=1e-5)

  def test_truncation(self):
    ex = render.render(self.tok, [{"role": "user", "content": "hello " * 20},
                                  {"role": "assistant", "content": "ok"}])
    n = len(ex.input_ids)
    kept, affected = packing.truncate([ex], n - 5, "delete")
    self.assertEqual((len(kept), affected), (0, 1))
    kept, _ = packing.truncate([ex], n - 5, "left")
    np.testing.assert_array_equal(kept[0].input_ids, ex.input_ids[5:])
    kept, _ = packing.truncate([ex], n - 5, "right")
    np.testing.assert_array_equal(kept[0].input_ids, ex.input_ids[:-5])


if __name__ == "__main__":
  absltest.main()
