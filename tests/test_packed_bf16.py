"""PackedBF16: bf16 weights kept as bits give exactly what the bf16 weights give."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import linear
from swiftjax import models
from swiftjax import packed_bf16
from swiftjax.models import decoder


class PackedBF16Test(absltest.TestCase):

  def test_widen_is_exact(self):
    x = jax.random.normal(jax.random.key(0), (1000,)).astype(jnp.bfloat16)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint16)
    np.testing.assert_array_equal(packed_bf16.widen(bits), x.astype(jnp.float32))

  def test_model_matches_bf16_weights(self):
    # Vocabulary large enough that the tied head takes the chunked path.
    cfg = models.ModelConfig(vocab_size=70000, hidden_size=64, intermediate_size=128,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                             tie_word_embeddings=True)
    params = decoder.init(cfg, jax.random.key(0), jnp.bfloat16)
    packed = packed_bf16.pack(params)
    self.assertIsInstance(packed["embed_tokens"]["embedding"], packed_bf16.PackedBF16)
    self.assertIsInstance(packed["layers"]["mlp"]["up_proj"]["kernel"], packed_bf16.PackedBF16)
    self.assertEqual(packed["layers"]["input_layernorm"]["scale"].dtype, jnp.bfloat16)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 70000, (2, 7)))
    want, _ = decoder.apply(params, tokens, cfg, compute_dtype=jnp.float32)
    got, _ = jax.jit(lambda p: decoder.apply(p, tokens, cfg, compute_dtype=jnp.float32))(packed)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(
        linear.densify(packed["layers"]["mlp"]["up_proj"]["kernel"]),
        params["layers"]["mlp"]["up_proj"]["kernel"])


if __name__ == "__main__":
  absltest.main()
