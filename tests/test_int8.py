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


if __name__ == "__main__":
  absltest.main()
