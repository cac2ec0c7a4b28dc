"""GaLore (Zhao et al. 2024): optimizer states in a low-rank projection of the gradient.

For a targeted weight with gradient G `[..., m, n]`, every `update_proj_gap` steps the top-r
singular vectors of G give a projection: P = U[:, :r] (left, when m <= n: R = P^T G, `[r, n]`)
or Q = V[:, :r] (right, when m > n: R = G Q, `[m, r]`). The inner optimizer (Adam, ...) runs on
R, so its moments are r-dimensional, and its update N is projected back and scaled:
`update = scale * P N` (or `scale * N Q^T`). Leaves that are not targeted go through the inner
optimizer at full rank. Leading (layer) axes are batched.
"""

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from swiftjax import errors
from swiftjax.lora import paths


class GaLoreState(NamedTuple):
  count: jax.Array          # steps taken
  projections: Any          # per leaf: [..., m, r] (left) or [..., n, r] (right), or None
  inner: optax.OptState


def _left(shape) -> bool:
  return shape[-2] <= shape[-1]


def _targets(params, pattern, rank):
  rx = re.compile(pattern)
  out = {}
  for p, leaf in paths.flatten(params).items():
    if leaf.ndim >= 2 and rx.fullmatch(p):
      if rank > min(leaf.shape[-2:]):
        raise errors.ConfigError(f"GaLore rank {rank} exceeds min of {p} {tuple(leaf.shape)}")
      out[p] = leaf
  if not out:
    raise errors.ConfigError(f"GaLore target pattern {pattern!r} matches no 2-D parameter")
  return out


def _projection(g, rank):
  u, _, vh = jnp.linalg.svd(g.astype(jnp.float32), full_matrices=False)
  if _left(g.shape):
    return u[..., :, :rank]
  return jnp.swapaxes(vh[..., :rank, :], -1, -2)


def _down(g, p):
  return jnp.swapaxes(p, -1, -2) @ g if _left(g.shape) else g @ p


def _up(n, p, shape):
  return p @ n if _left(shape) else n @ jnp.swapaxes(p, -1, -2)


def galore(inner: optax.GradientTransformation, rank: int = 128, update_proj_gap: int = 200,
           scale: float = 0.25, target_pattern: str = r"layers/.*/kernel"
           ) -> optax.GradientTransformation:
  """Wraps `inner` so targeted 2-D (or layer-stacked) weights keep low-rank optimizer state.

  Args:
    inner: the optimizer run in the projected space (e.g. `optax.adam(lr)`).
    rank: projection rank r.
    update_proj_gap: steps between recomputing projections (T in the paper).
    scale: alpha, multiplies the projected-back update.
    target_pattern: regex over parameter paths selecting the projected weights.
  """

  def project_tree(tree, projections):
    return jax.tree.map(lambda g, p: g if p is None else _down(g, p), tree, projections,
                        is_leaf=lambda x: x is None)

  def init(params):
    targets = _targets(params, target_pattern, rank)
    projections = jax.tree_util.tree_map_with_path(
        lambda path, x: (jnp.zeros((*x.shape[:-2], x.shape[-2] if _left(x.shape) else
                                    x.shape[-1], rank), jnp.float32)
                         if paths.path_str(path) in targets else None), params)
    shapes = jax.tree.map(lambda x, p: x if p is None else jnp.zeros(
        (*x.shape[:-2], rank, x.shape[-1]) if _left(x.shape) else (*x.shape[:-1], rank),
        x.dtype), params, projections, is_leaf=lambda x: x is None)
    return GaLoreState(jnp.zeros((), jnp.int32), projections, inner.init(shapes))

  def update(updates, state, params=None):
    refresh = state.count % update_proj_gap == 0

    def new_proj(g, p):
      if p is None:
        return None
      return jax.lax.cond(refresh, lambda: _projection(g, rank), lambda: p)

    projections = jax.tree.map(new_proj, updates, state.projections,
                               is_leaf=lambda x: x is None)
    low = project_tree(updates, projections)
    low_params = None if params is None else jax.tree.map(
        lambda x, p: x if p is None else _down(x, p), params, projections,
        is_leaf=lambda x: x is None)
    n, inner_state = inner.update(low, state.inner, low_params)
    out = jax.tree.map(lambda u, p, g: u if p is None else
                       (scale * _up(u, p, g.shape)).astype(g.dtype),
                       n, projections, updates, is_leaf=lambda x: x is None)
    return out, GaLoreState(state.count + 1, projections, inner_state)

  return optax.GradientTransformation(init, update)
