"""ReFT interventions and LongLoRA's shifted sparse attention."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from swiftjax import errors
from swiftjax import models
from swiftjax.lora import longlora
from swiftjax.lora import reft
from swiftjax.models import decoder

_CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=3,
                          num_heads=4, num_kv_heads=2, head_dim=8)


class ReftTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.params = decoder.init(_CFG, jax.random.key(0))
    self.tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 10)))
    self.mask = jnp.ones(self.tokens.shape, bool).at[0, :3].set(False)  # row 0 left-padded
    self.cfg = reft.ReftConfig(layers=(0, 2), r=2, first_n=1, last_n=2)

  def _apply(self, adapters):
    where = reft.positions(self.mask, self.cfg)
    hook_fn, hook_params = reft.hook(adapters, self.cfg, _CFG, where)
    return decoder.apply(self.params, self.tokens, _CFG, mask=self.mask,
                         residual_hook=hook_fn, hook_params=hook_params)[0]

  def test_positions(self):
    where = np.asarray(reft.positions(self.mask, self.cfg))
    np.testing.assert_array_equal(np.flatnonzero(where[0]), [3, 8, 9])
    np.testing.assert_array_equal(np.flatnonzero(where[1]), [0, 8, 9])

  def test_identity_at_init_then_trains_only_at_chosen_positions(self):
    base, _ = decoder.apply(self.params, self.tokens, _CFG, mask=self.mask)
    _, adapters = reft.init(self.params, jax.random.key(1), self.cfg, _CFG)
    np.testing.assert_allclose(np.asarray(self._apply(adapters)), np.asarray(base), atol=1e-5)
    targets = jnp.roll(self.tokens, -1, axis=1)
    loss = lambda a: optax.softmax_cross_entropy_with_integer_labels(
        self._apply(a), targets).mean()
    g = jax.grad(loss)(adapters)
    self.assertTrue(all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(g)))
    moved = jax.tree.map(lambda x, d: x - 0.5 * d, adapters, g)
    self.assertGreater(np.abs(np.asarray(self._apply(moved)) - np.asarray(base)).max(), 1e-3)

  def test_last_position_only(self):
    self.cfg = reft.ReftConfig(layers=(1,), r=2, first_n=0, last_n=1)
    base, _ = decoder.apply(self.params, self.tokens, _CFG, mask=self.mask)
    _, adapters = reft.init(self.params, jax.random.key(1), self.cfg, _CFG)
    adapters = {**adapters, "b": adapters["b"] + 1.0}
    out = np.asarray(self._apply(adapters))
    # Real tokens before the last one are untouched (row 0 starts at 3; padding outputs are
    # meaningless and not compared).
    np.testing.assert_allclose(out[0, 3:-1], np.asarray(base)[0, 3:-1], atol=1e-5)
    np.testing.assert_allclose(out[1, :-1], np.asarray(base)[1, :-1], atol=1e-5)
    self.assertGreater(np.abs(out[:, -1] - np.asarray(base)[:, -1]).max(), 1e-3)

  def test_bad_layer(self):
    with self.assertRaisesRegex(errors.ConfigError, r"ReFT layers \[5\] are outside \[0, 3\)"):
      reft.init(self.params, jax.random.key(0), reft.ReftConfig(layers=(5,)), _CFG)


class LongLoraTest(absltest.TestCase):

  def test_s2_attention_limits_reach_and_inference_is_plain(self):
    params = decoder.init(_CFG, jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (1, 16)))
    full, _ = decoder.apply(params, tokens, _CFG)
    s2, _ = longlora.train_apply(params, tokens, _CFG, ratio=0.25)     # groups of 4
    # Inside the first group and before any shifted group boundary, both agree.
    np.testing.assert_allclose(np.asarray(s2[0, :2]), np.asarray(full[0, :2]), atol=1e-5)
    self.assertGreater(float(jnp.abs(s2 - full).max()), 1e-4)
    # Token 15 cannot see token 0 under S2-Attn: changing token 0 leaves its logits alone
    # (plain attention would change them).
    other = tokens.at[0, 0].set((tokens[0, 0] + 1) % 64)
    s2_other, _ = longlora.train_apply(params, other, _CFG, ratio=0.25)
    full_other, _ = decoder.apply(params, other, _CFG)
    np.testing.assert_allclose(np.asarray(s2_other[0, 15]), np.asarray(s2[0, 15]), atol=1e-6)
    self.assertGreater(float(jnp.abs(full_other[0, 15] - full[0, 15]).max()), 1e-6)

  def test_group_size(self):
    self.assertEqual(longlora.group_size(8192), 2048)
    with self.assertRaisesRegex(errors.ConfigError, "must be even"):
      longlora.group_size(9, ratio=0.5)


if __name__ == "__main__":
  absltest.main()
