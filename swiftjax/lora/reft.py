"""LoReFT (Wu et al. 2024): low-rank linear subspace interventions on hidden representations.

At chosen layers and positions the residual stream h `[D]` is edited in an r-dimensional
subspace spanned by the orthonormal columns of R `[D, r]`:
    h <- h + R (W^T h + b - R^T h),     W `[D, r]`, b `[r]`
R is parametrised by an unconstrained `[D, r]` matrix orthonormalised with QR on every call.
Positions follow pyreft's "f{n}+l{m}": the first n and last m real tokens of each row.
Runs through `decoder.apply(residual_hook=..., hook_params=...)`; the model weights are frozen.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ReftConfig:
  layers: tuple[int, ...] = (0,)
  r: int = 4
  first_n: int = 1
  last_n: int = 1

  def __post_init__(self):
    if self.r < 1 or self.first_n < 0 or self.last_n < 0 or not self.layers:
      raise errors.ConfigError(f"invalid ReFT config {self}")
    object.__setattr__(self, "layers", tuple(self.layers))


def init(params: Any, rng: jax.Array, cfg: ReftConfig, model_cfg: ModelConfig
         ) -> tuple[Any, Any]:
  """`(params, adapters)`: per intervened layer `rotate [n, D, r]`, `w [n, D, r]`, `b [n, r]`.

  At init W^T = R^T and b = 0, so the intervention is the identity.
  """
  bad = [l for l in cfg.layers if not 0 <= l < model_cfg.num_layers]
  if bad:
    raise errors.ConfigError(f"ReFT layers {bad} are outside [0, {model_cfg.num_layers})")
  if cfg.r > model_cfg.hidden_size:
    raise errors.ConfigError(f"ReFT rank {cfg.r} exceeds the hidden size "
                             f"{model_cfg.hidden_size}")
  n, d = len(cfg.layers), model_cfg.hidden_size
  rotate = jax.random.normal(rng, (n, d, cfg.r), jnp.float32) / d ** 0.5
  q = jnp.linalg.qr(rotate)[0]
  return params, {"rotate": rotate, "w": q, "b": jnp.zeros((n, cfg.r), jnp.float32)}


def positions(mask: jax.Array, cfg: ReftConfig) -> jax.Array:
  """`[B, T]` bool: the first `first_n` and last `last_n` real tokens of each row."""
  count = jnp.cumsum(mask, axis=1)
  total = count[:, -1:]
  return mask & ((count <= cfg.first_n) | (count > total - cfg.last_n))


def hook(adapters: Any, cfg: ReftConfig, model_cfg: ModelConfig, where: jax.Array):
  """`(residual_hook, hook_params)` for `decoder.apply`; `where [B, T]` from `positions`."""
  L = model_cfg.num_layers
  idx = jnp.asarray(cfg.layers)

  def scatter(x, fill=None):
    base = jnp.zeros((L, *x.shape[1:]), x.dtype) if fill is None else jnp.broadcast_to(
        fill, (L, *x.shape[1:])).astype(x.dtype)
    return base.at[idx].set(x)

  d, r = adapters["rotate"].shape[1:]
  # Layers without an intervention get a valid basis (a zero matrix has no QR gradient).
  hook_params = {"rotate": scatter(adapters["rotate"], jnp.eye(d, r)),
                 "w": scatter(adapters["w"]), "b": scatter(adapters["b"]),
                 "on": jnp.zeros((L,), bool).at[idx].set(True)}

  def residual_hook(hp, x, layer):
    del layer
    r = jnp.linalg.qr(hp["rotate"])[0]                    # [D, r], orthonormal columns
    x32 = x.astype(jnp.float32)
    edit = (x32 @ hp["w"] + hp["b"] - x32 @ r) @ r.T      # [B, T, D]
    apply_here = hp["on"] & where[..., None]
    return jnp.where(apply_here, x32 + edit, x32).astype(x.dtype)

  return residual_hook, hook_params
