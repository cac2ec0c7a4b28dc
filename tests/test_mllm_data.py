"""Multimodal rows: reading ms-swift's `<image>` + `images` format, the errors that name the row,
rendering with the family's image text (labels token by token), and static batches that keep
each sample's images with its tokens."""

import base64
import json
import pathlib
import tempfile

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from swiftjax.data import formats
from swiftjax.data import multimodal
from swiftjax.data import render
from swiftjax.mllm import llava
from swiftjax.mllm import vit
from swiftjax.models import config as model_config
from tests import testutil

IMAGE = "<image>"
COLORS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220),
          "gray": (128, 128, 128)}


def tiny_processor(directory):
  """(llava config, LlavaProcessor) of a tiny LLaVA: 16x16 images, 4x4 patches: 16 tokens."""
  tok = testutil.save_tiny_tokenizer(directory, vocab_size=128)
  tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
  text = model_config.ModelConfig(vocab_size=136, hidden_size=32, intermediate_size=48,
                                  num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                  tie_word_embeddings=True)
  cfg = llava.Config(text=text, vision=vit.VitConfig(24, 48, 2, 4),
                     image_token_id=tok.convert_tokens_to_ids(IMAGE), image_size=16,
                     patch_size=4, vision_feature_layer=-1)
  return cfg, llava.make_processor(cfg, tok)


