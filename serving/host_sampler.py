"""k-hop uniform neighbour sampling without replacement on the host (numba, parallel over nodes).

The sampling rule is shared with the device sampler draw for draw, so the two give identical
arrays for the same (graph, fanouts, seeds, key). Expanding node `v` at hop `h` (0-based), with
degree `d` and fanout `k = fanouts[h]`:

  - `d <= k`: take positions 0..d-1 in order;
  - else Floyd's algorithm (a uniform k-subset from k draws, no rejection loop):
      chosen = []
      for i in 0..k-1:
        j = d - k + i
        t = hash_u32(key, v, h * STREAM_STRIDE + i) % (j + 1)   # uint32 remainder
        chosen.append(j if t in chosen else t)

The neighbours are `indices[indptr[v] + pos]` in append order. Node and edge order follow
`serving/subgraph.py`: seeds first, then first occurrence hop by hop; edges in (hop, expanded node
local id, draw order). Every draw is an edge, including draws of nodes already in the sample
(they are not expanded again).

Because a node's draws depend only on (key, node, hop), the hop loop parallelises over the frontier
without coordination: the draws run in a `prange`, and only the first-occurrence relabelling (a
cheap scan through an O(num_nodes) `local_of` table) is serial.
"""

import threading

import numba
import numpy as np

from graphs.errors import GraphError
from serving import rng
from serving import subgraph as subgraph_lib
from serving.graph import CSRGraph

_MASK32 = np.uint64(0xFFFFFFFF)
_GOLDEN = np.uint64(rng._GOLDEN)  # pylint: disable=protected-access
_C_NODE = np.uint64(rng._C_NODE)  # pylint: disable=protected-access
_C_CTR = np.uint64(rng._C_CTR)  # pylint: disable=protected-access
_M1 = np.uint64(0x7FEB352D)
_M2 = np.uint64(0x846CA68B)
_S15 = np.uint64(15)
_S16 = np.uint64(16)

# Hops with fewer draws than this run serially. A prange launch costs ~10 us on an idle machine,
# and far more on a busy one (the launch waits for its slowest thread; with OpenMP the idle workers
# also spin and steal cycles from the caller), while 16K draws take ~0.3 ms serially. So batch-1
# requests (<= 915 draws at fanouts [15, 10, 5]) never pay for threads; large batches do use them.
PARALLEL_MIN_DRAWS = 16384
_NEVER_PARALLEL = np.iinfo(np.int64).max


# All hash arithmetic is done in uint64 holding values < 2^32 and masked after each multiply: numba
# promotes uint32 * uint32 to a 64-bit type, and mixing unsigned with signed literals would give
# float64, so every constant is a np.uint64.
@numba.njit(inline="always", cache=True)
def _mix(x):
  x = x ^ (x >> _S16)
  x = (x * _M1) & _MASK32
  x = x ^ (x >> _S15)
  x = (x * _M2) & _MASK32
  x = x ^ (x >> _S16)
  return x


@numba.njit(inline="always", cache=True)
def hash_u32_scalar(key, node, counter):
  """`rng.hash_u32` for scalars inside numba code: a uint64 holding the uint32 result.

  Args:
    key, node, counter: integers (taken modulo 2^32, as `rng.hash_u32` does).
  """
  k = np.uint64(key) & _MASK32
  v = np.uint64(node) & _MASK32
  c = np.uint64(counter) & _MASK32
  h = _mix(k ^ _GOLDEN)
  h = _mix(h ^ ((v * _C_NODE) & _MASK32))
  h = _mix(h ^ ((c * _C_CTR) & _MASK32))
  return h


@numba.njit(cache=True)
def hash_u32_array(key, nodes, counters):
  """Vector wrapper of `hash_u32_scalar` (for tests): [n] uint32 from [n] nodes and counters."""
  out = np.empty(nodes.size, np.uint32)
  for i in range(nodes.size):
    out[i] = np.uint32(hash_u32_scalar(key, nodes[i], counters[i]))
  return out


