"""Weight-only int8 with one scale per output channel (round-to-nearest).

`Int8Weight` stores `q [..., in, out]` int8 and `scale [..., out]` float32 with
`W ~= q * scale`, `scale = max|W[:, o]| / 127`. It is a weight kind: `linear` widens q to the
compute dtype inside the matmul (cheap on XLA:CPU, unlike bf16 operands), so decode reads a
quarter of the float32 bytes. `quantize_params` converts every targeted kernel (and, for tied
models, leaves the embedding table in float: it is also the input lookup).
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import linear as linear_lib


@flax.struct.dataclass
class Int8Weight:
  """`q [..., in, out]` int8 and per-output-channel `scale [..., out]` float32."""
  q: jax.Array
  scale: jax.Array
  dtype: Any = flax.struct.field(pytree_node=False, default=jnp.float32)

  @property
  def shape(self):
    return self.q.shape

  @property
  def ndim(self):
    return self.q.ndim

  @property
  def nbytes(self):
    return int(self.q.nbytes + self.scale.nbytes)


def quantize(kernel: jax.Array) -> Int8Weight:
  """Round-to-nearest int8 of `kernel [..., in, out]`, one scale per output channel."""
  w = kernel.astype(jnp.float32)
  scale = jnp.max(jnp.abs(w), axis=-2) / 127.0
  q = jnp.clip(jnp.round(w / jnp.where(scale == 0, 1.0, scale)[..., None, :]), -127, 127)
  return Int8Weight(q.astype(jnp.int8), scale, kernel.dtype)


def dequantize(w: Int8Weight, dtype: Any = None) -> jax.Array:
  return (w.q.astype(jnp.float32) * w.scale[..., None, :]).astype(dtype or w.dtype)


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
  padded = w.q.ndim == 2 and m < MIN_ROWS
  if padded:
    x = jnp.pad(x.reshape(m, x.shape[-1]), ((0, MIN_ROWS - m), (0, 0)))
  y = jnp.einsum("...i,io->...o", x.astype(dtype), w.q.astype(dtype),
                 preferred_element_type=jnp.promote_types(dtype, jnp.float32))
  y = (y * w.scale.astype(y.dtype)).astype(dtype)
  return y[:m].reshape(*rows, y.shape[-1]) if padded else y


linear_lib.register_kind(Int8Weight, _matmul, densify=dequantize)


def quantize_params(params: Any) -> Any:
  """Params with every `kernel` leaf (2-D or layer-stacked) replaced by an `Int8Weight`."""
  def one(path, x):
    if getattr(path[-1], "key", None) == "kernel" and isinstance(x, jax.Array) and x.ndim >= 2:
      return quantize(x)
    return x
  return jax.tree_util.tree_map_with_path(one, params)
