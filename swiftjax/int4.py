"""Weight-only int4, group-wise along the input axis (round-to-nearest; GPTQ fills the same kind).

Format (asymmetric, as the GPTQ paper's min-max quantizer): for a kernel `W [..., in, out]` and
a group size g, rows `[k g, (k + 1) g)` of every output column share a scale and a zero point,
  q = clip(round(W / scale) + zero, 0, 15),    W ~= (q - zero) * scale,
  scale = (max(W, 0) - min(W, 0)) / 15,        zero = round(-min(W, 0) / scale)
so 0 is exact and the rounding error is at most scale / 2. The range always contains 0, as in
GPTQ's quantizer; an all-zero group gets scale 1. When `in` is not a multiple of g the last
group is shorter (SmolLM2's 576 = 4.5 x 128).

Storage (`Int4Weight`): codes two to a byte along the input axis, `packed [..., in/2, out]`
uint8 whose low nibble holds input row r and high nibble row r + in/2 (the two halves of the
input axis, not neighbouring rows: the matmul then reads each half as a plain operand,
`x[:in/2] @ lo + x[in/2:] @ hi`, which XLA:CPU fuses into the dot; interleaved nibbles need a
concatenate that it does not fuse, 20x slower at batch 1); `scale [..., G, out]` float32 and
`zero [..., G, out]` uint8, `G = ceil(in / g)`. At g = 128 that is 4.3 bits per weight.
Asymmetric rather than symmetric: with 16 levels, a symmetric grid wastes one level, and half
its range on groups whose values are skewed.

`linear` widens the codes inside the matmul (no dense float copy is stored).
"""

import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import linear as linear_lib

MAXQ = 15
# Kernels quantized by default: every projection in the layer stack. The LM head (untied
# models) stays float, as in GPTQ: it is one matrix and the most sensitive.
DEFAULT_TARGETS = r"layers/.*/kernel"


@flax.struct.dataclass
class Int4Weight:
  """`packed [..., in/2, out]` uint8 codes, `scale`/`zero [..., G, out]`; see the module doc."""
  packed: jax.Array
  scale: jax.Array
  zero: jax.Array
  group_size: int = flax.struct.field(pytree_node=False, default=128)
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)

  @property
  def shape(self):
    s = self.packed.shape
    return (*s[:-2], 2 * s[-2], s[-1])

  @property
  def ndim(self):
    return self.packed.ndim

  @property
  def nbytes(self):
    return int(self.packed.nbytes + self.scale.nbytes + self.zero.nbytes)