@numba.njit(inline="always", cache=True)
def _draw_node(indptr, indices, v, k, key, hop, out, off):
  """Writes node v's sampled neighbours (global ids) to out[off : off + min(deg, k)]."""
  start = indptr[v]
  d = indptr[v + 1] - start
  if d <= k:
    for p in range(d):
      out[off + p] = indices[start + p]
    return
  base = np.uint64(hop) * np.uint64(rng.STREAM_STRIDE)
  # Floyd: positions are kept in out[off:off+i] (as positions) until all k are chosen; the
  # membership test is a linear scan, cheap for the fanouts GNNs use (k <= a few dozen).
  for i in range(k):
    j = d - k + i
    t = np.int64(hash_u32_scalar(key, v, base + np.uint64(i)) % np.uint64(j + 1))
    for q in range(i):
      if out[off + q] == t:
        t = j
        break
    out[off + i] = t
  for i in range(k):
    out[off + i] = indices[start + out[off + i]]


@numba.njit(parallel=True, cache=True, nogil=True)
def _draw_frontier_parallel(indptr, indices, nodes, lo, offsets, k, key, hop, drawn, receivers,
                            e0):
  for i in numba.prange(offsets.size - 1):
    _draw_node(indptr, indices, nodes[lo + i], k, key, hop, drawn, offsets[i])
    for t in range(offsets[i], offsets[i + 1]):
      receivers[e0 + t] = lo + i


@numba.njit(cache=True, nogil=True)
def _draw_frontier_serial(indptr, indices, nodes, lo, offsets, k, key, hop, drawn, receivers, e0):
  for i in range(offsets.size - 1):
    _draw_node(indptr, indices, nodes[lo + i], k, key, hop, drawn, offsets[i])
    for t in range(offsets[i], offsets[i + 1]):
      receivers[e0 + t] = lo + i


@numba.njit(cache=True, nogil=True)
def _grow(arr, need):
  if arr.size >= need:
    return arr
  new = np.empty(max(need, 2 * arr.size), arr.dtype)
  new[:arr.size] = arr
  return new


@numba.njit(cache=True, nogil=True)
def _sample_impl(indptr, indices, seeds, fanouts, key, local_of, par_min):
  """One k-hop sample; `local_of` ([N] int32, all -1) is used as scratch and left all -1.

  A hop with at least `par_min` draws runs its draws in parallel (the result does not depend on it).

  Returns:
    (nodes [n] int32, senders [e] int32, receivers [e] int32, error, bad_id): error 0 is success,
    1 a seed out of range, 2 a repeated seed (`bad_id` names it; the arrays are then empty).
  """
  num_nodes = local_of.size
  num_seeds = seeds.size
  nodes = np.empty(max(16, 2 * num_seeds), np.int32)
  for i in range(num_seeds):
    s = seeds[i]
    error = 0
    if s < 0 or s >= num_nodes:
      error = 1
    elif local_of[s] != -1:
      error = 2
    if error:
      for q in range(i):  # leave the scratch clean for the next call
        local_of[nodes[q]] = -1
      empty = np.empty(0, np.int32)
      return empty, empty, empty, error, np.int64(s)
    local_of[s] = i
    nodes[i] = s
  senders = np.empty(16, np.int32)
  receivers = np.empty(16, np.int32)
  drawn = np.empty(16, indices.dtype)
  lo, hi, n, e = 0, num_seeds, num_seeds, 0
  for hop in range(fanouts.size):
    k = fanouts[hop]
    nf = hi - lo
    if nf == 0:
      break
    offsets = np.empty(nf + 1, np.int64)
    offsets[0] = 0
    for i in range(nf):
      v = nodes[lo + i]
      offsets[i + 1] = offsets[i] + min(indptr[v + 1] - indptr[v], k)
    m = offsets[nf]
    senders = _grow(senders, e + m)
    receivers = _grow(receivers, e + m)
    drawn = _grow(drawn, m)
    nodes = _grow(nodes, n + m)
    if m >= par_min:
      _draw_frontier_parallel(indptr, indices, nodes, lo, offsets, k, key, hop, drawn, receivers, e)
    else:
      _draw_frontier_serial(indptr, indices, nodes, lo, offsets, k, key, hop, drawn, receivers, e)
    # First-occurrence relabelling must scan in edge order, so it stays serial (one table lookup
    # per edge; the table is hot in cache for the graphs we serve).
    for t in range(m):
      u = drawn[t]
      loc = local_of[u]
      if loc == -1:
        loc = n
        local_of[u] = n
        nodes[n] = u
        n += 1
      senders[e + t] = loc
    e += m
    lo, hi = hi, n
  for q in range(n):
    local_of[nodes[q]] = -1
  return nodes[:n], senders[:e], receivers[:e], 0, np.int64(0)


