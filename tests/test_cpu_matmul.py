"""The native CPU matmul kernels against their jnp reference, and their use in packed models."""

import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import models
from swiftjax import packed_bf16
from swiftjax.kernels import cpu_matmul
from swiftjax.models import decoder


def _bits(w):
  return jax.lax.bitcast_convert_type(jnp.asarray(w, jnp.bfloat16), jnp.uint16)


def _skip_unless_available(test):
  if not cpu_matmul.available():
    test.skipTest("the CPU kernels are not available here (no AVX-512, no C++ compiler, or "
                  "SWIFTJAX_CPU_KERNELS=0); the jnp path is what runs")


class KernelTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    _skip_unless_available(self)

  @parameterized.product(rows=[1, 2, 3, 4, 5, 8, 13, 16], transposed=[False, True],
                         shape=[(576, 1536), (100, 37), (64, 2048)])
  def test_bf16_matches_reference(self, rows, transposed, shape):
    k, n = shape
    rng = np.random.default_rng(rows)
    x = jnp.asarray(rng.standard_normal((rows, k), np.float32))
    w = rng.standard_normal((3, k, n), np.float32)                    # three stacked layers
    bits = _bits(w)
    stored = jnp.swapaxes(bits, -1, -2) if transposed else bits
    for layer in range(3):
      want = x @ packed_bf16.widen(bits[layer])
      scale = float(jnp.max(jnp.abs(want)))
      got = cpu_matmul.bf16_matmul(x, stored, jnp.int32(layer), transposed)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    got = cpu_matmul.bf16_matmul(x, stored[1], 0, transposed)          # one 2-D matrix
    np.testing.assert_allclose(got, x @ packed_bf16.widen(bits[1]), rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(got))))

  @parameterized.product(rows=[1, 3, 8, 11, 16], transposed=[False, True])
  def test_int8_matches_reference(self, rows, transposed):
    k, n = 200, 75
    rng = np.random.default_rng(rows)
    x = jnp.asarray(rng.standard_normal((rows, k), np.float32))
    q = jnp.asarray(rng.integers(-127, 128, (2, k, n), dtype=np.int8))
    scale = jnp.asarray(rng.random((2, n), np.float32))
    stored = jnp.swapaxes(q, -1, -2) if transposed else q
    for layer in range(2):
      want = (x @ q[layer].astype(jnp.float32)) * scale[layer]
      got = cpu_matmul.int8_matmul(x, stored, scale, jnp.int32(layer), transposed)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))

  def test_gradients_match_reference(self):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 48), np.float32))
    bits = _bits(rng.standard_normal((3, 32, 48), np.float32))         # [L, N, K]
    g = jax.grad(lambda x: jnp.sum(jnp.sin(cpu_matmul.bf16_matmul(x, bits, 2, True))))(x)
    want = jax.grad(lambda x: jnp.sum(jnp.sin(x @ packed_bf16.widen(bits[2]).T)))(x)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
    q = jnp.asarray(rng.integers(-127, 128, (48, 32), dtype=np.int8))
    s = jnp.asarray(rng.random(32, np.float32) * 0.01)  # outputs of order 1
    f = lambda x, s: jnp.sum(jnp.sin(cpu_matmul.int8_matmul(x, q, s, 0, False)))
    ref = lambda x, s: jnp.sum(jnp.sin((x @ q.astype(jnp.float32)) * s))
    for got, want in zip(jax.grad(f, (0, 1))(x, s), jax.grad(ref, (0, 1))(x, s)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

  def test_sharded_operands_give_the_same_product(self):
    # The test process has 8 CPU devices; the partitioner replicates the kernel's operands.
    mesh = jax.make_mesh((jax.device_count(),), ("t",))
    rng = np.random.default_rng(0)
    bits = _bits(rng.standard_normal((2, 64, 48), np.float32))
    x = jnp.asarray(rng.standard_normal((3, 48), np.float32))
    sharded = jax.device_put(bits, jax.sharding.NamedSharding(mesh, jax.P(None, "t", None)))
    got = jax.jit(lambda x, b: cpu_matmul.bf16_matmul(x, b, 1, True))(x, sharded)
    np.testing.assert_allclose(got, x @ packed_bf16.widen(bits[1]).T, rtol=1e-5, atol=1e-5)

  def test_bad_layer_index_is_an_error(self):
    bits = _bits(np.ones((2, 8, 16), np.float32))
    with self.assertRaisesRegex(Exception, "layer index out of range"):
      jax.block_until_ready(cpu_matmul.bf16_matmul(jnp.ones((1, 16)), bits, 2, True))


class PackedModelTest(absltest.TestCase):

  def test_decode_steps_match_the_xla_path(self):
    _skip_unless_available(self)
    cfg = models.ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
                             num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16,
                             tie_word_embeddings=True)
    params = packed_bf16.pack(decoder.init(cfg, jax.random.key(0), jnp.bfloat16))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 300, (2, 5)))

    def run():
      step = jax.jit(lambda p, t, c: decoder.apply(p, t, cfg, cache=c,
                                                   compute_dtype=jnp.float32))
      cache = decoder.init_cache(cfg, 2, 16, jnp.float32)
      outs = []
      for t in range(tokens.shape[1]):          # one token per row: 2-row products
        logits, cache = step(params, tokens[:, t:t + 1], cache)
        outs.append(logits)
      hlo = step.lower(params, tokens[:, :1], cache).as_text()
      return np.concatenate(outs, axis=1), hlo

    got, hlo = run()
    self.assertIn("swiftjax_bf16_matmul", hlo)
    with mock.patch.object(cpu_matmul, "usable", return_value=False):
      want, ref_hlo = run()
    self.assertNotIn("swiftjax_bf16_matmul", ref_hlo)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


class AvailabilityTest(absltest.TestCase):

  def test_disabled_or_unbuildable_falls_back_quietly(self):
    with mock.patch.dict(os.environ, {"SWIFTJAX_CPU_KERNELS": "0"}):
      self.assertFalse(cpu_matmul.available())
      self.assertFalse(cpu_matmul.usable(1))
    # A compiler that fails: a warning naming the command, no exception, no file left behind.
    env = {"CXX": "/bin/false", "SWIFTJAX_CACHE_DIR": self.create_tempdir().full_path}
    with mock.patch.dict(os.environ, env), mock.patch.object(
        cpu_matmul, "_cpu_flags", return_value=frozenset({"avx512f", "test-only-flag"})):
      with self.assertLogs(cpu_matmul.log, "WARNING") as logs:
        self.assertFalse(cpu_matmul.available())
    self.assertIn("/bin/false", "\n".join(logs.output))
    self.assertEqual(os.listdir(os.path.join(env["SWIFTJAX_CACHE_DIR"], "kernels")), [])
    # No compiler at all: one warning however many matmuls ask.
    cpu_matmul._warn_no_compiler.cache_clear()
    with mock.patch.object(cpu_matmul, "_compiler", return_value=None), mock.patch.object(
        cpu_matmul, "_cpu_flags", return_value=frozenset({"avx512f"})):
      with self.assertLogs(cpu_matmul.log, "WARNING") as logs:
        self.assertFalse(cpu_matmul.available())
        self.assertFalse(cpu_matmul.available())
    self.assertLen(logs.output, 1)
    self.assertIn("no C++ compiler", logs.output[0])


if __name__ == "__main__":
  absltest.main()
