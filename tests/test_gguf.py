"""GGUF loading: llama.cpp's tensor names, q/k permutation and quantized types."""

import pathlib
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import gguf
import jax
import jax.numpy as jnp
import numpy as np
import torch

from swiftjax import errors
from swiftjax import models
from swiftjax.models import gguf_loader
from swiftjax.models import decoder
from tests import testutil

_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
          "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's converter permutation of q/k rows (what the loader must undo)."""
  return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def write_gguf(path: pathlib.Path, model, qtype=gguf.GGMLQuantizationType.F32, *,
               quantize=None, raw_out=None) -> None:
  """Writes a transformers Llama as llama.cpp would, 2-D weights in `qtype`.

  `quantize(array) -> bytes array` overrides gguf's quantizer; `raw_out` collects what was
  written for each 2-D tensor.
  """
  c = model.config
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(c.num_hidden_layers)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  w.add_eos_token_id(2)
  for name, t in model.state_dict().items():
    a = t.float().numpy()
    if name == "model.embed_tokens.weight":
      out = "token_embd.weight"
    elif name == "model.norm.weight":
      out = "output_norm.weight"
    elif name == "lm_head.weight":
      out = "output.weight"
    else:
      _, _, i, rest = name.split(".", 3)
      module = rest.rsplit(".", 1)[0]
      out = f"blk.{i}.{_NAMES[module]}.weight"
      if module == "self_attn.q_proj":
        a = _permute(a, c.num_attention_heads)
      elif module == "self_attn.k_proj":
        a = _permute(a, c.num_key_value_heads)
    if a.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
      q = quantize(a) if quantize else gguf.quants.quantize(a, qtype)
      if raw_out is not None:
        raw_out[out] = q
      w.add_tensor(out, q, raw_dtype=qtype)
    else:
      w.add_tensor(out, a)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


class GGUFTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir().full_path)
    self.ref = testutil.save_tiny_llama(self.tmp / "hf", hidden_size=64, intermediate_size=64)
    self.tokens = np.random.default_rng(0).integers(0, 128, (2, 20))
    with torch.no_grad():
      self.want = self.ref(torch.as_tensor(self.tokens)).logits.numpy()

  def test_f32_matches_transformers(self):
    write_gguf(self.tmp / "m.gguf", self.ref)
    cfg, params = models.from_pretrained(self.tmp / "m.gguf")
    self.assertEqual((cfg.num_heads, cfg.num_kv_heads, cfg.num_layers), (4, 2, 2))
    self.assertFalse(cfg.tie_word_embeddings)
    got, _ = decoder.apply(params, jnp.asarray(self.tokens), cfg)
    np.testing.assert_allclose(np.asarray(got), self.want, atol=1e-4, rtol=0)

  @parameterized.named_parameters(("q8_0", gguf.GGMLQuantizationType.Q8_0, 0.02),
                                  ("f16", gguf.GGMLQuantizationType.F16, 2e-3),
                                  ("bf16", gguf.GGMLQuantizationType.BF16, 0.02),
                                  ("q4_0", gguf.GGMLQuantizationType.Q4_0, 0.3),
                                  ("q4_1", gguf.GGMLQuantizationType.Q4_1, 0.3),
                                  ("q5_0", gguf.GGMLQuantizationType.Q5_0, 0.2))
  def test_quantized_is_close(self, qtype, tol):
    write_gguf(self.tmp / "m.gguf", self.ref, qtype)
    cfg, params = models.from_pretrained(self.tmp / "m.gguf")
    got, _ = decoder.apply(params, jnp.asarray(self.tokens), cfg)
    err = np.abs(np.asarray(got) - self.want).max() / np.abs(self.want).max()
    self.assertLess(err, tol)
    self.assertGreater(err, 0.0)  # the weights really went through the quantizer

  @parameterized.named_parameters(("q4_k", gguf.GGMLQuantizationType.Q4_K),
                                  ("q6_k", gguf.GGMLQuantizationType.Q6_K))
  def test_k_quants_dequantize_in_place(self, qtype):
    # gguf-py can read K-quants but not write them: fill blocks with random bytes (with sane
    # float16 super-block scales) and check every weight lands where llama.cpp put it.
    cfg = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4,
               num_key_value_heads=2, num_hidden_layers=1, vocab_size=32)
    ref = testutil.save_tiny_llama(self.tmp / "k", **cfg)
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    rng = np.random.default_rng(0)
    raw = {}

    def quantize(a):
      rows, cols = a.shape
      data = rng.integers(0, 256, (rows, cols // 256, block_bytes), dtype=np.uint8)
      scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
      if qtype == gguf.GGMLQuantizationType.Q4_K:
        data[..., 0:2] = scale  # d
        data[..., 2:4] = scale  # dmin
      else:
        data[..., -2:] = scale  # d is the last field of a Q6_K block
      return data.reshape(rows, -1)

    path = self.tmp / "k.gguf"
    write_gguf(path, ref, qtype, quantize=quantize, raw_out=raw)
    cfg_, params = models.from_pretrained(path)
    got = np.asarray(params["layers"]["mlp"]["up_proj"]["kernel"][0])
    want = gguf.quants.dequantize(raw["blk.0.ffn_up.weight"], qtype).T
    np.testing.assert_array_equal(got, want)
    self.assertGreater(np.abs(want).max(), 0)
    got_q = np.asarray(params["layers"]["self_attn"]["q_proj"]["kernel"][0])
    want_q = gguf_loader.unpermute_rotary(
        gguf.quants.dequantize(raw["blk.0.attn_q.weight"], qtype), 4).T
    np.testing.assert_array_equal(got_q, want_q)
    self.assertEqual(cfg_.hidden_size, 256)

  @parameterized.named_parameters(("q4_1_f32", gguf.GGMLQuantizationType.Q4_1, "float32"),
                                  ("q8_0_bf16", gguf.GGMLQuantizationType.Q8_0, "bfloat16"))
  def test_chunked_dequantization_is_exact(self, qtype, dtype):
    # Large tensors are dequantized a few rows at a time (gguf_loader._DEQUANT_CHUNK); with a
    # chunk of 100 values (one or a few rows here) the result must be what whole tensors give.
    path = self.tmp / f"chunk_{qtype.name}.gguf"
    write_gguf(path, self.ref, qtype)
    _, whole = models.from_pretrained(path, dtype=dtype)
    with mock.patch.object(gguf_loader, "_DEQUANT_CHUNK", 100):
      _, chunked = models.from_pretrained(path, dtype=dtype)
    leaves = jax.tree_util.tree_leaves_with_path(whole)
    for (key, a), b in zip(leaves, jax.tree.leaves(chunked)):
      self.assertEqual(a.dtype, b.dtype)
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(key))

  def test_bfloat16_request(self):
    write_gguf(self.tmp / "m.gguf", self.ref)
    _, params = models.from_pretrained(self.tmp / "m.gguf", dtype="bfloat16")
    self.assertEqual(params["layers"]["mlp"]["up_proj"]["kernel"].dtype, jnp.bfloat16)

  def test_truncated_file_is_a_clear_error(self):
    write_gguf(self.tmp / "m.gguf", self.ref)
    data = (self.tmp / "m.gguf").read_bytes()
    (self.tmp / "cut.gguf").write_bytes(data[: len(data) // 2])
    with self.assertRaisesRegex(errors.CheckpointError, r"cut\.gguf.*(truncated|corrupted)"):
      models.from_pretrained(self.tmp / "cut.gguf")

  def test_not_a_gguf(self):
    (self.tmp / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with self.assertRaisesRegex(errors.CheckpointError, r"junk\.gguf is not a readable GGUF"):
      models.from_pretrained(self.tmp / "junk.gguf")

  def test_unsupported_architecture_lists_supported(self):
    w = gguf.GGUFWriter(str(self.tmp / "mamba.gguf"), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with self.assertRaisesRegex(errors.ConfigError, r"'mamba' is not supported \(supported: llama"):
      models.from_pretrained(self.tmp / "mamba.gguf")

  def test_unpermute_inverts_permute(self):
    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    np.testing.assert_array_equal(gguf_loader.unpermute_rotary(_permute(w, 8), 8), w)


if __name__ == "__main__":
  absltest.main()
