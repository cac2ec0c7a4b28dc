"""bfloat16 weights stored as raw 16-bit patterns, for fast bf16 inference on CPUs.

XLA:CPU runs a dot that reads a bfloat16 operand an order of magnitude slower than a float32
dot (measured here: 70 ms vs 8 ms for 30 layers of 576x1536 at batch 1), even when the
operand is converted to float32 first. Widening the same bits as integers is fast:
`f32 = bitcast((uint32) bits << 16)` is exact (bf16 is the top half of an f32) and vectorises,
so the model reads half the bytes of float32 and runs float32 dots. `PackedBF16` is that
storage as a weight kind; `pack(params)` converts the bf16 matrices of a params tree.

Products with few activation rows (decode steps, `cpu_matmul.MAX_ROWS`) go to the native kernel
of `swiftjax.kernels.cpu_matmul` where it is available: it widens in registers instead of
writing an f32 copy of the weights, and reads one layer of layer-stacked bits in place (a
`layer` view, `linear.layer_view`). Longer products (prefill) widen and call XLA's dot.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import linear as linear_lib
from swiftjax.kernels import cpu_matmul


@flax.struct.dataclass
class PackedBF16:
  """A bfloat16 matrix `[..., in, out]` kept as uint16 bits (`transposed`: stands for bits^T).

  `layer` (an int32 scalar) makes it a view of one layer of layer-stacked bits `[L, ...]`
  (`linear.layer_view`): the matmul reads that layer in place instead of a copied slice.
  """
  bits: jax.Array
  transposed: bool = flax.struct.field(pytree_node=False, default=False)
  layer: jax.Array | None = None

  @property
  def dtype(self):
    return jnp.bfloat16

  @property
  def shape(self):
    s = self.bits.shape if self.layer is None else self.bits.shape[1:]
    return (*s[:-2], s[-1], s[-2]) if self.transposed else s

  @property
  def ndim(self):
    return self.bits.ndim if self.layer is None else self.bits.ndim - 1

  @property
  def nbytes(self):
    return int(self.bits.nbytes)


def widen(bits: jax.Array) -> jax.Array:
  """uint16 bf16 bit patterns -> the float32 values they encode (exactly)."""
  return jax.lax.bitcast_convert_type(bits.astype(jnp.uint32) << 16, jnp.float32)


def _bits(w: PackedBF16) -> jax.Array:
  """The bits `w` stands for (one layer's, for a layer view)."""
  if w.layer is None:
    return w.bits
  return jax.lax.dynamic_index_in_dim(w.bits, w.layer, keepdims=False)


def _densify(w: PackedBF16, dtype=None):
  out = widen(_bits(w))
  if w.transposed:
    out = jnp.swapaxes(out, -1, -2)
  return out.astype(dtype or jnp.bfloat16)


_CHUNK_ELEMENTS = 1 << 22  # widen at most this many weights at once (stays in cache)


def _chunk(n: int, target: int) -> int:
  """Largest divisor of n that is at most target."""
  return max(d for d in range(1, min(n, target) + 1) if n % d == 0)


def _matmul(x, w: PackedBF16, dtype):
  x32 = x.astype(jnp.float32)
  rows = x.shape[:-1]
  m = int(np.prod(rows))
  if w.ndim == 2 and cpu_matmul.usable(m):
    # Decode-sized batches on a CPU: the native kernel reads the bits once, in place (no f32
    # copy, and no copied slice for a layer view).
    y = cpu_matmul.bf16_matmul(x32.reshape(m, x.shape[-1]), w.bits,
                               0 if w.layer is None else w.layer, w.transposed)
    return y.reshape(*rows, y.shape[-1]).astype(dtype)
  w = PackedBF16(_bits(w), w.transposed)
  if w.bits.ndim == 2 and w.bits.size > _CHUNK_ELEMENTS:
    # A large matrix (an output head): widening it whole writes a huge f32 temporary; widen
    # and multiply it in column chunks instead (measured here: 40 ms -> 3 ms for 49152x576).
    bits = w.bits if w.transposed else w.bits.T          # [out, in]
    out_dim, in_dim = bits.shape
    c = _chunk(out_dim, max(1, _CHUNK_ELEMENTS // 2 // in_dim))
    parts = jax.lax.map(lambda b: jnp.einsum("...i,oi->...o", x32, widen(b)),
                        bits.reshape(out_dim // c, c, in_dim))     # [n, ..., c]
    return jnp.moveaxis(parts, 0, -2).reshape(*x.shape[:-1], out_dim).astype(dtype)
  spec = "...i,oi->...o" if w.transposed else "...i,io->...o"
  return jnp.einsum(spec, x32, widen(w.bits)).astype(dtype)


def _take(w: PackedBF16, ids):
  return widen(jnp.take(_bits(w), ids, axis=0)).astype(jnp.bfloat16)


linear_lib.register_kind(PackedBF16, _matmul, densify=_densify, take=_take,
                         transpose=lambda w: PackedBF16(w.bits, not w.transposed, w.layer),
                         layer_view=lambda w, i: PackedBF16(w.bits, w.transposed, i))


MATRIX_LEAVES = ("kernel", "embedding")


def pack(params: Any, *, donate: bool = False) -> Any:
  """Replaces every bfloat16 `kernel` and `embedding` leaf by a `PackedBF16` (norm scales and
  biases stay as they are: they are small and elementwise).

  Kernels `[..., in, out]` are stored output-major (bits `[..., out, in]`, `transposed`): each
  output's weights are contiguous, the order `swiftjax.kernels.cpu_matmul` streams (twice as
  fast as input-major). XLA's dots for prefill-length inputs run as fast on it (64-row products
  through 30 576 x 1536 layers: 80.8 vs 80.6 ms); at 8-16 rows they were 15-25% slower, which
  is why the kernel takes up to 16 rows. Embedding tables stay `[V, D]` for row lookups (their
  transposed view, a tied output head, is output-major already).

  With `donate`, each bf16 leaf is deleted once its packed copy exists, so packing holds at most
  one extra leaf (the caller must not use `params` afterwards)."""
  def one(path, x):
    name = getattr(path[-1], "key", None)
    if isinstance(x, jax.Array) and x.dtype == jnp.bfloat16 and name in MATRIX_LEAVES:
      bits = jax.lax.bitcast_convert_type(x, jnp.uint16)
      if name == "kernel" and bits.ndim >= 2:
        out = PackedBF16(jnp.swapaxes(bits, -1, -2), transposed=True)
      else:
        out = PackedBF16(bits)
      if donate:
        out.bits.block_until_ready()
        x.delete()
      return out
    return x
  return jax.tree_util.tree_map_with_path(one, params)
