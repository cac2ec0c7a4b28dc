"""Export: merged Hugging Face directories and GGUF files that transformers and our loaders read
back as the same model."""

import json
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import gguf
import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from swiftjax import errors
from swiftjax import export
from swiftjax import generate as gen
from swiftjax import models
from swiftjax import tokenizer as tok_lib
from swiftjax.export import gguf_writer
from swiftjax.export import hf
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from swiftjax.models import decoder
from swiftjax.models import gguf_loader
from swiftjax.models import safetensors_loader
from tests import testutil

_PROMPTS = ("What is the capital of France?", "Write a haiku about the sea.")
_NEW_TOKENS = 16
# GGUF file vs the float32 params it was written from: (largest logit difference relative to
# the largest logit, mean KL divergence of the next-token distributions). SmolLM2-135M measured
# F16 1.1e-3 / 3.5e-6 and Q8_0 3.5e-2 / 2.8e-3.
_GGUF_TOLS = {"f16": (4e-3, 1e-4), "q8_0": (7e-2, 1e-2)}


def _torch_logits(model, ids) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids))).logits.float().numpy()


def _torch_greedy(model, ids: list[int], n: int = _NEW_TOKENS) -> list[int]:
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                         pad_token_id=0)
  return out[0, len(ids):].tolist()


def _mean_kl(logits_p, logits_q) -> float:
  """Mean over positions of KL(p || q) between next-token distributions."""
  lp, lq = jax.nn.log_softmax(logits_p, -1), jax.nn.log_softmax(logits_q, -1)
  return float(jnp.mean(jnp.sum(jnp.exp(lp) * (lp - lq), -1)))


def _rel_diff(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / np.abs(a).max())


