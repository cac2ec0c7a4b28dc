"""LISA (Pan et al. 2024): layerwise importance sampling, as an optax transform.

Every `interval` steps, `n_layers` of the L layers are drawn uniformly at random; only they
(and every parameter outside the layer stack, such as embeddings and the head, which LISA
always trains) get updates until the next draw. Gradients of frozen layers are zeroed before
the inner optimizer and its updates for them are zeroed after, so frozen layers do not move.
With layers stacked on one axis the inner optimizer still holds state for every layer; the
saving LISA reports in PyTorch comes from not allocating it, which this layout does not do.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from swiftjax import errors
from swiftjax.lora import optim


class LisaState(NamedTuple):
  count: jax.Array
  key: jax.Array
  active: jax.Array   # [L] bool: layers trained until the next draw
  inner: optax.OptState


def lisa(inner: optax.GradientTransformation, num_layers: int, n_layers: int = 2,
         interval: int = 20, seed: int = 0, layer_prefix: str = "layers/"
         ) -> optax.GradientTransformation:
  """Wraps `inner` so only `n_layers` sampled layers (leading axis of `layer_prefix` leaves)
  are updated at a time; ms-swift's `lisa_activated_layers` / `lisa_step_interval`."""
  if not 0 < n_layers <= num_layers:
    raise errors.ConfigError(f"LISA n_layers must be in [1, {num_layers}], got {n_layers}")

  def draw(key):
    chosen = jax.random.choice(key, num_layers, (n_layers,), replace=False)
    return jnp.zeros((num_layers,), bool).at[chosen].set(True)

  def mask(tree, active):
    return optim.mask_layers(tree, active, layer_prefix)

  def init(params):
    key = jax.random.key(seed)
    return LisaState(jnp.zeros((), jnp.int32), key, draw(key), inner.init(params))

  def update(updates, state, params=None):
    key, sub = jax.random.split(state.key)
    redraw = (state.count % interval == 0) & (state.count > 0)
    active = jnp.where(redraw, draw(sub), state.active)
    out, inner_state = inner.update(mask(updates, active), state.inner, params)
    return mask(out, active), LisaState(state.count + 1, key, active, inner_state)

  return optax.GradientTransformation(init, update)
