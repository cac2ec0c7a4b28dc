"""Quantized exports in the GPTQ checkpoint layout: the written tensors dequantize, by the GPTQ
v1 formula written out independently here, to exactly our quantized kernels; `read_gptq` reads
them back; the launcher writes them and refuses bad options in one line."""

import json
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from swiftjax import int4
from swiftjax import int8
from swiftjax import linear
from swiftjax import models
from swiftjax.export import hf
from swiftjax.export import quantized
from swiftjax.models import decoder
from tests import testutil

_GROUP = 32  # tiny llama: hidden 64, intermediate 96, so 2-3 groups per kernel


def _gptq_v1_dequant(qweight, qzeros, scales, g_idx, bits):
  """W [in, out] by the GPTQ v1 rule, unpacking one value at a time (independent of the code
  under test): code of row r = (qweight[r // p] >> bits * (r % p)) & mask,
  zero of column o = ((qzeros[g, o // p] >> bits * (o % p)) & mask) + 1."""
  p, mask = 32 // bits, (1 << bits) - 1
  qw = qweight.astype(np.int64) & 0xFFFFFFFF
  qz = qzeros.astype(np.int64) & 0xFFFFFFFF
  n_in, n_out = qw.shape[0] * p, qw.shape[1]
  codes = np.zeros((n_in, n_out), np.int64)
  for r in range(n_in):
    codes[r] = (qw[r // p] >> (bits * (r % p))) & mask
  zeros = np.zeros((qz.shape[0], n_out), np.int64)
  for o in range(n_out):
    zeros[:, o] = ((qz[:, o // p] >> (bits * (o % p))) & mask) + 1
  s = scales.astype(np.float32)[g_idx]
  return (codes - zeros[g_idx]).astype(np.float32) * s


def _tensors(directory):
  with safe_open(str(pathlib.Path(directory) / "model.safetensors"), framework="numpy") as f:
    return {k: f.get_tensor(k) for k in f.keys()}


class ExportQuantTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.src = pathlib.Path(cls.tmp.name) / "src"
    testutil.save_tiny_llama(cls.src)
    cls.cfg, params = models.from_pretrained(cls.src, jnp.float32)
    # One group of layer 0's q_proj all non-negative: its min-max zero point is 0, which the v1
    # layout cannot hold; the export must re-grid it.
    k = params["layers"]["self_attn"]["q_proj"]["kernel"]
    params["layers"]["self_attn"]["q_proj"]["kernel"] = k.at[0, :_GROUP, 0].set(
        jnp.abs(k[0, :_GROUP, 0]))
    cls.params = params
    cls.tokens = (jnp.arange(24)[None] * 7 + 3) % cls.cfg.vocab_size

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _export(self, bits, name):
    qp, qc = quantized.quantize_for_export(self.cfg, self.params, None, method="rtn",
                                           bits=bits, group_size=_GROUP)
    out = pathlib.Path(self.tmp.name) / name
    hf.save(out, self.cfg, qp, None, quantization_config=qc)
    return qp, qc, out

  @parameterized.named_parameters(("int4", 4), ("int8", 8))
  def test_written_tensors_dequantize_to_our_kernels(self, bits):
    qp, qc, out = self._export(bits, f"deq{bits}")
    self.assertEqual(json.loads((out / "config.json").read_text())["quantization_config"], qc)
    self.assertEqual(qc["bits"], bits)
    self.assertEqual(qc["sym"], bits == 8)
    self.assertEqual(qc["checkpoint_format"], "gptq")
    tensors = _tensors(out)
    checked = 0
    for name, (path, layer, _) in decoder.hf_tensor_names(self.cfg).items():
      leaf = qp
      for key in path:
        leaf = leaf[key]
      if not isinstance(leaf, (int4.Int4Weight, int8.Int8Weight)):
        self.assertIn(name, tensors)  # float tensors written as usual
        continue
      self.assertIsInstance(leaf, int4.Int4Weight if bits == 4 else int8.Int8Weight)
      prefix = name[:-len("weight")]
      self.assertNotIn(name, tensors)
      qw, qz = tensors[prefix + "qweight"], tensors[prefix + "qzeros"]
      sc, gi = tensors[prefix + "scales"], tensors[prefix + "g_idx"]
      n_in, n_out = leaf.shape[-2:]
      groups = -(-n_in // _GROUP) if bits == 4 else 1
      self.assertEqual((qw.dtype, qw.shape), (np.int32, (n_in * bits // 32, n_out)))
      self.assertEqual((qz.dtype, qz.shape), (np.int32, (groups, n_out * bits // 32)))
      self.assertEqual((sc.dtype, sc.shape), (np.float16, (groups, n_out)))
      self.assertEqual((gi.dtype, gi.shape), (np.int32, (n_in,)))
      # Exact: the scales were rounded to float16 before writing, so the file and our params
      # hold the same numbers, and both sides compute (code - zero) * scale in float32.
      want = np.asarray(linear.densify(leaf, jnp.float32))[layer]
      np.testing.assert_array_equal(_gptq_v1_dequant(qw, qz, sc, gi, bits), want, err_msg=name)
      checked += 1
    self.assertEqual(checked, 7 * self.cfg.num_layers)
    if bits == 8:
      # Output-major codes (`int8.output_major`, what `infer.load` keeps on a CPU) write the
      # same file tensors.
      leaf = qp["layers"]["mlp"]["down_proj"]["kernel"]
      flipped = int8.output_major(qp)["layers"]["mlp"]["down_proj"]["kernel"]
      self.assertTrue(flipped.transposed)
      for layer in range(self.cfg.num_layers):
        want, *_ = quantized.gptq_tensors(leaf, layer)
        got, *_ = quantized.gptq_tensors(flipped, layer)
        for k in want:
          np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    if bits == 4:
      q = qp["layers"]["self_attn"]["q_proj"]["kernel"]
      self.assertGreaterEqual(int(jnp.min(q.zero)), 1)  # the re-gridded group
      # ...which still represents its (non-negative) float values to within half a step.
      w = self.params["layers"]["self_attn"]["q_proj"]["kernel"][0, :_GROUP, 0]
      err = jnp.abs(int4.dequantize(q)[0, :_GROUP, 0] - w)
      self.assertLessEqual(float(jnp.max(err)), float(q.scale[0, 0, 0]) * 0.5 * 1.01)

  @parameterized.named_parameters(("int4", 4), ("int8", 8))
  def test_read_gptq_round_trip(self, bits):
    qp, _, out = self._export(bits, f"rt{bits}")
    cfg, back = quantized.read_gptq(out)
    self.assertEqual(cfg.hidden_size, self.cfg.hidden_size)
    n = 0
    for path in decoder.hf_tensor_names(self.cfg).values():
      a, b = qp, back
      for key in path[0]:
        a, b = a[key], b[key]
      self.assertIs(type(a), type(b), path[0])
      if isinstance(a, int4.Int4Weight):
        np.testing.assert_array_equal(np.asarray(a.packed), np.asarray(b.packed))
        np.testing.assert_array_equal(np.asarray(a.zero), np.asarray(b.zero))
        np.testing.assert_array_equal(np.asarray(a.scale), np.asarray(b.scale))
        self.assertEqual(a.group_size, b.group_size)
        n += 1
      elif isinstance(a, int8.Int8Weight):
        np.testing.assert_array_equal(np.asarray(a.q), np.asarray(b.q))
        np.testing.assert_array_equal(np.asarray(a.scale), np.asarray(b.scale))
        n += 1
      else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    self.assertGreater(n, 0)
    want, _ = decoder.apply(qp, self.tokens, self.cfg)
    got, _ = decoder.apply(back, self.tokens, cfg)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # And the quantized model is close to, but not the same as, the float one.
    ref, _ = decoder.apply(self.params, self.tokens, self.cfg)
    diff = float(jnp.max(jnp.abs(ref - want)))
    self.assertGreater(diff, 0)
    self.assertLess(diff, 0.5 * float(jnp.max(jnp.abs(ref))))

  def test_from_pretrained_reads_a_gptq_directory(self):
    qp, _, out = self._export(4, "fp_gptq")
    cfg, back = models.from_pretrained(out)
    self.assertIsInstance(back["layers"]["mlp"]["down_proj"]["kernel"], int4.Int4Weight)
    want, _ = decoder.apply(qp, self.tokens, self.cfg)
    got, _ = decoder.apply(back, self.tokens, cfg)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # Unquantized weights follow the requested dtype; the packed kernels stay as they are.
    _, half = models.from_pretrained(out, "bfloat16")
    self.assertEqual(half["norm"]["scale"].dtype, jnp.bfloat16)
    self.assertIsInstance(half["layers"]["mlp"]["down_proj"]["kernel"], int4.Int4Weight)
    # Another quantization method is named, not misread as missing tensors.
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "awq"
    awq = pathlib.Path(self.tmp.name) / "awq"
    awq.mkdir()
    (awq / "config.json").write_text(json.dumps(config))
    with self.assertRaisesRegex(Exception, r"config\.json: quantization_config\.quant_method "
                                r"'awq' is not supported"):
      models.from_pretrained(awq)

  def test_gptq_with_real_calibration_texts(self):
    data = testutil.require_shared("llamafactory", "data", "alpaca_en_demo.json")
    texts = quantized.read_texts(data)
    self.assertGreater(len(texts), 100)
    tok = testutil.save_tiny_tokenizer(pathlib.Path(self.tmp.name) / "tok")
    qp, qc = quantized.quantize_for_export(
        self.cfg, self.params, tok, method="gptq", bits=4, group_size=_GROUP,
        calibration_texts=texts, calibration_samples=4, calibration_seq_len=32)
    out = pathlib.Path(self.tmp.name) / "gptq4"
    hf.save(out, self.cfg, qp, None, quantization_config=qc)
    _, back = quantized.read_gptq(out)
    want, _ = decoder.apply(qp, self.tokens, self.cfg)
    got, _ = decoder.apply(back, self.tokens, self.cfg)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  def test_launcher_rtn_int4(self):
    out = pathlib.Path(self.tmp.name) / "launch4"
    r = testutil.run_module("launch.export", f"--model={self.src}", f"--output_dir={out}",
                            "--quant_method=rtn", "--quant_bits=4", "--quant_group_size=32")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    result = json.loads(r.stdout.strip().splitlines()[-1])
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    self.assertEqual(qc, quantized.quantization_config(4, 32))
    names = set(_tensors(out))
    self.assertIn("model.layers.0.mlp.down_proj.qweight", names)
    self.assertNotIn("model.layers.0.mlp.down_proj.weight", names)
    self.assertIn("model.embed_tokens.weight", names)
    # Smaller than the float32 checkpoint it came from (the tiny model's embeddings and LM
    # head, which stay float, are a large share of it; the layer kernels shrink ~6x).
    float_size = (self.src / "model.safetensors").stat().st_size
    self.assertLess(result["files"]["model.safetensors"], 0.75 * float_size)
    _, back = quantized.read_gptq(out)
    self.assertIsInstance(back["layers"]["mlp"]["down_proj"]["kernel"], int4.Int4Weight)

  @parameterized.named_parameters(
      ("bits", ["--quant_method=rtn", "--quant_bits=3"], r"quant_bits must be 4 or 8"),
      ("calibration", ["--quant_method=gptq", "--calibration_dataset=/nonexistent/c.jsonl"],
       r"calibration dataset /nonexistent/c.jsonl does not exist"))
  def test_launcher_refuses_bad_options(self, args, pattern):
    out = pathlib.Path(self.tmp.name) / "bad"
    r = testutil.run_module("launch.export", f"--model={self.src}", f"--output_dir={out}", *args)
    testutil.assert_one_line_error(self, r, pattern, returncode=2)
    self.assertFalse(out.exists())


if __name__ == "__main__":
  absltest.main()
