"""Weight-only int8/int4 by round-to-nearest and GPTQ: storage, error bounds, the GPTQ solve
against a column-by-column reference, calibration capture, and models that still run."""

import dataclasses
import json

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import generate as gen
from swiftjax import gptq
from swiftjax import int4
from swiftjax import int8
from swiftjax import linear
from swiftjax import models
from swiftjax import quantize
from swiftjax.models import decoder
from tests import testutil


def _correlated_inputs(n, d, seed=0):
  """Activations with correlated features of uneven scale (as LLM activations are)."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, d))
  x = z @ (rng.normal(size=(d, d)) / np.sqrt(d)) + 0.5 * z[:, :1]
  return (x * np.exp(0.5 * rng.normal(size=d))).astype(np.float32)


def _reference_gptq(w, h, bits, group_size, act_order, damp=0.01):
  """GPTQ one input row at a time with immediate updates (no lazy blocks), float64 numpy.

  Returns the integer codes `[in, out]`."""
  w = np.array(w, np.float64)
  h = np.array(h, np.float64)
  n_in = w.shape[0]
  qmin, qmax = (-127, 127) if bits == 8 else (0, 15)

  def minmax(rows):
    lo, hi = np.minimum(rows.min(0), 0), np.maximum(rows.max(0), 0)
    s = (hi - lo) / 15
    s[s == 0] = 1
    return s, np.clip(np.round(-lo / s), 0, 15)

  static = {}
  if bits == 8:
    s8 = np.abs(w).max(0) / 127
  elif act_order:
    for g0 in range(0, n_in, group_size):
      static[g0] = minmax(w[g0:g0 + group_size])
  perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n_in)
  h = h + damp * np.mean(np.diag(h)) * np.eye(n_in)
  h = h[np.ix_(perm, perm)]
  u = np.linalg.cholesky(np.linalg.inv(h)).T
  wp = w[perm].copy()
  codes = np.zeros_like(wp)
  for j in range(n_in):
    orig = perm[j]
    if bits == 8:
      s, z = s8, 0.0
    elif act_order:
      s, z = static[orig // group_size * group_size]
    elif j % group_size == 0:
      s, z = minmax(wp[j:j + group_size])
    q = np.clip(np.round(wp[j] / s) + z, qmin, qmax)
    codes[j] = q
    err = (wp[j] - (q - z) * s) / u[j, j]
    wp[j:] -= np.outer(u[j, j:], err)
  return codes[np.argsort(perm)]


def _codes(q):
  if isinstance(q, int8.Int8Weight):
    return np.asarray(q.q, np.float64)
  return np.asarray(int4.unpack(q.packed), np.float64)


TINY = models.ModelConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True)


class Int4StorageTest(absltest.TestCase):

  def test_pack_unpack_round_trip(self):
    q = jnp.asarray(np.random.default_rng(0).integers(0, 16, (3, 10, 7)), jnp.uint8)
    packed = int4.pack(q)
    self.assertEqual(packed.dtype, jnp.uint8)
    self.assertEqual(packed.shape, (3, 5, 7))
    np.testing.assert_array_equal(int4.unpack(packed), q)
    # Row r in the low nibble, row r + in/2 in the high one.
    np.testing.assert_array_equal(packed[0, 1, 2], q[0, 1, 2] | (q[0, 6, 2] << 4))
    with self.assertRaises(errors.ConfigError):
      int4.pack(q[:, :9])

  def test_rtn_error_bound_per_group(self):
    # 300 inputs: groups of 128, 128 and a short last group of 44.
    w = jax.random.normal(jax.random.key(0), (2, 300, 24)) * jnp.linspace(0.1, 3, 24)
    q = int4.quantize(w, group_size=128)
    self.assertEqual(q.shape, w.shape)
    self.assertEqual(q.scale.shape, (2, 3, 24))
    self.assertEqual(q.zero.dtype, jnp.uint8)
    self.assertLessEqual(int(q.zero.max()), 15)
    err = jnp.abs(int4.dequantize(q) - w)
    step = int4.expand_groups(q.scale, 128, 300)
    self.assertLessEqual(float((err / step).max()), 0.5 + 1e-4)       # half a step
    self.assertGreater(float((err / step).max()), 0.4)                 # the bound is tight
    # Zero is exact, and 0.5 bytes per weight plus the group parameters.
    self.assertEqual(float(int4.dequantize(int4.quantize(jnp.zeros((4, 8)), 2)).max()), 0.0)
    self.assertEqual(q.nbytes, 2 * 150 * 24 + 2 * 3 * 24 * 5)

  def test_linear_equals_x_times_dequantized(self):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 5, 300)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(300, 40)), jnp.float32)
    h = 2 * _correlated_inputs(512, 300).T.astype(np.float64) @ _correlated_inputs(512, 300)
    for q in (int4.quantize(w, 64), gptq.solve(w, h / 512, bits=4, group_size=64),
              gptq.solve(w, h / 512, bits=8)):
      want = jnp.einsum("bti,io->bto", x, linear.densify(q), precision="highest")
      np.testing.assert_allclose(linear.linear(x, q), want, rtol=1e-4, atol=1e-4)
    # Layer-stacked int4 inside a scan, as the decoder runs it.
    stacked = int4.quantize(jnp.stack([w, -w]), 128)
    ys = jax.lax.scan(lambda c, k: (c, linear.linear(x[0], k)), 0, stacked)[1]
    np.testing.assert_allclose(ys[1], -ys[0], rtol=1e-5, atol=1e-4)


class GptqSolveTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("int4", 4, False), ("int4_act_order", 4, True), ("int8", 8, False),
      ("int8_act_order", 8, True))
  def test_lazy_blocks_equal_column_by_column(self, bits, act_order):
    # 192 inputs, groups of 64: three lazy blocks; int8 uses one block of 128 and a short one.
    x = _correlated_inputs(1024, 192, seed=2)
    w = np.random.default_rng(3).normal(size=(192, 24)).astype(np.float32)
    h = 2 * x.T.astype(np.float64) @ x / len(x)
    got = _codes(gptq.solve(jnp.asarray(w), h, bits=bits, group_size=64, act_order=act_order))
    want = _reference_gptq(w, h, bits, 64, act_order)
    # float32 vs float64: a code may flip where a value sits on a rounding boundary.
    self.assertLessEqual(np.mean(got != want), 0.002)

  @parameterized.named_parameters(("int4", 4), ("int8", 8))
  def test_lower_output_error_than_rtn(self, bits):
    x = _correlated_inputs(2048, 256, seed=4)
    w = (0.05 * np.random.default_rng(5).normal(size=(256, 64))).astype(np.float32)
    h = 2 * x.T.astype(np.float64) @ x / len(x)
    rtn = int4.quantize(jnp.asarray(w), 128) if bits == 4 else int8.quantize(jnp.asarray(w))

    def out_err(q):
      return np.linalg.norm(x @ w - x @ np.asarray(linear.densify(q)))
    for act_order in (False, True):
      g = gptq.solve(jnp.asarray(w), h, bits=bits, group_size=128, act_order=act_order)
      self.assertLess(out_err(g), 0.8 * out_err(rtn), f"act_order={act_order}")

  def test_dead_inputs_and_errors(self):
    x = _correlated_inputs(256, 32)
    x[:, 5] = 0.0                                   # an input that is always zero
    w = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    q = gptq.solve(jnp.asarray(w), 2 * x.T @ x / 256, bits=4, group_size=16)
    self.assertTrue(np.isfinite(np.asarray(linear.densify(q))).all())
    np.testing.assert_array_equal(linear.densify(q)[5], 0.0)
    with self.assertRaises(errors.ConfigError):
      gptq.solve(jnp.asarray(w), np.eye(31), bits=4)
    with self.assertRaises(errors.ConfigError):
      gptq.solve(jnp.asarray(w), np.eye(32), bits=3)
    with self.assertRaises(errors.ConfigError):      # indefinite even after dampening
      gptq.solve(jnp.asarray(w), -np.eye(32), bits=4)


class QuantizeModelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = decoder.init(TINY, jax.random.key(0))
    rng = np.random.default_rng(0)
    cls.calib = rng.integers(0, TINY.vocab_size, (8, 32))
    cls.want, _ = decoder.apply(cls.params, jnp.asarray(cls.calib), TINY)

  def _rel_err(self, params):
    got, _ = decoder.apply(params, jnp.asarray(self.calib), TINY)
    self.assertTrue(np.isfinite(np.asarray(got)).all())
    return float(jnp.linalg.norm(got - self.want) / jnp.linalg.norm(self.want))

  def test_end_to_end_runs_and_gptq_beats_rtn(self):
    for bits, kind, bound in ((8, int8.Int8Weight, 0.01), (4, int4.Int4Weight, 0.1)):
      errs = {}
      for method in ("rtn", "gptq"):
        q = quantize.quantize_model(self.params, TINY, method, bits, group_size=32,
                                    calibration=self.calib, batch_size=4)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
          self.assertIsInstance(q["layers"]["self_attn"][name]["kernel"], kind)
        self.assertIsInstance(q["layers"]["mlp"]["down_proj"]["kernel"], kind)
        self.assertEqual(q["layers"]["mlp"]["down_proj"]["kernel"].shape, (2, 128, 64))
        self.assertIsInstance(q["embed_tokens"]["embedding"], jax.Array)   # tied head: float
        self.assertLess(quantize.weight_bytes(q), quantize.weight_bytes(self.params))
        errs[method] = self._rel_err(q)
        self.assertLess(errs[method], bound, (bits, method))
      # Generation runs on the quantized kinds (prefill and cached decode).
      out = gen.generate(q, TINY, [[1, 2, 3]], gen.SamplingConfig(max_new_tokens=3),
                         eos_ids=[-1])
      self.assertLen(out[0], 3)
      # Calibrated on these tokens, GPTQ reproduces the float outputs better than RTN.
      self.assertLess(errs["gptq"], errs["rtn"], bits)

  def test_capture_gives_the_layer_input_hessian(self):
    # Layer 0's q_proj reads rms_norm(embeddings): its Hessian can be computed directly.
    cfg = dataclasses.replace(TINY, num_layers=1)
    params = decoder.init(cfg, jax.random.key(1))
    params["layers"]["input_layernorm"]["scale"] = jnp.linspace(0.5, 2, 64)[None]
    q = gptq.quantize(params, cfg, self.calib, bits=4, group_size=32, batch_size=3,
                      act_order=False, targets=r"layers/self_attn/q_proj/kernel")
    self.assertIsInstance(q["layers"]["mlp"]["up_proj"]["kernel"], jax.Array)  # not targeted
    x = decoder.rms_norm(decoder.embed(params, jnp.asarray(self.calib)),
                         params["layers"]["input_layernorm"]["scale"][0], cfg)
    x = np.asarray(x, np.float64).reshape(-1, 64)
    direct = gptq.solve(params["layers"]["self_attn"]["q_proj"]["kernel"][0],
                        2 * x.T @ x / len(x), bits=4, group_size=32)
    got = _codes(jax.tree.map(lambda a: a[0], q["layers"]["self_attn"]["q_proj"]["kernel"]))
    self.assertLessEqual(np.mean(got != _codes(direct)), 0.002)

  def test_errors(self):
    with self.assertRaises(errors.ConfigError):
      quantize.quantize_model(self.params, TINY, "awq", 4)
    with self.assertRaises(errors.ConfigError):
      quantize.quantize_model(self.params, TINY, "rtn", 3)
    with self.assertRaises(errors.ConfigError):
      quantize.quantize_model(self.params, TINY, "gptq", 4)            # no calibration
    with self.assertRaises(errors.ConfigError):
      quantize.quantize_model(self.params, TINY, "gptq", 4, calibration=self.calib,
                              targets="lm_head/kernel")


class SmolLM2Test(absltest.TestCase):
  """RTN on the real embedded model, perplexity over real text."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    testutil.require_default_model()
    path = testutil.require_shared("llamafactory", "data", "alpaca_en_demo.json")
    from swiftjax import infer  # pylint: disable=g-import-not-at-top
    from swiftjax.eval import readers  # pylint: disable=g-import-not-at-top
    cls.model = infer.load(None)
    rows = json.loads(path.read_text(encoding="utf-8"))
    # The first three answers: 726 tokens of English prose.
    cls.docs = [readers.Document(f"{path}:{i}", text=r["output"]) for i, r in enumerate(rows[:3])]

  def _ppl(self, params):
    from swiftjax.eval import perplexity  # pylint: disable=g-import-not-at-top
    metrics, _ = perplexity.perplexity(dataclasses.replace(self.model, params=params), self.docs,
                                       max_length=256, stride=256, batch_size=4)
    return metrics

  def test_rtn_perplexity_close_to_float(self):
    base = self._ppl(self.model.params)
    self.assertGreater(base["tokens"], 300)
    q8 = quantize.quantize_model(self.model.params, self.model.cfg, "rtn", 8)
    q4 = quantize.quantize_model(self.model.params, self.model.cfg, "rtn", 4)
    self.assertLess(quantize.weight_bytes(q8["layers"]),
                    0.26 * quantize.weight_bytes(self.model.params["layers"]))
    ppl8, ppl4 = self._ppl(q8)["ppl"], self._ppl(q4)["ppl"]
    self.assertLess(abs(ppl8 - base["ppl"]) / base["ppl"], 0.01, (ppl8, base["ppl"]))
    # 4 bits lose more than 8, yet stay a working model.
    self.assertGreater(abs(ppl4 - base["ppl"]), abs(ppl8 - base["ppl"]))
    self.assertLess(ppl4, 1.5 * base["ppl"])


if __name__ == "__main__":
  absltest.main()
