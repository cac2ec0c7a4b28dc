"""Optimizer-side tuner pieces as optax transforms: LoRA+, freezing by regex, partitioning.

`split_trainable(tree, pattern) -> (trainable, frozen)` and `combine(trainable, frozen)` make
the trainable/frozen split explicit (levanter's `partition_lora_params`); `freeze(opt, pattern)`
zeroes updates of matching leaves (big_vision: "no schedule means frozen").
"""

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from swiftjax.lora import paths


def _labels(tree: Any, fn: Callable[[str], str]) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, _: fn(paths.path_str(p)), tree)


def split_trainable(tree: Any, pattern: str) -> tuple[Any, Any]:
  """Splits leaves whose path fully matches `pattern` from the rest; the other side holds None."""
  rx = re.compile(pattern)
  trainable = jax.tree_util.tree_map_with_path(
      lambda p, x: x if rx.fullmatch(paths.path_str(p)) else None, tree)
  frozen = jax.tree_util.tree_map_with_path(
      lambda p, x: None if rx.fullmatch(paths.path_str(p)) else x, tree)
  return trainable, frozen


def combine(*trees: Any) -> Any:
  """Inverse of `split_trainable`: the first non-None leaf at each position."""
  def pick(*xs):
    for x in xs:
      if x is not None:
        return x
    return None
  return jax.tree.map(pick, *trees, is_leaf=lambda x: x is None)


def freeze(optimizer: optax.GradientTransformation, frozen_pattern: str
           ) -> optax.GradientTransformation:
  """`optimizer` for every leaf except those whose path fully matches `frozen_pattern`, which
  get zero updates (and no optimizer state)."""
  rx = re.compile(frozen_pattern)
  return optax.multi_transform(
      {"train": optimizer, "freeze": optax.set_to_zero()},
      lambda tree: _labels(tree, lambda p: "freeze" if rx.fullmatch(p) else "train"))


def lora_plus(make_optimizer: Callable[[Any], optax.GradientTransformation],
              learning_rate: float | optax.Schedule, lr_ratio: float = 16.0
              ) -> optax.GradientTransformation:
  """LoRA+ (Hayou et al. 2024): B matrices learn `lr_ratio` times faster than A.

  Args:
    make_optimizer: e.g. `lambda lr: optax.adamw(lr)`.
    learning_rate: learning rate (or schedule) of A and every non-LoRA leaf.
    lr_ratio: ms-swift's `lorap_lr_ratio` (the paper suggests 2^4).
  """
  if callable(learning_rate):
    fast = lambda step: learning_rate(step) * lr_ratio  # noqa: E731
  else:
    fast = learning_rate * lr_ratio
  return optax.multi_transform(
      {"base": make_optimizer(learning_rate), "lora_b": make_optimizer(fast)},
      lambda tree: _labels(tree, lambda p: "lora_b" if p.endswith("lora_b") else "base"))


def mask_layers(tree: Any, active: jax.Array, layer_prefix: str = "layers/",
                others: bool = True) -> Any:
  """Zeroes the entries of layer-stacked leaves (paths under `layer_prefix`) whose layer is not
  `active [L]`; other leaves are kept when `others`, zeroed otherwise."""
  def one(path, x):
    if not paths.path_str(path).startswith(layer_prefix):
      return x if others else jnp.zeros_like(x)
    return jnp.where(active.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x))
  return jax.tree_util.tree_map_with_path(one, tree)