@numba.njit(parallel=True, cache=True)
def _single_seed_edge_counts(indptr, indices, fanouts, key, num_chunks):
  """[N] int64: edges of the sample with node v as the only seed, for every v.

  Chunks of nodes run in parallel, each with its own [N] scratch table (num_chunks * N * 4 bytes).
  """
  num_nodes = indptr.size - 1
  counts = np.zeros(num_nodes, np.int64)
  chunk = (num_nodes + num_chunks - 1) // num_chunks
  for c in numba.prange(num_chunks):
    local_of = np.full(num_nodes, -1, np.int32)
    seed = np.empty(1, np.int64)
    for v in range(c * chunk, min(num_nodes, (c + 1) * chunk)):
      seed[0] = v
      _, senders, _, _, _ = _sample_impl(indptr, indices, seed, fanouts, key, local_of,
                                         _NEVER_PARALLEL)
      counts[v] = senders.size
  return counts


def _check_fanouts(fanouts) -> np.ndarray:
  arr = np.asarray(list(fanouts), dtype=np.int64)
  if arr.ndim != 1 or arr.size == 0 or (arr < 1).any() or (arr > rng.STREAM_STRIDE).any():
    raise GraphError(f"fanouts must be a non-empty list of integers in [1, {rng.STREAM_STRIDE}], "
                     f"got {list(fanouts)}")
  return arr


def _as_seeds(seeds) -> np.ndarray:
  """[B] contiguous int64 (a no-op for such arrays: this is on the batch-1 latency path)."""
  seeds = np.asarray(seeds)
  if seeds.dtype != np.int64 or seeds.ndim != 1 or not seeds.flags.c_contiguous:
    if seeds.size and not np.issubdtype(seeds.dtype, np.integer):
      raise GraphError(f"seed node ids must be integers, got dtype {seeds.dtype}")
    seeds = np.ascontiguousarray(seeds.ravel(), dtype=np.int64)
  return seeds


def _normalize_key(key) -> int:
  # rng.hash_u32 takes the key modulo 2^32 (numpy's uint32 cast); Python's % does the same for
  # negative keys and for keys beyond int64.
  return int(key) % (1 << 32)


