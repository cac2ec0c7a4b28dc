"""GaLore and LISA as optax transforms: what changes, and how big the optimizer state is."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from swiftjax import errors
from swiftjax.lora import galore
from swiftjax.lora import lisa


def _params():
  k = jax.random.split(jax.random.key(0), 3)
  return {"layers": {"wide": {"kernel": 0.1 * jax.random.normal(k[0], (3, 16, 40))},
                     "tall": {"kernel": 0.1 * jax.random.normal(k[1], (3, 40, 16))},
                     "norm": {"scale": jnp.ones((3, 16))}},
          "embed_tokens": {"embedding": 0.1 * jax.random.normal(k[2], (20, 16))}}


def _loss(params, x, y):
  h = jnp.einsum("bi,lio->blo", x, params["layers"]["wide"]["kernel"])
  h = jnp.einsum("blo,loi->bli", jnp.tanh(h), params["layers"]["tall"]["kernel"])
  return jnp.mean((h * params["layers"]["norm"]["scale"] - y) ** 2) + jnp.mean(
      params["embed_tokens"]["embedding"] ** 2)


class GaLoreTest(absltest.TestCase):

  def test_state_is_low_rank(self):
    opt = galore.galore(optax.adam(1e-2), rank=4)
    state = opt.init(_params())
    mu = state.inner[0].mu
    self.assertEqual(mu["layers"]["wide"]["kernel"].shape, (3, 4, 40))   # m <= n: P^T G
    self.assertEqual(mu["layers"]["tall"]["kernel"].shape, (3, 40, 4))   # m > n: G Q
    self.assertEqual(mu["layers"]["norm"]["scale"].shape, (3, 16))       # 2-D but not a kernel
    self.assertEqual(mu["embed_tokens"]["embedding"].shape, (20, 16))     # untargeted: full

  def test_trains_and_refreshes_projection_on_schedule(self):
    params = _params()
    x = jax.random.normal(jax.random.key(1), (64, 16))
    y = jnp.sin(jax.random.normal(jax.random.key(2), (64, 3, 16)))
    opt = galore.galore(optax.adam(3e-2), rank=4, update_proj_gap=10, scale=1.0)
    state = opt.init(params)
    step = jax.jit(lambda p, s: opt.update(jax.grad(_loss)(p, x, y), s, p))
    first = float(_loss(params, x, y))
    projections = []
    for _ in range(30):
      updates, state = step(params, state)
      params = optax.apply_updates(params, updates)
      projections.append(np.asarray(state.projections["layers"]["wide"]["kernel"]))
    self.assertLess(float(_loss(params, x, y)), 0.8 * first)
    np.testing.assert_array_equal(projections[1], projections[9])   # held between refreshes
    self.assertFalse(np.allclose(projections[9], projections[10]))  # refreshed at step 10

  def test_bad_rank_and_pattern(self):
    with self.assertRaisesRegex(errors.ConfigError, "GaLore rank 32 exceeds"):
      galore.galore(optax.adam(1e-2), rank=32).init(_params())
    with self.assertRaisesRegex(errors.ConfigError, "matches no 2-D parameter"):
      galore.galore(optax.adam(1e-2), target_pattern="nothing/.*").init(_params())


class LisaTest(absltest.TestCase):

  def test_only_sampled_layers_and_always_on_params_move(self):
    params = _params()
    x = jax.random.normal(jax.random.key(1), (8, 16))
    y = jnp.ones((8, 3, 16))
    opt = lisa.lisa(optax.adam(1e-2), num_layers=3, n_layers=1, interval=4, seed=3)
    state = opt.init(params)
    seen_active = set()
    for step in range(20):
      before = params
      updates, state = opt.update(jax.grad(_loss)(params, x, y), state, params)
      params = optax.apply_updates(params, updates)
      active = np.asarray(state.active)
      self.assertEqual(active.sum(), 1)
      seen_active.add(int(active.argmax()))
      moved = np.abs(np.asarray(params["layers"]["wide"]["kernel"] -
                                before["layers"]["wide"]["kernel"])).max(axis=(1, 2)) > 0
      np.testing.assert_array_equal(moved, active, f"step {step}")
      self.assertGreater(float(jnp.abs(params["embed_tokens"]["embedding"] -
                                       before["embed_tokens"]["embedding"]).max()), 0)
    self.assertGreater(len(seen_active), 1)  # redrawn every 4 steps

  def test_bad_layer_count(self):
    with self.assertRaisesRegex(errors.ConfigError, r"n_layers must be in \[1, 3\]"):
      lisa.lisa(optax.sgd(1.0), num_layers=3, n_layers=4)


if __name__ == "__main__":
  absltest.main()