def write_images(directory) -> dict[str, pathlib.Path]:
  """One solid-colour PNG per colour (sizes differ, so resizing is exercised)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = {}
  for i, (name, rgb) in enumerate(COLORS.items()):
    path = pathlib.Path(directory) / "img" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    Image.new("RGB", (20 + 4 * i, 16 + 2 * i), rgb).save(path)
    out[name] = path
  return out


def write_jsonl(path, rows):
  path = pathlib.Path(path)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def qa(question, answer, images):
  return {"messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": answer}], "images": images}


class ReadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = pathlib.Path(self.create_tempdir().full_path)
    self.images = write_images(self.dir)

  def test_image_forms_and_text_only_rows(self):
    png = self.images["red"].read_bytes()
    b64 = base64.b64encode(png).decode()
    rows = [qa(f"{IMAGE}what colour?", "red", ["img/red.png"]),           # relative
            qa(f"{IMAGE}and {IMAGE}?", "green, blue",
               [str(self.images["green"]), {"path": "img/blue.png"}]),    # absolute, dict
            qa("no image here", "ok", []),                                # text only
            {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]},    # no `images`
            qa(f"{IMAGE}?", "red", [{"bytes": b64}]),                     # base64 bytes
            qa(f"{IMAGE}?", "red", [f"data:image/png;base64,{b64}"])]     # data URI
    got, skipped = multimodal.read_rows(write_jsonl(self.dir / "d.jsonl", rows))
    self.assertEqual((len(got), skipped), (6, 0))
    self.assertEqual(got[0]["images"][0].path, self.images["red"])
    self.assertEqual([s.path for s in got[1]["images"]],
                     [self.images["green"], self.images["blue"]])
    self.assertEqual((got[2]["images"], got[3]["images"]), ([], []))
    self.assertEqual(got[4]["images"][0].data, png)
    self.assertEqual(got[5]["images"][0].data, png)
    self.assertEqual(got[4]["where"], f"{self.dir / 'd.jsonl'}:5")
    pixels = [np.asarray(multimodal.load_image(s)) for s in
              (got[0]["images"][0], got[4]["images"][0], got[5]["images"][0])]
    np.testing.assert_array_equal(pixels[0], pixels[1])
    np.testing.assert_array_equal(pixels[0], pixels[2])

  def test_errors_name_the_file_and_row(self):
    path = self.dir / "d.jsonl"
    good = qa(f"{IMAGE}?", "red", ["img/red.png"])
    cases = [
        (qa(f"{IMAGE}?", "x", ["img/nope.png"]), r"d\.jsonl:2: image 0: file .*nope\.png does "
         "not exist"),
        (qa(f"{IMAGE}{IMAGE}?", "x", ["img/red.png"]), r"d\.jsonl:2: 2 <image> placeholder\(s\) "
         r"in the messages but 1 image\(s\)"),
        (qa("?", "x", ["img/red.png"]), r"d\.jsonl:2: 0 <image> placeholder"),
        (qa(f"{IMAGE}?", "x", [{"bytes": "%%%"}]), r"d\.jsonl:2: image 0: .*base64"),
    ]
    for bad, pattern in cases:
      write_jsonl(path, [good, bad, good])
      with self.assertRaisesRegex(multimodal.ImageError, pattern):
        multimodal.read_rows(path)
      rows, skipped = multimodal.read_rows(path, skip_bad_rows=True)
      self.assertEqual((len(rows), skipped), (2, 1))
    # A JSON list names the index; a row that is not a conversation is a plain RowError.
    (self.dir / "d.json").write_text(json.dumps([good, {"images": []}]))
    with self.assertRaisesRegex(formats.RowError, r"d\.json\[1\]: unknown row format") as cm:
      multimodal.read_rows(self.dir / "d.json")
    self.assertNotIsInstance(cm.exception, multimodal.ImageError)

  def test_unreadable_image_fails_at_build_naming_the_row(self):
    (self.dir / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    truncated = self.images["red"].read_bytes()[:40]
    (self.dir / "img" / "truncated.png").write_bytes(truncated)
    cfg, processor = tiny_processor(self.dir / "tok")
    builder = multimodal.Builder(processor.tokenizer, llava, processor, cfg.image_token_id)
    for name in ("corrupt.png", "truncated.png"):
      path = write_jsonl(self.dir / "d.jsonl", [qa(f"{IMAGE}?", "x", ["img/red.png"]),
                                                qa(f"{IMAGE}?", "x", [f"img/{name}"])])
      rows, _ = multimodal.read_rows(path)  # the file exists: reading passes
      with self.assertRaisesRegex(multimodal.ImageError,
                                  rf"d\.jsonl:2: image 0 \(.*{name}\) is not a readable image"):
        multimodal.build_examples(rows, builder, max_length=512)
      examples, stats = multimodal.build_examples(rows, builder, max_length=512,
                                                  skip_bad_rows=True)
      self.assertEqual((len(examples), stats["skipped_images"]), (1, 1))

  def test_real_demo_file(self):
    path = testutil.require_shared("llamafactory", "data", "mllm_demo.json")
    rows, skipped = multimodal.read_rows(path)
    self.assertEqual((len(rows), skipped), (6, 0))
    self.assertEqual([len(r["images"]) for r in rows], [2, 1, 1, 2, 1, 1])
    self.assertEqual(rows[0]["images"][0].path, path.parent / "mllm_demo_data" / "1.jpg")
    self.assertEqual(multimodal.load_image(rows[1]["images"][0]).mode, "RGB")


class BuildTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.dir = pathlib.Path(cls.tmp.name)
    cls.images = write_images(cls.dir)
    cls.cfg, cls.processor = tiny_processor(cls.dir / "tok")
    cls.tok = cls.processor.tokenizer
    cls.builder = multimodal.Builder(cls.tok, llava, cls.processor, cls.cfg.image_token_id)


  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _rows(self, rows):
    return multimodal.read_rows(write_jsonl(self.dir / "rows.jsonl", rows))[0]

  def test_tokens_equal_the_processor_and_labels_token_by_token(self):
    messages = [{"role": "user", "content": f"{IMAGE}what is this ?"},
                {"role": "assistant", "content": "the cat"},
                {"role": "user", "content": f"and {IMAGE}this ?"},
                {"role": "assistant", "content": "a dog"}]
    row = self._rows([{"messages": messages, "images": ["img/red.png", "img/blue.png"]}])[0]
    ex = self.builder.build(row)
    # The processor's own expansion of the template text with placeholders gives the same ids.
    text = self.tok.apply_chat_template(messages, tokenize=False)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = [Image.open(self.images[c]).convert("RGB") for c in ("red", "blue")]
    want = self.processor(text=[text], images=images, return_tensors="np")
    np.testing.assert_array_equal(ex.input_ids, want["input_ids"][0])
    np.testing.assert_allclose(ex.image_inputs["pixel_values"], want["pixel_values"])
    is_image = ex.input_ids == self.cfg.image_token_id
    self.assertEqual(int(is_image.sum()), 2 * self.cfg.num_image_tokens)
    self.assertEqual(ex.num_images, 2)
    # Weight 1 exactly on the assistant turns (content + the template's end of turn), token by
    # token; nothing on user turns or image tokens.
    offsets = self.tok(ex.text, add_special_tokens=False,
                       return_offsets_mapping=True)["offset_mapping"]
    self.assertLen(offsets, len(ex.input_ids))
    trained = "".join(ex.text[a:b] for (a, b), w in zip(offsets, ex.weights) if w)
    self.assertEqual(trained, " the cat\n a dog\n")
    self.assertTrue(set(np.unique(ex.weights)) <= {0.0, 1.0})
    self.assertEqual(float(ex.weights[is_image].sum()), 0.0)
    # ... which is what rendering the expanded text gives (the image text leaves it intact).
    plain = render.render(self.tok, multimodal.expand(
        messages, [self.tok.decode([self.cfg.image_token_id]) * 16] * 2))
    np.testing.assert_array_equal(plain.weights, ex.weights)

  def test_text_only_rows_and_truncation(self):
    rows = self._rows([qa("just text", "fine", []),
                       qa(f"a long question {IMAGE} about it", "red", ["img/red.png"])])
    examples, stats = multimodal.build_examples(rows, self.builder, max_length=512)
    self.assertEqual((stats["images"], stats["text_only"]), (1, 1))
    self.assertIsNone(examples[0].image_inputs)
    n = len(examples[1].input_ids)
    # `left` keeps the end: cutting the start only removes text before the image: kept.
    first_image = int(np.argmax(examples[1].input_ids == self.cfg.image_token_id))
    kept, affected = multimodal.truncate(examples[1:], n - first_image, "left",
                                         self.cfg.image_token_id)
    self.assertEqual((len(kept), affected), (1, 1))
    self.assertEqual(int((kept[0].input_ids == self.cfg.image_token_id).sum()), 16)
    # One token less would cut an image token: the sample is dropped, never split.
    kept, affected = multimodal.truncate(examples[1:], n - first_image - 1, "left",
                                         self.cfg.image_token_id)
    self.assertEqual((len(kept), affected), (0, 1))
    kept, _ = multimodal.truncate(examples[:1], 5, "right", self.cfg.image_token_id)
    self.assertEqual(len(kept[0].input_ids), 5)

  def test_batches_keep_images_with_their_samples(self):
    spec = [("red",), (), ("green", "blue"), ("gray",), (), ("blue", "red", "gray")]
    rows = self._rows([qa("".join(f"{IMAGE}{c} " for c in colors) + "?", "x" * (1 + i),
                          [f"img/{c}.png" for c in colors]) for i, colors in enumerate(spec)])
    examples, _ = multimodal.build_examples(rows, self.builder, max_length=512)
    pixels = {c: multimodal.Builder(self.tok, llava, self.processor, self.cfg.image_token_id)
              .images([multimodal.ImageSource(self.images[c])])[0]["pixel_values"][0]
              for c in COLORS}
    for packing, batch_size in ((True, 1), (False, 2), (False, 4)):
      laid = multimodal.layout(examples, 192, batch_size, packing=packing)
      if packing:
        self.assertGreater(laid.max_segments, 1)
      # Slots: the images of the `batch_size` rows that have the most.
      per_row = sorted(sum(examples[e].num_images for e in m) for m in laid.members)
      self.assertEqual(laid.slots, {"pixel_values": sum(per_row[-batch_size:])})
      order = np.random.default_rng(0).permutation(len(laid.members))
      for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        batch = laid.batch(idx)
        got = batch["image/pixel_values"]
        self.assertEqual(got.shape, (laid.slots["pixel_values"], 3, 16, 16))  # static
        # Walk the image tokens row-major: the k-th image run is the k-th slot's image.
        colors = [c for r in idx for e in laid.members[r] for c in spec[e]]
        n_tokens = int((batch["tokens"] == self.cfg.image_token_id).sum())
        self.assertEqual(n_tokens, 16 * len(colors))
        for k, c in enumerate(colors):
          np.testing.assert_array_equal(got[k], pixels[c])
        np.testing.assert_array_equal(got[len(colors):], 0)  # padding slots
        # Every example is whole in its row, in order, with per-sample positions.
        for b, r in enumerate(idx):
          at = 0
          for s, e in enumerate(laid.members[r], 1):
            k = len(examples[e].input_ids)
            np.testing.assert_array_equal(batch["tokens"][b, at:at + k], examples[e].input_ids)
            np.testing.assert_array_equal(batch["segment_ids"][b, at:at + k], s)
            np.testing.assert_array_equal(batch["positions"][b, at:at + k], np.arange(k))
            at += k
          self.assertTrue((batch["segment_ids"][b, at:] == 0).all())
    # The merge puts the k-th slot's features at the k-th run of image tokens.
    from swiftjax.mllm import inputs  # pylint: disable=g-import-not-at-top
    laid = multimodal.layout(examples, 192, 2, packing=False)
    batch = laid.batch([2, 5])
    feats = jnp.arange(laid.slots["pixel_values"] * 16, dtype=jnp.float32)[:, None]
    merged = inputs.merge_image_features(jnp.zeros(batch["tokens"].shape + (1,)),
                                         jnp.asarray(batch["tokens"]), self.cfg.image_token_id,
                                         feats)
    at_images = np.asarray(merged)[batch["tokens"] == self.cfg.image_token_id, 0]
    np.testing.assert_array_equal(at_images, np.arange(16 * 5))


if __name__ == "__main__":
  absltest.main()
