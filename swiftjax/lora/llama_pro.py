"""LLaMA-Pro (Wu et al. 2024): block expansion.

The L blocks are split into `num_new_blocks` equal groups; after each group a copy of the
group's last block is inserted with its output projections (`o_proj`, `down_proj`, and their
biases) zeroed, so each new block is the identity on the residual stream and the expanded
model computes exactly what the original did. Only the new blocks train (`optimizer`).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from swiftjax import errors
from swiftjax.lora import optim
from swiftjax.models.config import ModelConfig

_ZEROED = (("self_attn", "o_proj"), ("mlp", "down_proj"))


def expand(params: Any, cfg: ModelConfig, num_new_blocks: int
           ) -> tuple[Any, ModelConfig, np.ndarray]:
  """Returns `(params, cfg, new_block_mask [L + num_new_blocks])` for the expanded model."""
  L = cfg.num_layers
  if num_new_blocks < 1 or L % num_new_blocks:
    raise errors.ConfigError(f"num_new_blocks={num_new_blocks} must divide the {L} layers")
  group = L // num_new_blocks
  order, is_new = [], []
  for g in range(num_new_blocks):
    order += list(range(g * group, (g + 1) * group)) + [(g + 1) * group - 1]
    is_new += [False] * group + [True]
  order, is_new = np.asarray(order), np.asarray(is_new)
  layers = jax.tree.map(lambda x: x[order], params["layers"])
  for group_name, name in _ZEROED:
    for leaf in ("kernel", "bias"):
      if leaf in layers[group_name][name]:
        x = layers[group_name][name][leaf]
        layers[group_name][name][leaf] = jnp.where(
            is_new.reshape((-1,) + (1,) * (x.ndim - 1)), 0, x).astype(x.dtype)
  windows = None if cfg.layer_windows is None else tuple(
      int(w) for w in np.asarray(cfg.layer_windows)[order])
  new_cfg = dataclasses.replace(cfg, num_layers=len(order), layer_windows=windows)
  return {**params, "layers": layers}, new_cfg, is_new


def optimizer(inner: optax.GradientTransformation, new_block_mask: np.ndarray
              ) -> optax.GradientTransformation:
  """`inner` applied to the new blocks only; everything else gets zero updates."""
  active = jnp.asarray(new_block_mask)

  def init(params):
    return inner.init(params)

  def update(updates, state, params=None):
    out, state = inner.update(optim.mask_layers(updates, active, others=False), state, params)
    return optim.mask_layers(out, active, others=False), state

  return optax.GradientTransformation(init, update)
