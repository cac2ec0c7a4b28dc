"""VeRA (Kopiczko et al. 2024): one pair of frozen random matrices shared by every adapted
layer, and two trainable scaling vectors per layer.

    y = x W + lambda_b * ((x A_s * lambda_d) B_s)

A `[in_max, r]` and B `[r, out_max]` are shared (kaiming-uniform, frozen); each layer uses the
top-left slice `A_s = A[:in]`, `B_s = B[:, :out]`. lambda_d `[r]` starts at `d_initial`
(0.1), lambda_b `[out]` at zero, so the model is unchanged at init.

Adapters hold `vera_A`, `vera_B` (frozen: keep them out of the optimizer, e.g. with
`optim.freeze(opt, "vera_.*")`) and `{lambda_d, lambda_b}` per targeted module.
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax import linear as linear_lib
from swiftjax.lora import paths

PROJECTIONS = ("vera_A", "vera_B")


@dataclasses.dataclass(frozen=True)
class VeraConfig:
  r: int = 256
  target_modules: str | tuple[str, ...] = ("q_proj", "v_proj")
  d_initial: float = 0.1

  def __post_init__(self):
    if self.r < 1:
      raise errors.ConfigError(f"VeRA rank r must be >= 1, got {self.r}")
    if isinstance(self.target_modules, list):
      object.__setattr__(self, "target_modules", tuple(self.target_modules))


@flax.struct.dataclass
class VeraWeight:
  """Kernel `[in, out]` + shared slices a `[in, r]`, b `[r, out]` + vectors d `[r]`, b `[out]`."""
  kernel: Any
  vera_a: jax.Array
  vera_b: jax.Array
  lambda_d: jax.Array
  lambda_b: jax.Array


def _vera_matmul(x, w: VeraWeight, dtype):
  a = jax.lax.stop_gradient(w.vera_a).astype(dtype)
  b = jax.lax.stop_gradient(w.vera_b).astype(dtype)
  h = (x.astype(dtype) @ a) * w.lambda_d.astype(dtype)
  return linear_lib.linear(x, w.kernel, dtype) + (h @ b) * w.lambda_b.astype(dtype)


def _vera_dense(w: VeraWeight, dtype=None):
  k = linear_lib.densify(w.kernel, jnp.float32)
  delta = (w.vera_a * w.lambda_d[..., None, :]) @ (w.vera_b * w.lambda_b[..., None, :])
  return (k + delta).astype(dtype or k.dtype)


linear_lib.register_kind(VeraWeight, _vera_matmul, densify=_vera_dense)


def _modules(adapters):
  return sorted({p.rsplit("/", 1)[0] for p in paths.flatten(adapters)
                 if p.rsplit("/", 1)[-1].startswith("lambda_")})


def init(params: Any, rng: jax.Array, cfg: VeraConfig) -> tuple[Any, Any]:
  """`(params, adapters)` with the shared projections and per-module vectors."""
  targets = paths.match_targets(params, cfg.target_modules)
  shapes = {t: paths.get(params, t).shape for t in targets}
  in_max = max(s[-2] for s in shapes.values())
  out_max = max(s[-1] for s in shapes.values())
  ka, kb = jax.random.split(rng)
  # Kaiming-uniform(a=sqrt 5) of PyTorch-layout [r, in] and [out, r]: bound 1/sqrt(fan_in).
  adapters: dict = {
      "vera_A": jax.random.uniform(ka, (in_max, cfg.r), jnp.float32, -in_max ** -0.5,
                                   in_max ** -0.5),
      "vera_B": jax.random.uniform(kb, (cfg.r, out_max), jnp.float32, -cfg.r ** -0.5,
                                   cfg.r ** -0.5)}
  for t, shape in shapes.items():
    *lead, _, d_out = shape
    paths.set_in(adapters, t.rsplit("/", 1)[0], {
        "lambda_d": jnp.full((*lead, cfg.r), cfg.d_initial, jnp.float32),
        "lambda_b": jnp.zeros((*lead, d_out), jnp.float32)})
  return params, adapters


def apply(params: Any, adapters: Any, cfg: VeraConfig) -> Any:
  """Params whose targeted kernels are `VeraWeight`s (shared slices broadcast over layers)."""
  del cfg
  out = paths.copy_dicts(params)
  for module in _modules(adapters):
    kernel = paths.get(params, module + "/kernel")
    vec = paths.get(adapters, module)
    *lead, d_in, d_out = kernel.shape
    a = jnp.broadcast_to(adapters["vera_A"][:d_in], (*lead, d_in, adapters["vera_A"].shape[1]))
    b = jnp.broadcast_to(adapters["vera_B"][:, :d_out],
                         (*lead, adapters["vera_B"].shape[0], d_out))
    paths.set_in(out, module + "/kernel", VeraWeight(kernel, a, b, vec["lambda_d"],
                                                     vec["lambda_b"]))
  return out


def trainable_count(adapters: Any) -> int:
  """Trainable parameters (the vectors; the shared projections are frozen buffers)."""
  return sum(int(x.size) for p, x in paths.flatten(adapters).items()
             if p.rsplit("/", 1)[-1].startswith("lambda_"))