class HostSampler:
  """A k-hop neighbour sampler over one graph, with reusable scratch space.

  One call at a time per object: `sample` holds a lock around the scratch table (`local_of`),
  so threads may share an object but do not overlap on it; use one object per thread for
  concurrency (the numba code releases the GIL). Hops with many draws use numba's thread pool
  (`numba.set_num_threads`); with the OpenMP layer on a busy machine, set
  `OMP_WAIT_POLICY=PASSIVE` so idle workers do not spin on the cores the caller needs.

  Attributes:
    graph: the CSR graph.
    fanouts: [num_hops] int64 neighbours drawn per expanded node, per hop.
  """

  def __init__(self, graph: CSRGraph, fanouts, warmup: bool = True,
               parallel_min_draws: int = PARALLEL_MIN_DRAWS):
    """Builds the sampler.

    Args:
      graph: the CSR graph (at most 2^31 - 1 nodes).
      fanouts: neighbours per expanded node per hop, e.g. [15, 10, 5].
      warmup: compile (or load from numba's cache) and start the thread pool now, so the first
        `sample` call is not slowed by it.
      parallel_min_draws: hops with at least this many draws use numba's threads.
    """
    if graph.num_nodes > np.iinfo(np.int32).max:
      raise GraphError(f"{graph.num_nodes} nodes do not fit int32 local ids")
    self.graph = graph
    self.fanouts = _check_fanouts(fanouts)
    self.parallel_min_draws = int(parallel_min_draws)
    # local_of[v] is v's local id during a call, -1 otherwise. Only the entries a call touched
    # are reset, so a batch-1 call costs O(sample), not O(num_nodes).
    self._local_of = np.full(graph.num_nodes, -1, np.int32)
    self._lock = threading.Lock()
    if warmup:
      self.warmup()

  def warmup(self) -> None:
    """Compiles both the serial and parallel paths for this graph's index dtypes."""
    if self.graph.num_nodes == 0:
      return
    with self._lock:
      _sample_impl(self.graph.indptr, self.graph.indices, np.zeros(1, np.int64), self.fanouts, 0,
                   self._local_of, 0)
      _sample_impl(self.graph.indptr, self.graph.indices, np.zeros(1, np.int64), self.fanouts, 0,
                   self._local_of, _NEVER_PARALLEL)

  def sample_arrays(self, seeds, key: int):
    """The unpadded sample.

    Args:
      seeds: [B] distinct node ids.
      key: request key (any integer, taken modulo 2^32).

    Returns:
      nodes [n] int32 global ids, senders [e] int32, receivers [e] int32 (local ids).

    Raises:
      GraphError: a seed is out of range or repeated.
    """
    seeds = _as_seeds(seeds)
    with self._lock:
      nodes, senders, receivers, error, bad = _sample_impl(
          self.graph.indptr, self.graph.indices, seeds, self.fanouts, _normalize_key(key),
          self._local_of, self.parallel_min_draws)
    if error == 1:
      raise GraphError(f"seed node id {int(bad)} is out of range: the graph has "
                       f"{self.graph.num_nodes} nodes")
    if error == 2:
      raise GraphError(f"seed node id {int(bad)} is repeated: seeds must be distinct")
    return nodes, senders, receivers

  def sample(self, seeds, key: int, max_nodes: int | None = None,
             max_edges: int | None = None) -> subgraph_lib.SampledSubgraph:
    """A padded k-hop sample (numpy arrays) in `serving/subgraph.py`'s layout.

    Args:
      seeds: [B] distinct node ids in [0, num_nodes).
      key: request key; the same key gives the same sample, different keys independent ones.
      max_nodes, max_edges: padded sizes; default `bucket(num_nodes + 1)` and
        `bucket(num_edges)` (a spare node slot is always kept for padded edges to point at).

    Returns:
      SampledSubgraph with nodes [max_nodes], senders/receivers/edge_mask [max_edges].

    Raises:
      GraphError: a bad seed, or the sample exceeds the given caps.
    """
    seeds = _as_seeds(seeds)
    nodes, senders, receivers = self.sample_arrays(seeds, key)
    n, e = nodes.size, senders.size
    max_nodes = subgraph_lib.bucket(n + 1) if max_nodes is None else int(max_nodes)
    max_edges = subgraph_lib.bucket(e) if max_edges is None else int(max_edges)
    if n + 1 > max_nodes or e > max_edges:
      raise GraphError(f"sample has {n} nodes and {e} edges, over the caps max_nodes={max_nodes} "
                       f"(one slot kept for padding) and max_edges={max_edges}")
    return pad(nodes, senders, receivers, seeds.size, max_nodes, max_edges)


def pad(nodes, senders, receivers, num_seeds: int, max_nodes: int,
        max_edges: int) -> subgraph_lib.SampledSubgraph:
  """Pads an unpadded sample to [max_nodes] / [max_edges] (padded edges point at the last slot)."""
  n, e = nodes.size, senders.size
  nodes_p = np.full(max_nodes, -1, np.int32)
  nodes_p[:n] = nodes
  senders_p = np.full(max_edges, max_nodes - 1, np.int32)
  senders_p[:e] = senders
  receivers_p = np.full(max_edges, max_nodes - 1, np.int32)
  receivers_p[:e] = receivers
  node_mask = np.zeros(max_nodes, bool)
  node_mask[:n] = True
  edge_mask = np.zeros(max_edges, bool)
  edge_mask[:e] = True
  return subgraph_lib.SampledSubgraph(
      nodes=nodes_p, senders=senders_p, receivers=receivers_p, node_mask=node_mask,
      edge_mask=edge_mask, num_nodes=np.asarray(n, np.int32), num_edges=np.asarray(e, np.int32),
      num_seeds=np.asarray(num_seeds, np.int32))


def single_seed_edge_counts(graph: CSRGraph, fanouts, key: int) -> np.ndarray:
  """[N] int64: for every node v, the edges of one sample with v as the only seed (same rule and
  key as `HostSampler(graph, fanouts).sample([v], key)`). torch-quiver's single-draw size proxy."""
  fanouts = _check_fanouts(fanouts)
  if graph.num_nodes == 0:
    return np.zeros(0, np.int64)
  num_chunks = max(1, min(numba.get_num_threads() * 4, graph.num_nodes))
  return _single_seed_edge_counts(graph.indptr, graph.indices, fanouts, _normalize_key(key),
                                  num_chunks)
