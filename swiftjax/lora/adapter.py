"""Bottleneck adapters (Houlsby et al. 2019), after the attention and MLP blocks.

Each adapted projection's output h gets a residual bottleneck:
    h <- h + act(h W_down + b_down) W_up + b_up,   W_down `[out, dim]`, W_up `[dim, out]`
Targeting `o_proj` and `down_proj` puts one adapter after attention and one after the MLP
(ms-swift's `adapter_length` is `dim`). W_up and b_up start at zero: the model is unchanged
at init. The adapter is nonlinear, so it cannot be merged into the kernel.
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax import linear as linear_lib
from swiftjax.lora import paths

_ACTS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu,
         "silu": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  dim: int = 128
  act: str = "gelu"
  target_modules: str | tuple[str, ...] = ("o_proj", "down_proj")

  def __post_init__(self):
    if self.dim < 1:
      raise errors.ConfigError(f"adapter dim must be >= 1, got {self.dim}")
    if self.act not in _ACTS:
      raise errors.ConfigError(f"adapter act {self.act!r} is not one of {sorted(_ACTS)}")
    if isinstance(self.target_modules, list):
      object.__setattr__(self, "target_modules", tuple(self.target_modules))


@flax.struct.dataclass
class AdapterWeight:
  """Kernel `[in, out]` followed by a bottleneck on its output."""
  kernel: Any
  down: jax.Array
  down_bias: jax.Array
  up: jax.Array
  up_bias: jax.Array
  act: str = flax.struct.field(pytree_node=False, default="gelu")


def _adapter_matmul(x, w: AdapterWeight, dtype):
  h = linear_lib.linear(x, w.kernel, dtype)
  z = _ACTS[w.act](h @ w.down.astype(dtype) + w.down_bias.astype(dtype))
  return h + z @ w.up.astype(dtype) + w.up_bias.astype(dtype)


linear_lib.register_kind(AdapterWeight, _adapter_matmul)


def init(params: Any, rng: jax.Array, cfg: AdapterConfig) -> tuple[Any, Any]:
  """`(params, adapters)` with `{down, down_bias, up, up_bias}` per targeted module."""
  adapters: dict = {}
  for i, path in enumerate(paths.match_targets(params, cfg.target_modules)):
    *lead, _, d_out = paths.get(params, path).shape
    bound = d_out ** -0.5
    adapters_entry = {
        "down": jax.random.uniform(jax.random.fold_in(rng, i), (*lead, d_out, cfg.dim),
                                   jnp.float32, -bound, bound),
        "down_bias": jnp.zeros((*lead, cfg.dim), jnp.float32),
        "up": jnp.zeros((*lead, cfg.dim, d_out), jnp.float32),
        "up_bias": jnp.zeros((*lead, d_out), jnp.float32)}
    paths.set_in(adapters, path.rsplit("/", 1)[0], adapters_entry)
  return params, adapters


def apply(params: Any, adapters: Any, cfg: AdapterConfig) -> Any:
  """Params whose targeted kernels are `AdapterWeight`s."""
  out = paths.copy_dicts(params)
  for module in sorted({p.rsplit("/", 1)[0] for p in paths.flatten(adapters)}):
    a = paths.get(adapters, module)
    paths.set_in(out, module + "/kernel", AdapterWeight(
        paths.get(params, module + "/kernel"), a["down"], a["down_bias"], a["up"],
        a["up_bias"], cfg.act))
  return out
