"""Weight-only int8 with one scale per output channel (round-to-nearest).

`Int8Weight` stores `q [..., in, out]` int8 and `scale [..., out]` float32 with
`W ~= q * scale`, `scale = max|W[:, o]| / 127`. It is a weight kind: `linear` widens q to the
compute dtype inside the matmul (cheap on XLA:CPU, unlike bf16 operands), so decode reads a
quarter of the float32 bytes. `quantize_params` converts every targeted kernel (and, for tied
models, leaves the embedding table in float: it is also the input lookup).

For inference on a CPU, `output_major` stores the codes `[..., out, in]` (`transposed`): products
with few rows (decode steps) then run on the native kernel of `swiftjax.kernels.cpu_matmul`, which
widens the codes in registers and reads one layer of layer-stacked codes in place (a layer view,
`linear.layer_view`). `export` and `dequantize` read either layout.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import linear as linear_lib
from swiftjax.kernels import cpu_matmul


@flax.struct.dataclass
class Int8Weight:
  """`q [..., in, out]` int8 (`[..., out, in]` if `transposed`) and per-output-channel
  `scale [..., out]` float32. `shape` is the matrix's `[..., in, out]` in either layout.

  `layer` (an int32 scalar) makes it a view of one layer of layer-stacked `q [L, ...]` and
  `scale [L, out]` (`linear.layer_view`, output-major weights only): the kernel reads that
  layer in place instead of a copied slice.
  """
  q: jax.Array
  scale: jax.Array
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)
  transposed: bool = flax.struct.field(pytree_node=False, default=False)
  layer: jax.Array | None = None

  @property
  def shape(self):
    s = self.q.shape if self.layer is None else self.q.shape[1:]
    return (*s[:-2], s[-1], s[-2]) if self.transposed else s

  @property
  def ndim(self):
    return self.q.ndim if self.layer is None else self.q.ndim - 1

  @property
  def nbytes(self):
    return int(self.q.nbytes + self.scale.nbytes)


def quantize(kernel: jax.Array) -> Int8Weight:
  """Round-to-nearest int8 of `kernel [..., in, out]`, one scale per output channel."""
  w = kernel.astype(jnp.float32)
  scale = jnp.max(jnp.abs(w), axis=-2) / 127.0
  q = jnp.clip(jnp.round(w / jnp.where(scale == 0, 1.0, scale)[..., None, :]), -127, 127)
  return Int8Weight(q.astype(jnp.int8), scale, kernel.dtype)


def _resolved(w: Int8Weight) -> Int8Weight:
  """`w` without a layer view (that layer's codes and scales sliced out)."""
  if w.layer is None:
    return w
  pick = lambda a: jax.lax.dynamic_index_in_dim(a, w.layer, keepdims=False)
  return Int8Weight(pick(w.q), pick(w.scale), w.dtype, w.transposed)


def input_major_codes(w: Int8Weight) -> jax.Array:
  """The codes `[..., in, out]` whatever the layout (a layer view's layer)."""
  w = _resolved(w)
  return jnp.swapaxes(w.q, -1, -2) if w.transposed else w.q


def dequantize(w: Int8Weight, dtype: Any = None) -> jax.Array:
  w = _resolved(w)
  return (input_major_codes(w).astype(jnp.float32) * w.scale[..., None, :]).astype(
      dtype or w.dtype)


# Fewer activation rows than this are padded up to it (see `_matmul`).
MIN_ROWS = 4


def _matmul(x, w: Int8Weight, dtype):
  # Scale after the dot: (x @ q) * s == x @ (q * s) per output channel.
  # On XLA:CPU a product of fewer than ~4 rows is not given to its matmul library (YNNPACK)
  # but to a fallback dot that is slow with a widened int8 operand: 90 int8 576x1536 kernels
  # took 105 ms for one row and 8.5 ms for four (2-core CPU). So 1-3 rows are padded with
  # zero rows up to MIN_ROWS (bench_decode, SmolLM2 int8 with the KV-cache change beside it:
  # 35.9 -> 38.4 tok/s at batch 1, 153.5 -> 203.5 at batch 8).
  rows = x.shape[:-1]
  m = int(np.prod(rows))
  if w.transposed and w.ndim == 2 and cpu_matmul.usable(m):
    # Decode-sized batches on a CPU: the native kernel reads the codes once, in place.
    # SmolLM2-135M int8 decode on 2 AVX-512 cores, tok/s, kernel on output-major codes vs XLA's
    # dot on input-major ones (what this module did before): batch 1 126-129 vs 73, batch 4
    # 288-304 vs 232, batch 8 391-431 vs 391, batch 16 468-495 vs 608. XLA's dot on the
    # output-major codes was slower still at every batch (323, 461 at batches 8, 16).
    y = cpu_matmul.int8_matmul(x.astype(jnp.float32).reshape(m, x.shape[-1]), w.q, w.scale,
                               0 if w.layer is None else w.layer, True)
    return y.reshape(*rows, y.shape[-1]).astype(dtype)
  w = _resolved(w)
  padded = w.q.ndim == 2 and m < MIN_ROWS
  if padded:
    x = jnp.pad(x.reshape(m, x.shape[-1]), ((0, MIN_ROWS - m), (0, 0)))
  y = jnp.einsum("...i,oi->...o" if w.transposed else "...i,io->...o", x.astype(dtype),
                 w.q.astype(dtype), preferred_element_type=jnp.promote_types(dtype, jnp.float32))
  y = (y * w.scale.astype(y.dtype)).astype(dtype)
  return y[:m].reshape(*rows, y.shape[-1]) if padded else y


linear_lib.register_kind(Int8Weight, _matmul, densify=dequantize,
                         layer_view=lambda w, i: w.replace(layer=i),
                         viewable=lambda w: w.transposed)


def quantize_params(params: Any) -> Any:
  """Params with every `kernel` leaf (2-D or layer-stacked) replaced by an `Int8Weight`."""
  def one(path, x):
    if getattr(path[-1], "key", None) == "kernel" and isinstance(x, jax.Array) and x.ndim >= 2:
      return quantize(x)
    return x
  return jax.tree_util.tree_map_with_path(one, params)


def output_major(params: Any, *, donate: bool = False) -> Any:
  """Params with every `Int8Weight` stored output-major (codes `[..., out, in]`), the layout
  the CPU kernel streams; `infer.load` applies it on a CPU backend. With `donate`, each
  input-major code array is deleted once its copy exists (the caller must not use `params`)."""
  def one(x):
    if not isinstance(x, Int8Weight) or x.transposed or x.layer is not None or x.q.ndim < 2:
      return x
    out = Int8Weight(jnp.swapaxes(x.q, -1, -2), x.scale, x.dtype, transposed=True)
    if donate and isinstance(x.q, jax.Array):
      out.q.block_until_ready()
      x.q.delete()
    return out
  return jax.tree.map(one, params, is_leaf=lambda x: isinstance(x, Int8Weight))
