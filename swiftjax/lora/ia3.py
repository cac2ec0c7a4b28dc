"""IA3 (Liu et al. 2022): learned per-channel rescaling of chosen projections.

Attention-side targets (k, v) scale their *output*: `y = (x W) * l`, `l [out]`; feed-forward
targets scale their *input*: `y = (x * l) W`, `l [in]`. Vectors start at one, so the model is
unchanged at init; they merge exactly into the kernel (`W * l` by column or by row).
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax import linear as linear_lib
from swiftjax.lora import paths


@dataclasses.dataclass(frozen=True)
class IA3Config:
  """PEFT's IA3Config fields: targets and which of them are feed-forward (input-scaled)."""
  target_modules: str | tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
  feedforward_modules: tuple[str, ...] = ("down_proj",)

  def __post_init__(self):
    for name in ("target_modules", "feedforward_modules"):
      if isinstance(getattr(self, name), list):
        object.__setattr__(self, name, tuple(getattr(self, name)))


@flax.struct.dataclass
class IA3Weight:
  """A frozen kernel `[in, out]` with its IA3 vector (`[in]` on input, `[out]` on output)."""
  kernel: Any
  ia3_l: jax.Array
  on_input: bool = flax.struct.field(pytree_node=False, default=False)


def _ia3_matmul(x, w: IA3Weight, dtype):
  if w.on_input:
    return linear_lib.linear(x * w.ia3_l.astype(x.dtype), w.kernel, dtype)
  return linear_lib.linear(x, w.kernel, dtype) * w.ia3_l.astype(dtype)


def _ia3_dense(w: IA3Weight, dtype=None):
  k = linear_lib.densify(w.kernel, jnp.float32)
  l = w.ia3_l.astype(jnp.float32)
  out = k * (l[..., :, None] if w.on_input else l[..., None, :])
  return out.astype(dtype or k.dtype)


linear_lib.register_kind(IA3Weight, _ia3_matmul, densify=_ia3_dense)


def _is_ff(path: str, cfg: IA3Config) -> bool:
  return path.split("/")[-2] in cfg.feedforward_modules


def init(params: Any, rng: jax.Array, cfg: IA3Config) -> tuple[Any, Any]:
  """`(params, adapters)`: adapters hold `{"ia3_l": ones}` per targeted module."""
  del rng  # IA3 starts at exactly one.
  targets = paths.match_targets(params, cfg.target_modules)
  unknown = set(cfg.feedforward_modules) - {t.split("/")[-2] for t in targets}
  if unknown:
    raise errors.ConfigError(f"feedforward_modules {sorted(unknown)} are not among the targets")
  adapters: dict = {}
  for path in targets:
    *lead, d_in, d_out = paths.get(params, path).shape
    n = d_in if _is_ff(path, cfg) else d_out
    paths.set_in(adapters, path.rsplit("/", 1)[0], {"ia3_l": jnp.ones((*lead, n), jnp.float32)})
  return params, adapters


def apply(params: Any, adapters: Any, cfg: IA3Config) -> Any:
  """Params whose targeted kernels are `IA3Weight`s."""
  out = paths.copy_dicts(params)
  for module in sorted({p.rsplit("/", 1)[0] for p in paths.flatten(adapters)}):
    path = module + "/kernel"
    paths.set_in(out, path, IA3Weight(kernel=paths.get(params, path),
                                      ia3_l=paths.get(adapters, module)["ia3_l"],
                                      on_input=_is_ff(path, cfg)))
  return out


def merged(params: Any, adapters: Any, cfg: IA3Config) -> Any:
  """Params with the vectors folded into their kernels (exact)."""
  wrapped = apply(params, adapters, cfg)
  out = paths.copy_dicts(params)
  for module in sorted({p.rsplit("/", 1)[0] for p in paths.flatten(adapters)}):
    path = module + "/kernel"
    w = paths.get(wrapped, path)
    paths.set_in(out, path, _ia3_dense(w, paths.get(params, path).dtype))
  return out