def pack(q: jax.Array) -> jax.Array:
  """Codes `[..., in, out]` in 0..15 (in even) -> `[..., in/2, out]` uint8, two per byte
  (row r in the low nibble, row r + in/2 in the high nibble)."""
  n_in = q.shape[-2]
  if n_in % 2:
    raise errors.ConfigError(f"int4 packing needs an even input size, got {n_in}")
  q = q.astype(jnp.uint8)
  return q[..., :n_in // 2, :] | (q[..., n_in // 2:, :] << 4)


def unpack(packed: jax.Array) -> jax.Array:
  """Inverse of `pack`: `[..., in/2, out]` uint8 -> codes `[..., in, out]` uint8."""
  return jnp.concatenate([packed & 0xF, packed >> 4], axis=-2)


def num_groups(n_in: int, group_size: int) -> int:
  return -(-n_in // group_size)


def expand_groups(a: jax.Array, group_size: int, n_in: int) -> jax.Array:
  """Per-group rows `[..., G, out]` -> per-input-row `[..., in, out]`."""
  # (`total_repeat_length` would stop XLA:CPU fusing this into the matmul: 5x slower decode.)
  return jnp.repeat(a, group_size, axis=-2)[..., :n_in, :]


def group_params(w: jax.Array, group_size: int, maxq: int = MAXQ
                 ) -> tuple[jax.Array, jax.Array]:
  """Min-max asymmetric grid of each group of rows of `w [..., in, out]`.

  Returns:
    `scale [..., G, out]` float32 and `zero [..., G, out]` float32 (integers in 0..maxq).
  """
  w = w.astype(jnp.float32)
  n_in = w.shape[-2]
  g = num_groups(n_in, group_size)
  pad = g * group_size - n_in
  if pad:
    # Pad with copies of the group's first row so min/max are unchanged.
    last = w[..., (g - 1) * group_size:(g - 1) * group_size + 1, :]
    w = jnp.concatenate([w, jnp.repeat(last, pad, axis=-2)], axis=-2)
  w = w.reshape(*w.shape[:-2], g, group_size, w.shape[-1])
  lo = jnp.minimum(jnp.min(w, axis=-2), 0.0)
  hi = jnp.maximum(jnp.max(w, axis=-2), 0.0)
  scale = (hi - lo) / maxq
  scale = jnp.where(scale == 0, 1.0, scale)
  zero = jnp.clip(jnp.round(-lo / scale), 0, maxq)
  return scale, zero


def quantize_codes(w: jax.Array, scale: jax.Array, zero: jax.Array, maxq: int = MAXQ
                   ) -> jax.Array:
  """Codes `clip(round(w / scale) + zero, 0, maxq)` with `scale`, `zero` broadcast to `w`."""
  return jnp.clip(jnp.round(w / scale) + zero, 0, maxq)


def from_codes(q: jax.Array, scale: jax.Array, zero: jax.Array, group_size: int,
               dtype: Any = jnp.float32) -> Int4Weight:
  """An `Int4Weight` from codes `[..., in, out]` and group parameters `[..., G, out]`."""
  return Int4Weight(pack(q), scale.astype(jnp.float32), zero.astype(jnp.uint8), group_size,
                    dtype)


def quantize(kernel: jax.Array, group_size: int = 128) -> Int4Weight:
  """Round-to-nearest int4 of `kernel [..., in, out]` with groups of `group_size` input rows."""
  if group_size < 1:
    raise errors.ConfigError(f"group_size must be >= 1, got {group_size}")
  w = kernel.astype(jnp.float32)
  scale, zero = group_params(w, group_size)
  n_in = w.shape[-2]
  q = quantize_codes(w, expand_groups(scale, group_size, n_in),
                     expand_groups(zero, group_size, n_in))
  return from_codes(q, scale, zero, group_size, kernel.dtype)


def dequantize(w: Int4Weight, dtype: Any = None) -> jax.Array:
  """The dense kernel `[..., in, out]` the codes stand for."""
  n_in = 2 * w.packed.shape[-2]
  q = unpack(w.packed).astype(jnp.float32)
  zero = expand_groups(w.zero.astype(jnp.float32), w.group_size, n_in)
  scale = expand_groups(w.scale, w.group_size, n_in)
  return ((q - zero) * scale).astype(dtype or w.dtype)


def _matmul(x, w: Int4Weight, dtype):
  # One dot per nibble half; XLA fuses each half's widening and scaling into the dot operand,
  # so no dense float kernel is written (batch-1 decode reads 1/8 of the float32 bytes).
  h = w.packed.shape[-2]
  zero = expand_groups(w.zero.astype(jnp.float32), w.group_size, 2 * h)
  scale = expand_groups(w.scale, w.group_size, 2 * h)
  # float32 dots need no `preferred_element_type` (asking for it anyway blocks the fusion).
  acc = None if jnp.dtype(dtype) == jnp.float32 else jnp.promote_types(dtype, jnp.float32)
  y = 0
  for codes, rows in ((w.packed & 0xF, slice(None, h)), (w.packed >> 4, slice(h, None))):
    half = ((codes.astype(jnp.float32) - zero[..., rows, :]) * scale[..., rows, :]).astype(dtype)
    y = y + jnp.einsum("...i,io->...o", x[..., rows].astype(dtype), half,
                       preferred_element_type=acc)
  return y.astype(dtype)


linear_lib.register_kind(Int4Weight, _matmul, densify=dequantize)


def path_name(path) -> str:
  """`layers/mlp/up_proj/kernel` for a `tree_map_with_path` key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def quantize_params(params: Any, group_size: int = 128, targets: str = DEFAULT_TARGETS) -> Any:
  """Params with every kernel whose path matches `targets` replaced by an `Int4Weight`."""
  pattern = re.compile(targets)

  def one(path, x):
    if (isinstance(x, (jax.Array, np.ndarray)) and x.ndim >= 2
        and pattern.fullmatch(path_name(path))):
      return quantize(jnp.asarray(x), group_size)
    return x
  return jax.tree_util.tree_map_with_path(one, params)
