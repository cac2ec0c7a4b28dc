"""A counter-based hash RNG that numpy, numba, `jnp` and Pallas kernels compute bit-identically.

Samplers draw the j-th random number for node `v` at hop `h` of request `key` as
`hash_u32(key, v, h * STREAM_STRIDE + j)`: no generator state, so every row of a batch (a GPU thread
or a numba `prange` iteration) draws independently and the host and device samplers can be checked
against each other draw for draw. Only 32-bit unsigned arithmetic is used (wrapping multiply, xor,
shifts), which every backend has (JAX runs with 64-bit types off by default).

The mixer is the "lowbias32" integer hash (two multiply-xorshift rounds, bias ~0.17 avalanche);
three inputs are folded in with distinct odd constants so (key, node, counter) triples that differ
in one field give unrelated outputs.
"""

import numpy as np

STREAM_STRIDE = 1 << 16  # counters per hop: a row may draw up to 65536 numbers per hop

_GOLDEN = 0x9E3779B9
_C_NODE = 0x85EBCA6B
_C_CTR = 0xC2B2AE35


def _mix(x, xp):
  """lowbias32 on uint32 values (numpy or jax.numpy arrays, or numba scalars)."""
  x = x ^ (x >> xp.uint32(16))
  x = x * xp.uint32(0x7FEB352D)
  x = x ^ (x >> xp.uint32(15))
  x = x * xp.uint32(0x846CA68B)
  x = x ^ (x >> xp.uint32(16))
  return x


def hash_u32(key, node, counter, xp=np):
  """A uniform uint32 from (key, node, counter); broadcasts like `xp` arithmetic.

  Args:
    key: uint32 request key (one per request/batch; different keys give different samples).
    node: node id(s), any integer dtype (taken modulo 2^32).
    counter: draw index within the node's stream, e.g. `hop * STREAM_STRIDE + j`.
    xp: `numpy` or `jax.numpy`.

  Returns:
    uint32 array of the broadcast shape.
  """
  key = xp.asarray(key).astype(xp.uint32)
  node = xp.asarray(node).astype(xp.uint32)
  counter = xp.asarray(counter).astype(xp.uint32)
  with np.errstate(over="ignore"):
    h = _mix(key ^ xp.uint32(_GOLDEN), xp)
    h = _mix(h ^ (node * xp.uint32(_C_NODE)), xp)
    h = _mix(h ^ (counter * xp.uint32(_C_CTR)), xp)
  return h


def uniform_below(h, n, xp=np):
  """Map uint32 hashes `h` to integers in [0, n) by remainder (bias <= n / 2^32; n >= 1)."""
  return (h % xp.asarray(n).astype(xp.uint32)).astype(xp.int32)
