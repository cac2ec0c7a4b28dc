"""Weight-only int8: per-channel error bound and model output close to float."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import int8
from swiftjax import linear
from swiftjax import models
from swiftjax.models import decoder


class Int8Test(absltest.TestCase):

  def test_round_to_nearest_bound(self):
    w = jax.random.normal(jax.random.key(0), (3, 64, 40))
    q = int8.quantize(w)
    self.assertEqual(q.q.dtype, jnp.int8)
    self.assertEqual(q.scale.shape, (3, 40))
    err = jnp.abs(int8.dequantize(q) - w)
    self.assertLessEqual(float((err / q.scale[:, None, :]).max()), 0.5 + 1e-5)  # half a step
    np.testing.assert_array_equal(linear.densify(q), int8.dequantize(q))

  def test_few_rows_are_padded_and_sliced_back(self):
    # 1-3 rows go through the padded matmul (see int8._matmul), 4+ rows straight through.
    w = jax.random.normal(jax.random.key(1), (64, 40))
    q = int8.quantize(w)
    dense = np.asarray(int8.dequantize(q))
    for shape in [(64,), (1, 64), (2, 1, 64), (3, 64), (2, 3, 64), (5, 64)]:
      x = jax.random.normal(jax.random.key(2), shape)
      got = jax.jit(linear.linear)(x, q)
      self.assertEqual(got.shape, shape[:-1] + (40,))
      np.testing.assert_allclose(np.asarray(got), np.asarray(x) @ dense, rtol=1e-5, atol=1e-4)

  def test_model_close_to_float(self):
    cfg = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=8)
    params = decoder.init(cfg, jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 9)))
    want, _ = decoder.apply(params, tokens, cfg)
    q = int8.quantize_params(params)
    self.assertIsInstance(q["layers"]["mlp"]["up_proj"]["kernel"], int8.Int8Weight)
    got, _ = decoder.apply(q, tokens, cfg)
    rel = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    self.assertLess(rel, 0.02)

  def test_output_major_computes_the_same(self):
    cfg = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=3,
                             num_heads=4, num_kv_heads=2, head_dim=8)
    params = int8.quantize_params(decoder.init(cfg, jax.random.key(0)))
    out = int8.output_major(params)
    a = params["layers"]["mlp"]["up_proj"]["kernel"]
    b = out["layers"]["mlp"]["up_proj"]["kernel"]
    self.assertTrue(b.transposed)
    self.assertEqual(b.q.shape, (3, 64, 32))                     # [L, out, in]
    self.assertEqual((b.shape, b.ndim), (a.shape, a.ndim))       # the matrix's [L, in, out]
    np.testing.assert_array_equal(linear.densify(b), linear.densify(a))
    np.testing.assert_array_equal(int8.input_major_codes(b), a.q)
    # Only output-major weights take a layer view in the scan (input-major ones are sliced).
    self.assertTrue(linear.has_layer_view(b))
    self.assertFalse(linear.has_layer_view(a))
    view = linear.layer_view(b, jnp.int32(2))
    self.assertEqual(view.shape, (32, 64))
    np.testing.assert_array_equal(linear.densify(view), linear.densify(a)[2])
    self.assertIs(int8.output_major(out)["layers"]["mlp"]["up_proj"]["kernel"].q, b.q)
    rng = np.random.default_rng(0)
    # Decode-sized products (1, 5, 8, 13 rows: the CPU kernel where available, in groups of
    # eight) and a prefill-sized one (27 rows: XLA's dot on the output-major codes).
    for shape in [(1, 1), (5, 1), (8, 1), (13, 1), (3, 9)]:
      tokens = jnp.asarray(rng.integers(0, 64, shape))
      want, _ = jax.jit(lambda p, t: decoder.apply(p, t, cfg))(params, tokens)
      got, _ = jax.jit(lambda p, t: decoder.apply(p, t, cfg))(out, tokens)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(jnp.abs(want).max()),
                                 err_msg=str(shape))
    # Differentiable in the activations on either path, like the input-major weight.
    x = jnp.asarray(rng.standard_normal((2, 32), np.float32))
    flat = int8.output_major(int8.quantize(jax.random.normal(jax.random.key(3), (32, 48))))
    for w in (flat, view):
      w_in = linear.densify(w)
      g = jax.grad(lambda x, w=w: jnp.sum(jnp.sin(linear.linear(x, w))))(x)
      want = jax.grad(lambda x, w_in=w_in: jnp.sum(jnp.sin(x @ w_in)))(x)
      np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