class SmolLM2ExportTest(absltest.TestCase):
  """The embedded SmolLM2-135M-Instruct, loaded once (float32)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.source = testutil.require_default_model()
    cls.cfg, cls.params = models.from_pretrained(cls.source, jnp.float32)
    cls.tokenizer = tok_lib.load_tokenizer(cls.source)
    cls.tmp = pathlib.Path(tempfile.mkdtemp())
    cls.prompts = [tok_lib.encode(cls.tokenizer, tok_lib.render_chat(cls.tokenizer, p))
                   for p in _PROMPTS]

  def test_hf_directory_with_merged_lora_generates_the_same_tokens(self):
    lora_cfg = lora.LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
    _, adapters = lora.init(self.params, jax.random.key(0), lora_cfg)
    # Trained-looking adapters: B away from zero, so merging (or not) shows in the output.
    adapters = jax.tree.map(lambda x: x, adapters)
    for i, module in enumerate(lora.adapter_paths(adapters)):
      entry = adapters
      for key in module.split("/"):
        entry = entry[key]
      entry["lora_b"] = 0.02 * jax.random.normal(jax.random.key(i + 1), entry["lora_b"].shape)
    adapter_dir = self.tmp / "adapter"
    peft_io.save(adapter_dir, adapters, lora_cfg, self.cfg)

    merged = export.merge_adapters(self.params, self.cfg, [adapter_dir])
    out = self.tmp / "hf"
    hf.save(out, self.cfg, merged, self.tokenizer)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    self.assertEqual(tok.chat_template, self.tokenizer.chat_template)

    unmerged = lora.apply(self.params, adapters, lora_cfg)
    eos = (self.cfg.eos_token_ids[0],)
    ours = gen.generate(unmerged, self.cfg, self.prompts,
                        gen.SamplingConfig(max_new_tokens=_NEW_TOKENS), eos_ids=eos)
    for text, ids, row in zip(_PROMPTS, self.prompts, ours):
      rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
      self.assertEqual(tok(rendered, add_special_tokens=False)["input_ids"], ids)
      theirs = _torch_greedy(model, ids)
      self.assertNotEmpty(row)
      self.assertEqual(row, theirs[:len(row)])
      if len(row) < _NEW_TOKENS:  # we stopped at EOS; so must they
        self.assertEqual(theirs[len(row)], eos[0])

    ids = jnp.asarray([self.prompts[0]])
    want, _ = decoder.apply(unmerged, ids, self.cfg)
    base, _ = decoder.apply(self.params, ids, self.cfg)
    got = _torch_logits(model, ids)
    self.assertGreater(np.abs(np.asarray(base) - np.asarray(want)).max(), 0.05)  # LoRA matters
    np.testing.assert_allclose(got, np.asarray(want), atol=2e-3)

  def test_gguf_files_read_back_with_the_same_logits(self):
    ids = jnp.asarray([self.prompts[0]])
    want = np.asarray(decoder.apply(self.params, ids, self.cfg)[0])
    for qtype, (rel_tol, kl_tol) in _GGUF_TOLS.items():
      with self.subTest(qtype):
        path = self.tmp / f"model-{qtype}.gguf"
        gguf_writer.write(path, self.cfg, self.params, qtype=qtype, source_gguf=self.source)
        cfg, params = gguf_loader.load(path)
        self.assertEqual(cfg, self.cfg)
        ours = np.asarray(decoder.apply(params, ids, cfg)[0])
        self.assertLess(_rel_diff(want, ours), rel_tol)
        self.assertLess(_mean_kl(want, ours), kl_tol)
        self.assertEqual(int(np.argmax(ours[0, -1])), int(np.argmax(want[0, -1])))
    reader = gguf.GGUFReader(str(self.tmp / "model-q8_0.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    self.assertEqual(types["blk.0.attn_q.weight"], "Q8_0")
    self.assertEqual(types["blk.0.attn_norm.weight"], "F32")
    self.assertEqual(reader.fields["tokenizer.ggml.pre"].contents(), "smollm")


class TinyFamilyExportTest(parameterized.TestCase):
  """Tiny random transformers models of every family, exported through `export.export`."""

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir())

  def _source(self, model_type="llama", **overrides):
    src = self.tmp / f"src_{model_type}"
    torch_model = testutil.save_tiny_model(src, model_type, initializer_range=0.3, **overrides)
    testutil.save_tiny_tokenizer(src)
    return src, torch_model

  @parameterized.named_parameters(
      ("llama", "llama", {}),
      ("llama_bias_rope3", "llama", dict(attention_bias=True, rope_scaling=dict(
          rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=64))),
      ("mistral", "mistral", {}),
      ("qwen2", "qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1)),
      ("qwen3", "qwen3", {}),
      ("gemma2", "gemma2", {}))
  def test_hf_export_matches_the_source_model(self, model_type, overrides):
    src, torch_model = self._source(model_type, **overrides)
    out = self.tmp / "out"
    result = export.export(out, src)
    self.assertIn("model.safetensors", result.files)
    self.assertEqual(safetensors_loader.read_config(out), safetensors_loader.read_config(src))
    exported = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager").eval()
    self.assertEqual(type(exported), type(torch_model))
    ids = np.random.default_rng(0).integers(3, 128, (2, 12))
    want = _torch_logits(torch_model, ids)
    np.testing.assert_allclose(_torch_logits(exported, ids), want, atol=1e-5)
    self.assertEqual(_torch_greedy(exported, ids[0].tolist(), 8),
                     _torch_greedy(torch_model, ids[0].tolist(), 8))
    cfg, params = models.from_pretrained(out)
    np.testing.assert_allclose(np.asarray(decoder.apply(params, jnp.asarray(ids), cfg)[0]),
                               want, atol=2e-4)

  def test_sharded_bfloat16(self):
    src, torch_model = self._source()
    out = self.tmp / "out"
    result = export.export(out, src, dtype="bfloat16", max_shard_size="60KB")
    index = json.loads((out / hf.INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    self.assertGreater(len(shards), 2)
    self.assertEqual(sorted(f for f in result.files if f.endswith(".safetensors")), shards)
    self.assertEqual(set(index["weight_map"]), set(torch_model.state_dict()))
    exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    self.assertEqual(exported.dtype, torch.bfloat16)
    ids = np.arange(3, 15)[None]
    want = _torch_logits(torch_model, ids)
    got = _torch_logits(exported.float(), ids)
    self.assertLess(_rel_diff(want, got), 3e-2)
    self.assertGreater(np.abs(want - got).max(), 0)  # really rounded to bfloat16

  @parameterized.named_parameters(("f16", "f16"), ("q8_0", "q8_0"))
  def test_gguf_from_a_hugging_face_source(self, qtype):
    # (transformers reads GGUF files here rather than on SmolLM2, where each load takes ~20 s.)
    src, torch_model = self._source()
    out = self.tmp / "out"
    result = export.export(out, src, to_gguf=qtype)
    self.assertEqual(result.gguf_file, out / f"model-{qtype}.gguf")
    ids = np.arange(3, 15)[None]
    want = _torch_logits(torch_model, ids)
    cfg, params = gguf_loader.load(result.gguf_file)
    ours = np.asarray(decoder.apply(params, jnp.asarray(ids), cfg)[0])
    self.assertLess(_rel_diff(want, ours), _GGUF_TOLS[qtype][0])
    self.assertGreater(np.abs(want - ours).max(), 0)  # really rounded
    model = transformers.AutoModelForCausalLM.from_pretrained(
        out, gguf_file=result.gguf_file.name, dtype=torch.float32).eval()
    np.testing.assert_allclose(_torch_logits(model, ids), ours, atol=1e-4)
    # The vocabulary written from tokenizer.json tokenizes like the original. (The GGUF is read
    # from a folder of its own: beside tokenizer_config.json, transformers 5 drops its special
    # tokens.)
    alone = self.tmp / "alone"
    alone.mkdir()
    (alone / result.gguf_file.name).symlink_to(result.gguf_file)
    src_tok = transformers.AutoTokenizer.from_pretrained(src)
    gguf_tok = transformers.AutoTokenizer.from_pretrained(alone, gguf_file=result.gguf_file.name)
    text = "the cat sat on the mat . what is the capital of france ?"
    self.assertEqual(gguf_tok(text, add_special_tokens=False)["input_ids"],
                     src_tok(text, add_special_tokens=False)["input_ids"])
    self.assertEqual(gguf_tok.eos_token, src_tok.eos_token)

  def test_gguf_names_a_llama3_pre_tokenizer(self):
    import tokenizers  # pylint: disable=g-import-not-at-top
    src, _ = self._source()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    split = list(gguf_writer._PRE_TOKENIZER_SPLITS)[0]  # pylint: disable=protected-access
    tok.backend_tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    cfg, params = models.from_pretrained(src)
    alone = self.tmp / "alone"
    alone.mkdir()
    gguf_writer.write(alone / "m.gguf", cfg, params, tok, qtype="f32")
    self.assertEqual(gguf.GGUFReader(str(alone / "m.gguf")).fields[
        "tokenizer.ggml.pre"].contents(), "llama-bpe")
    gguf_tok = transformers.AutoTokenizer.from_pretrained(alone, gguf_file="m.gguf")
    text = "IT'S 2024: 1234567 cats\n\n  sat"
    pieces = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    self.assertIn("456", [p for p, _ in pieces])  # the Llama 3 split (digits by threes)
    self.assertEqual(gguf_tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text), pieces)

  def test_gguf_refuses_a_family_llama_cpp_llama_cannot_hold(self):
    src, _ = self._source("gemma2")
    with self.assertRaisesRegex(errors.ConfigError, "soft-capping"):
      export.export(self.tmp / "out", src, to_gguf="f16")
    self.assertFalse((self.tmp / "out").exists())

  def test_existing_output_dir_needs_overwrite(self):
    src, _ = self._source()
    out = self.tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with self.assertRaisesRegex(errors.ConfigError, "not empty.*--overwrite"):
      export.export(out, src)
    self.assertEqual(sorted(p.name for p in out.iterdir()), ["keep.txt"])
    export.export(out, src, overwrite=True)
    self.assertFalse((out / "keep.txt").exists())
    self.assertTrue((out / "model.safetensors").is_file())
    self.assertEqual(sorted(p.name for p in self.tmp.iterdir()), ["out", "src_llama"])

  def test_a_failed_write_leaves_no_output(self):
    src, _ = self._source()
    out = self.tmp / "out"

    def broken_write(path, *args, **kwargs):
      del args, kwargs
      pathlib.Path(path).write_bytes(b"GGUF half")
      raise OSError("disk full")

    original = gguf_writer.write
    gguf_writer.write = broken_write
    try:
      with self.assertRaisesRegex(OSError, "disk full"):
        export.export(out, src, to_gguf="f16")
      self.assertFalse(out.exists())
      out.mkdir()
      (out / "old.txt").write_text("old")
      with self.assertRaisesRegex(OSError, "disk full"):
        export.export(out, src, to_gguf="f16", overwrite=True)
    finally:
      gguf_writer.write = original
    self.assertEqual(sorted(p.name for p in out.iterdir()), ["old.txt"])
    self.assertEqual(sorted(p.name for p in self.tmp.iterdir()), ["out", "src_llama"])

  def test_adapters_for_another_model_name_the_tensor(self):
    src, _ = self._source()
    other = self.tmp / "other"
    testutil.save_tiny_model(other, "llama", hidden_size=32, head_dim=8)
    other_cfg, other_params = models.from_pretrained(other)
    lora_cfg = lora.LoraConfig(r=2, target_modules=("q_proj",))
    _, adapters = lora.init(other_params, jax.random.key(0), lora_cfg)
    peft_io.save(self.tmp / "adapter", adapters, lora_cfg, other_cfg)
    with self.assertRaisesRegex(
        errors.CheckpointError,
        r"tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has "
        r"shape \(2, 32\).*64 -> 64"):
      export.export(self.tmp / "out", src, [self.tmp / "adapter"])
    self.assertFalse((self.tmp / "out").exists())

  def test_launcher(self):
    src, _ = self._source()
    out = self.tmp / "out"
    r = testutil.run_module("launch.export", f"--model={src}", f"--output_dir={out}",
                            "--to_gguf=q8_0", timeout=240)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    self.assertEqual(summary["files"]["model-q8_0.gguf"], (out / "model-q8_0.gguf").stat().st_size)
    self.assertIn("tokenizer.json", summary["files"])
    r = testutil.run_module("launch.export", f"--model={src}", f"--output_dir={out}")
    testutil.assert_one_line_error(self, r, r"error: output_dir .* is not empty")


if __name__ == "__main__":
  absltest.main()
