"""QLoRA's base-weight format: 4-bit NormalFloat (NF4) with double quantization.

Facts from Dettmers et al. 2023 (QLoRA) and the bitsandbytes layout:
  * NF4 code book: 16 values, the quantiles of N(0, 1) built from 8 positive and 7 negative
    normal quantiles (offset 0.9677) plus an exact zero, normalised to [-1, 1].
  * Block-wise absmax: each block of 64 consecutive input weights of one output unit (a row of
    PyTorch's `[out, in]` weight) shares one absmax scale.
  * Double quantization: the float32 absmax values, minus their mean, are quantized again to
    8 bits in blocks of 256 (QLoRA's "quantize the quantization constants").
    Here the second level is symmetric int8 with a float32 scale per 256-block (bitsandbytes
    uses its dynamic 8-bit map there; the saving, ~0.37 bits/param, is the same).
The kernel is `NF4Weight`, a weight kind `linear` understands: it is dequantized to the compute
dtype right before the matmul, so a `LoraWeight` whose base is an `NF4Weight` is QLoRA.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import linear as linear_lib
from swiftjax.lora import paths

NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)

BLOCK = 64
DOUBLE_BLOCK = 256


@flax.struct.dataclass
class NF4Weight:
  """An NF4-quantized kernel `[..., in, out]` (leading layer axes allowed).

  Fields:
    packed: uint8 `[..., in // 2, out]`, two 4-bit codes per byte (even input rows in the low
      nibble).
    absmax_q: int8 `[..., in // 64, out]`, double-quantized block scales.
    absmax_scale: float32 `[..., n_pad // 256]`, scale of each 256-block of absmax_q.
    absmax_offset: float32 `[...]`, the mean subtracted from absmax before quantizing.
    dtype: dtype the kernel had (static).
  """
  packed: jax.Array
  absmax_q: jax.Array
  absmax_scale: jax.Array
  absmax_offset: jax.Array
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)

  @property
  def shape(self) -> tuple[int, ...]:
    *lead, half, out = self.packed.shape
    return (*lead, 2 * half, out)

  @property
  def ndim(self) -> int:
    return self.packed.ndim

  @property
  def nbytes(self) -> int:
    return sum(int(x.nbytes) for x in (self.packed, self.absmax_q, self.absmax_scale,
                                       self.absmax_offset))


def quantize(kernel: jax.Array) -> NF4Weight:
  """NF4 with double quantization of `kernel [..., in, out]` (`in` a multiple of 64)."""
  *lead, d_in, d_out = kernel.shape
  if d_in % BLOCK:
    raise errors.ConfigError(f"NF4 needs the input dimension to be a multiple of {BLOCK}, "
                             f"got a kernel of shape {tuple(kernel.shape)}")
  w = kernel.astype(jnp.float32).reshape(*lead, d_in // BLOCK, BLOCK, d_out)
  absmax = jnp.max(jnp.abs(w), axis=-2)                             # [..., in/64, out]
  normed = w / jnp.where(absmax == 0, 1.0, absmax)[..., None, :]
  codes = jnp.argmin(jnp.abs(normed[..., None] - NF4_CODE), axis=-1).astype(jnp.uint8)
  codes = codes.reshape(*lead, d_in, d_out)
  packed = codes[..., 0::2, :] | (codes[..., 1::2, :] << 4)
  # Second level: absmax - mean, symmetric int8 in blocks of 256.
  flat = absmax.reshape(*lead, -1)
  offset = jnp.mean(flat, axis=-1)
  centered = flat - offset[..., None]
  n = flat.shape[-1]
  n_pad = -(-n // DOUBLE_BLOCK) * DOUBLE_BLOCK
  centered = jnp.pad(centered, [(0, 0)] * len(lead) + [(0, n_pad - n)])
  blocks = centered.reshape(*lead, n_pad // DOUBLE_BLOCK, DOUBLE_BLOCK)
  scale = jnp.max(jnp.abs(blocks), axis=-1) / 127.0
  q = jnp.round(blocks / jnp.where(scale == 0, 1.0, scale)[..., None]).astype(jnp.int8)
  absmax_q = q.reshape(*lead, n_pad)[..., :n].reshape(absmax.shape)
  return NF4Weight(packed=packed, absmax_q=absmax_q, absmax_scale=scale,
                   absmax_offset=offset, dtype=kernel.dtype)


def dequantize(w: NF4Weight, dtype: Any = None) -> jax.Array:
  """The kernel `[..., in, out]` that `w` encodes, in `dtype` (default: the original dtype)."""
  *lead, half, d_out = w.packed.shape
  d_in = 2 * half
  n = (d_in // BLOCK) * d_out
  q = w.absmax_q.reshape(*lead, -1).astype(jnp.float32)
  n_pad = w.absmax_scale.shape[-1] * DOUBLE_BLOCK
  q = jnp.pad(q, [(0, 0)] * len(lead) + [(0, n_pad - n)])
  absmax = (q.reshape(*lead, -1, DOUBLE_BLOCK) * w.absmax_scale[..., None]).reshape(*lead, n_pad)
  absmax = (absmax[..., :n] + w.absmax_offset[..., None]).reshape(*lead, d_in // BLOCK, d_out)
  low, high = w.packed & 0xF, w.packed >> 4
  codes = jnp.stack([low, high], axis=-2).reshape(*lead, d_in, d_out)
  values = jnp.asarray(NF4_CODE)[codes]
  out = values.reshape(*lead, d_in // BLOCK, BLOCK, d_out) * absmax[..., None, :]
  return out.reshape(*lead, d_in, d_out).astype(dtype or w.dtype)


def _nf4_matmul(x: jax.Array, w: NF4Weight, dtype: Any) -> jax.Array:
  return linear_lib.linear(x, dequantize(w, dtype), dtype)


linear_lib.register_kind(NF4Weight, _nf4_matmul, densify=dequantize)


def quantize_params(params: Any, target_modules: Any = "all-linear") -> Any:
  """Params with every targeted kernel replaced by its `NF4Weight` (QLoRA's frozen base)."""
  out = paths.copy_dicts(params)
  for path in paths.match_targets(params, target_modules):
    paths.set_in(out, path, quantize(paths.get(params, path)))
  return out


def nf4_axes(params: Any, param_axes: Any) -> Any:
  """Logical axes for a params tree holding `NF4Weight`s: packed codes and block scales
  follow the kernel's axes; second-level scales are replicated within a layer."""
  out = paths.copy_dicts(param_axes)
  flat = paths.flatten(params)
  for path in {p.rsplit("/", 1)[0] for p in flat if p.endswith("/packed")}:
    *lead, ax_in, ax_out = paths.get(param_axes, path)
    paths.set_in(out, path, NF4Weight(
        packed=(*lead, ax_in, ax_out), absmax_q=(*lead, ax_in, ax_out),
        absmax_scale=(*lead, None), absmax_offset=tuple(lead),
        dtype=paths.get(params, path).dtype))
  return out
