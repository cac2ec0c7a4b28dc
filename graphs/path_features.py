"""SEG path labels over the whole graph: per-pair label histograms for the full-graph SEG.

`graphs/enclosing.py` labels the nodes of a (capped) enclosing subgraph; on dense graphs such as
ogbl-ddi (mean degree ~500) a cap of 20 nodes per hop keeps a small, noisy sample of the
neighbourhood. This module computes the same kind of path labels exactly, on the whole training
graph, and summarises each target pair by how its nodes are labelled.

For a target pair (u, v) every neighbour w of u (w != v) gets the label

  (c2, bucket(c3)),  c2 = [w is a neighbour of v]   (the u-w-v paths through w: 0 or 1),
                     c3 = #{x : w-x and x-v edges, x not in {u, v}}   (the u-w-x-v paths),

where bucket(0) = 0, bucket(c) = min(1 + floor(log2 c), B - 1) for c >= 1 (B = `num_buckets`:
0, 1, 2-3, 4-7, ...; a dense graph has hundreds of length-3 paths through one node, so counts are
bucketed on a log scale rather than clipped at lambda as in the subgraph labels). The same for the
neighbours of v with u and v swapped. The target edge u-v itself is never used: v is not counted
among u's neighbours and no path runs through it, so a training positive is labelled exactly as
it would be with its edge removed (no label leak). Outputs per pair:

  hist  [P, 2, 2 * B]  hist[p, 0, c2 * B + b] = number of u's neighbours labelled (c2, b);
                       hist[p, 1, ...] the same for v's neighbours;
  paths [P, 2]         the number of simple u-v paths of length 2 (common neighbours) and 3.

Cost: per pair O(deg u + deg v) with the dense [N, N] count matrix A^2 (graphs with N <=
`DENSE_MAX_NODES`: one matmul up front), O(sum over w in N(u) of deg w) without it. Numba,
parallel over pairs; the marker array that holds N(v) is per chunk of pairs.
"""

import numba
from numba import prange
import numpy as np

from graphs.errors import GraphError

DENSE_MAX_NODES = 8192  # A^2 as an [N, N] uint16/int32 matrix up to here (128 MiB at int16).
_CHUNK = 256  # Pairs per parallel work item (one marker array each).


def dense_adjacency(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
  """[N, N] float32 0/1 adjacency of a CSR graph (a self loop in the CSR stays on the diagonal).

  Args:
    indptr: [N + 1] CSR offsets.
    indices: [E] neighbour ids (both directions of every undirected edge).
  """
  n = indptr.size - 1
  a = np.zeros((n, n), np.float32)
  a[np.repeat(np.arange(n), np.diff(indptr)), indices] = 1.0
  return a


def square_counts(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
  """[N, N] int32 A^2 of a CSR graph without multi-edges: entry (a, b) counts a-x-b walks.

  Args:
    indptr: [N + 1] CSR offsets.
    indices: [E] neighbour ids (both directions of every undirected edge).

  Returns:
    [N, N] int32, symmetric for a symmetric graph.
  """
  a = dense_adjacency(indptr, indices)
  # float32 holds every integer below 2^24 exactly; a count is at most N - 2.
  return np.rint(a @ a).astype(np.int32)


@numba.njit(inline="always", cache=True)
def _bucket(c, num_buckets):
  if c <= 0:
    return 0
  b = 1
  while c > 1 and b < num_buckets - 1:
    c >>= 1
    b += 1
  return b


@numba.njit(parallel=True, cache=True)
def _features(indptr, indices, pairs, a2, use_a2, num_buckets, hist, paths):
  n = indptr.size - 1
  num = pairs.shape[0]
  chunks = (num + _CHUNK - 1) // _CHUNK
  for c in prange(chunks):
    mark = np.zeros(n, np.uint8)
    for p in range(c * _CHUNK, min(num, (c + 1) * _CHUNK)):
      for side in range(2):
        s = pairs[p, side]
        t = pairs[p, 1 - side]
        for k in range(indptr[t], indptr[t + 1]):
          mark[indices[k]] = 1
        on_s = mark[s]  # 1 iff the target edge s-t is in the graph (then x = s is skipped).
        two = 0
        three = 0
        for k in range(indptr[s], indptr[s + 1]):
          w = indices[k]
          if w == t:
            continue
          c2 = np.int64(mark[w])
          if use_a2:
            c3 = np.int64(a2[t, w]) - on_s
          else:
            c3 = -np.int64(on_s)
            for j in range(indptr[w], indptr[w + 1]):
              c3 += mark[indices[j]]
          hist[p, side, c2 * num_buckets + _bucket(c3, num_buckets)] += 1.0
          two += c2
          three += c3
        if side == 0:
          paths[p, 0] = two
          paths[p, 1] = three
        for k in range(indptr[t], indptr[t + 1]):
          mark[indices[k]] = 0


class PathFeaturizer:
  """Computes `hist` and `paths` (module docstring) for pairs of one fixed graph."""

  def __init__(self, indptr: np.ndarray, indices: np.ndarray, num_buckets: int = 8,
               dense: bool | None = None):
    """Prepares the graph.

    Args:
      indptr: [N + 1] CSR offsets of an undirected graph without self loops or multi-edges
        (`graphs.subgraph_runner.training_csr`).
      indices: [E] neighbour ids.
      num_buckets: B >= 2, the log-scale buckets of c3.
      dense: use the [N, N] A^2 matrix; None: when N <= DENSE_MAX_NODES.

    Raises:
      GraphError: a malformed CSR or num_buckets < 2.
    """
    self.indptr = np.ascontiguousarray(indptr, np.int64)
    self.indices = np.ascontiguousarray(indices, np.int64)
    n = self.indptr.size - 1
    if n < 1 or self.indptr[0] != 0 or self.indptr[-1] != self.indices.size or np.any(
        np.diff(self.indptr) < 0):
      raise GraphError("PathFeaturizer needs a CSR graph (indptr [N + 1] from 0 to len(indices))")
    if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
      raise GraphError(f"CSR neighbour ids must lie in [0, {n})")
    if num_buckets < 2:
      raise GraphError(f"num_buckets must be >= 2, got {num_buckets}")
    self.num_nodes, self.num_buckets = n, int(num_buckets)
    self.dense = n <= DENSE_MAX_NODES if dense is None else bool(dense)
    self._a2 = (square_counts(self.indptr, self.indices) if self.dense
                else np.zeros((1, 1), np.int32))

  @property
  def hist_dim(self) -> int:
    """2 * B: the label classes per side."""
    return 2 * self.num_buckets

  def __call__(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label histograms and path counts of node pairs.

    Args:
      pairs: [P, 2] node ids.

    Returns:
      (hist [P, 2, 2B] float32, paths [P, 2] float32), see the module docstring.

    Raises:
      GraphError: pairs not of shape [P, 2] or ids outside [0, N).
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
      raise GraphError(f"pairs must have shape [P, 2], got {pairs.shape}")
    pairs = np.ascontiguousarray(pairs, np.int64)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= self.num_nodes):
      raise GraphError(f"pair node ids must lie in [0, {self.num_nodes}), got "
                       f"[{pairs.min()}, {pairs.max()}]")
    hist = np.zeros((pairs.shape[0], 2, self.hist_dim), np.float32)
    paths = np.zeros((pairs.shape[0], 2), np.float32)
    if pairs.shape[0]:
      _features(self.indptr, self.indices, pairs, self._a2, self.dense, self.num_buckets, hist,
                paths)
    return hist, paths
