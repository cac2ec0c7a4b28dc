"""Enclosing subgraphs of target pairs and their structural labels (SEG path labels, SEAL DRNL).

This is the cost centre of SEAL-style link prediction, so everything per pair runs in numba,
parallel over pairs (`prange`); per-pair outputs are concatenated through counts + offsets
(a counting pass, an exclusive cumsum, then a writing pass into the final arrays).

Extraction (`extract`), for a target pair (u, v) of a simple undirected graph given as a symmetric
CSR (`indptr [num_nodes + 1]`, `indices [2 * num_edges]`; self-loops are dropped, duplicate entries
are not removed, so pass a deduplicated graph):

  - hop 0 is {u, v} (local ids 0 and 1); the candidates of hop h are the neighbours of the nodes
    kept at hop h-1 that are not yet visited; all of them become visited, and without a cap all
    are kept: the union of the h-hop neighbourhoods of u and v (SEAL's `k_hop_subgraph`);
  - if hop h has more than `max_nodes_per_hop` candidates, a uniform subset of that size is kept:
    candidates sorted by global id, then a partial Fisher-Yates shuffle whose i-th swap position is
    `i + draw(seed, u, v, h, i) % (n - i)` (`draw` is splitmix64 chained over its arguments). The
    sample depends on (seed, u, v, h) only, not on the pair's position in the batch, so cached and
    per-batch extraction agree. Kept nodes of a hop are ordered by global id. As in SEAL, a
    candidate dropped by the cap at hop h is still visited, so it never joins at a later hop;
  - edges are every CSR entry between two subgraph nodes (both directions), grouped by sender
    local id; with `remove_target_edge` the u-v edge is dropped in both directions (SEAL removes it
    for training positives so the label is not leaked into the input).

Path labels (SEG; the paper's method section was not available, so this is our reconstruction):

  A u-v path of length l is a sequence u = x_0, x_1, ..., x_l = v of distinct subgraph nodes with
  (x_{i-1}, x_i) an edge of the extracted subgraph (so without the target edge when it is removed).
  For l = 1..lam, c_w^(l) = the number of such paths of length l that contain w (u and v are on
  every path, so c_u^(l) = c_v^(l) = the number of u-v paths of length l). c_w = sum_l c_w^(l).
  The node feature is one_hot(min(c_w, lam)) with lam + 1 classes (0..lam); `per_length=True`
  concatenates one_hot(min(c_w^(l), lam)) for l = 1..lam instead. Paths are enumerated by a
  depth-bounded DFS from u over intermediate nodes (never through u or v), closing a path whenever
  the current node is adjacent to v; lam <= 4 keeps this cheap.

DRNL (Zhang & Chen 2018, as in SEAL's code): d_u = shortest-path distance from u inside the
subgraph with v removed, d_v likewise with u removed; d = d_u + d_v and

  z = 1 + min(d_u, d_v) + (d // 2) * ((d // 2) + (d % 2) - 1),

z = 1 for u and v, and z = 0 when d_u or d_v is infinite (SEAL's NaN -> 0).

`to_graphs_tuple` batches the subgraphs into one `jraph.GraphsTuple` padded to power-of-two
buckets, with masks and the batch indices of every graph's u and v.
"""

from typing import Callable, NamedTuple, Optional

import jraph
import numba
from numba import prange
import numpy as np

from graphs.errors import GraphError

# splitmix64 constants, as np.uint64 so numba never mixes signed and unsigned (that gives float64).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_NO_CAP = -1
_UNREACHED = -1
# Dense membership table when num_nodes <= this * neighbour entries scanned (see _induced_edges).
_DENSE_TABLE_RATIO = 64


class EnclosingSubgraphs(NamedTuple):
  """P enclosing subgraphs, concatenated. Subgraph p owns nodes[node_offsets[p]:node_offsets[p+1]]
  and edges[edge_offsets[p]:edge_offsets[p+1]]; local ids 0 and 1 are its u and v.

  Attributes:
    pairs: [P, 2] int64, the global ids (u, v) of the target pairs.
    nodes: [N] int64, global id of every subgraph node (local order: u, v, hop 1, hop 2, ...).
    hops: [N] int8, the hop at which each node joined (0 for u and v).
    node_offsets: [P + 1] int64, exclusive cumsum of nodes per subgraph.
    senders: [E] int32, local sender id (0-based within its subgraph), ascending per subgraph.
    receivers: [E] int32, local receiver id.
    edge_offsets: [P + 1] int64, exclusive cumsum of edges per subgraph.
  """
  pairs: np.ndarray
  nodes: np.ndarray
  hops: np.ndarray
  node_offsets: np.ndarray
  senders: np.ndarray
  receivers: np.ndarray
  edge_offsets: np.ndarray

  @property
  def num_pairs(self) -> int:
    return int(self.pairs.shape[0])

  def subgraph(self, p: int):
    """(nodes [n], senders [e], receivers [e]) of subgraph p, local ids as stored."""
    n0, n1 = self.node_offsets[p], self.node_offsets[p + 1]
    e0, e1 = self.edge_offsets[p], self.edge_offsets[p + 1]
    return self.nodes[n0:n1], self.senders[e0:e1], self.receivers[e0:e1]


class SubgraphBatch(NamedTuple):
  """A padded batch of enclosing subgraphs for a Jraph model.

  Attributes:
    graph: `jraph.GraphsTuple` with `nodes` [N_pad, ...] (from `node_feature_fn`), `edges` None,
      `senders`/`receivers` [E_pad] int32 batch node ids, `n_node`/`n_edge` [G_pad] int32.
    node_mask: [N_pad] bool, True for real nodes.
    edge_mask: [E_pad] bool, True for real edges.
    graph_mask: [G_pad] bool, True for real graphs (the first P).
    u_index: [G_pad] int32, batch node id of each graph's u (its first node); padding graphs point
      at the first padding node, so gathers stay in range and the mask removes them.
    v_index: [G_pad] int32, likewise for v (first node + 1).
  """
  graph: jraph.GraphsTuple
  node_mask: np.ndarray
  edge_mask: np.ndarray
  graph_mask: np.ndarray
  u_index: np.ndarray
  v_index: np.ndarray


@numba.njit(inline="always", cache=True)
def _splitmix(x):
  z = x + _GAMMA
  z = (z ^ (z >> _S30)) * _MIX1
  z = (z ^ (z >> _S27)) * _MIX2
  return z ^ (z >> _S31)


@numba.njit(cache=True)
def draw(seed, u, v, hop, i):
  """A uint64 hash of (seed, u, v, hop, i): the random source of the per-hop subsample."""
  h = _splitmix(np.uint64(seed))
  h = _splitmix(h ^ np.uint64(u))
  h = _splitmix(h ^ np.uint64(v))
  return _splitmix(h ^ ((np.uint64(hop) << _S32) | np.uint64(i)))


@numba.njit(cache=True)
def _select_nodes(indptr, indices, u, v, num_hops, cap, seed, dense_ratio):
  """Nodes of the enclosing subgraph of (u, v) in local order, and their hops; see module doc."""
  num_nodes = indptr.shape[0] - 1
  nodes = np.empty(2, np.int64)
  nodes[0] = u
  nodes[1] = v
  hops = np.zeros(2, np.int8)
  # "Visited" = u, v and every candidate of earlier hops, sampled or not (as SEAL marks them).
  # A dense marker costs O(num_nodes) per pair, so it is used only when the first hop alone
  # scans a comparable number of entries; otherwise a sorted array + binary search keeps memory
  # independent of the graph's size.
  dense = num_nodes <= dense_ratio * (indptr[u + 1] - indptr[u] + indptr[v + 1] - indptr[v])
  seen = np.zeros(num_nodes if dense else 0, np.bool_)
  if dense:
    seen[u] = True
    seen[v] = True
  visited = np.sort(nodes)
  frontier = nodes.copy()
  for h in range(1, num_hops + 1):
    total = 0
    for f in frontier:
      total += indptr[f + 1] - indptr[f]
    buf = np.empty(total, np.int64)
    k = 0
    for f in frontier:
      for j in range(indptr[f], indptr[f + 1]):
        w = indices[j]
        if dense:
          if seen[w]:
            continue
          seen[w] = True
        buf[k] = w
        k += 1
    if dense:
      cand = np.sort(buf[:k])
    else:
      buf = np.unique(buf)
      pos = np.searchsorted(visited, buf)
      keep = np.ones(buf.shape[0], np.bool_)
      for j in range(buf.shape[0]):
        if pos[j] < visited.shape[0] and visited[pos[j]] == buf[j]:
          keep[j] = False
      cand = buf[keep]
      visited = np.sort(np.concatenate((visited, cand)))
    n = cand.shape[0]
    if 0 <= cap < n:
      for i in range(cap):
        j = i + np.int64(draw(seed, u, v, h, i) % np.uint64(n - i))
        t = cand[i]
        cand[i] = cand[j]
        cand[j] = t
      cand = np.sort(cand[:cap])
    if cand.shape[0] == 0:
      break
    nodes = np.concatenate((nodes, cand))
    hops = np.concatenate((hops, np.full(cand.shape[0], h, np.int8)))
    frontier = cand
  return nodes, hops


@numba.njit(parallel=True, cache=True)
def _count_nodes(indptr, indices, pairs, num_hops, cap, seed, dense_ratio):
  counts = np.zeros(pairs.shape[0], np.int64)
  for p in prange(pairs.shape[0]):
    nodes, _ = _select_nodes(indptr, indices, pairs[p, 0], pairs[p, 1], num_hops, cap, seed,
                             dense_ratio)
    counts[p] = nodes.shape[0]
  return counts


@numba.njit(parallel=True, cache=True)
def _write_nodes(indptr, indices, pairs, num_hops, cap, seed, dense_ratio, offsets, out_nodes,
                 out_hops):
  for p in prange(pairs.shape[0]):
    nodes, hops = _select_nodes(indptr, indices, pairs[p, 0], pairs[p, 1], num_hops, cap, seed,
                                dense_ratio)
    out_nodes[offsets[p]:offsets[p + 1]] = nodes
    out_hops[offsets[p]:offsets[p + 1]] = hops


@numba.njit(cache=True)
def _induced_edges(indptr, indices, sub, remove_target, dense_ratio, write, senders, receivers):
  """Counts (and if `write`, stores from index 0) the induced edges of `sub` (global ids)."""
  n = sub.shape[0]
  num_nodes = indptr.shape[0] - 1
  work = 0
  for a in range(n):
    work += indptr[sub[a] + 1] - indptr[sub[a]]
  # Membership test for every scanned neighbour entry: a dense global -> local table is ~10x
  # faster than binary search but costs O(num_nodes) to fill, so it is used only when that fill
  # is small next to the scan (ogbl-ddi: yes; a 3M-node graph with sparse rows: no).
  dense = num_nodes <= dense_ratio * work
  if dense:
    table = np.full(num_nodes, -1, np.int64)
    for a in range(n):
      table[sub[a]] = a
    order = np.empty(0, np.int64)
    sorted_ids = np.empty(0, np.int64)
  else:
    table = np.empty(0, np.int64)
    order = np.argsort(sub)
    sorted_ids = sub[order]
  k = 0
  for a in range(n):
    g = sub[a]
    for j in range(indptr[g], indptr[g + 1]):
      w = indices[j]
      if dense:
        b = table[w]
        if b < 0:
          continue
      else:
        pos = np.searchsorted(sorted_ids, w)
        if pos >= n or sorted_ids[pos] != w:
          continue
        b = order[pos]
      if b == a:
        continue
      if remove_target and ((a == 0 and b == 1) or (a == 1 and b == 0)):
        continue
      if write:
        senders[k] = a
        receivers[k] = b
      k += 1
  return k


@numba.njit(parallel=True, cache=True)
def _count_edges(indptr, indices, nodes, node_offsets, remove_target, dense_ratio):
  num = node_offsets.shape[0] - 1
  counts = np.zeros(num, np.int64)
  dummy = np.empty(0, np.int32)
  for p in prange(num):
    sub = nodes[node_offsets[p]:node_offsets[p + 1]]
    counts[p] = _induced_edges(indptr, indices, sub, remove_target, dense_ratio, False, dummy,
                               dummy)
  return counts


@numba.njit(parallel=True, cache=True)
def _write_edges(indptr, indices, nodes, node_offsets, remove_target, dense_ratio, edge_offsets,
                 senders, receivers):
  for p in prange(node_offsets.shape[0] - 1):
    sub = nodes[node_offsets[p]:node_offsets[p + 1]]
    e0, e1 = edge_offsets[p], edge_offsets[p + 1]
    _induced_edges(indptr, indices, sub, remove_target, dense_ratio, True, senders[e0:e1],
                   receivers[e0:e1])


def _offsets(counts):
  out = np.zeros(counts.shape[0] + 1, np.int64)
  np.cumsum(counts, out=out[1:])
  return out


def _check_csr(indptr, indices):
  indptr = np.asarray(indptr, np.int64)
  indices = np.asarray(indices, np.int64)
  if indptr.ndim != 1 or indptr.shape[0] < 1 or indptr[0] != 0 or indptr[-1] != indices.shape[0]:
    raise GraphError(f"bad CSR: indptr of shape {indptr.shape} does not index {indices.shape[0]} "
                     "neighbour entries")
  num_nodes = indptr.shape[0] - 1
  if indices.size and (indices.min() < 0 or indices.max() >= num_nodes):
    raise GraphError(f"bad CSR: neighbour ids must lie in [0, {num_nodes})")
  return indptr, indices


def extract(indptr, indices, pairs, num_hops: int = 1, max_nodes_per_hop: Optional[int] = None,
            seed: int = 0, remove_target_edge: bool = True) -> EnclosingSubgraphs:
  """Extracts the k-hop enclosing subgraph of every target pair (see the module docstring).

  Args:
    indptr: [num_nodes + 1] int, CSR row pointers of a symmetric (undirected) simple graph.
    indices: [num_entries] int, CSR neighbour ids.
    pairs: [P, 2] int, target pairs (u, v), u != v.
    num_hops: k >= 1 (SEAL and SEG use 1 or 2).
    max_nodes_per_hop: cap on the nodes added per hop (seeded uniform subsample); None for no cap.
    seed: seed of the subsample.
    remove_target_edge: drop the u-v edge (both directions) from every subgraph.

  Returns:
    `EnclosingSubgraphs` with u, v as local nodes 0 and 1 of each subgraph.

  Raises:
    GraphError: malformed CSR, pairs out of range or with u == v, bad hop count or cap.
  """
  indptr, indices = _check_csr(indptr, indices)
  num_nodes = indptr.shape[0] - 1
  pairs = np.asarray(pairs, np.int64)
  if pairs.ndim != 2 or pairs.shape[1] != 2:
    raise GraphError(f"pairs must have shape [P, 2], got {pairs.shape}")
  if pairs.size and (pairs.min() < 0 or pairs.max() >= num_nodes):
    raise GraphError(f"pair node ids must lie in [0, {num_nodes})")
  if np.any(pairs[:, 0] == pairs[:, 1]):
    raise GraphError(f"target pairs need u != v; pair {int(np.argmax(pairs[:, 0] == pairs[:, 1]))} "
                     "has u == v")
  if num_hops < 1:
    raise GraphError(f"num_hops must be >= 1, got {num_hops}")
  if max_nodes_per_hop is not None and max_nodes_per_hop < 1:
    raise GraphError(f"max_nodes_per_hop must be >= 1 or None, got {max_nodes_per_hop}")
  cap = _NO_CAP if max_nodes_per_hop is None else int(max_nodes_per_hop)
  seed = int(seed) & 0xFFFFFFFFFFFFFFFF
  node_counts = _count_nodes(indptr, indices, pairs, num_hops, cap, seed, _DENSE_TABLE_RATIO)
  node_offsets = _offsets(node_counts)
  nodes = np.empty(node_offsets[-1], np.int64)
  hops = np.empty(node_offsets[-1], np.int8)
  _write_nodes(indptr, indices, pairs, num_hops, cap, seed, _DENSE_TABLE_RATIO, node_offsets,
               nodes, hops)
  # The edge scan is the expensive part and is run twice (count, then write) rather than
  # written into an upper-bound buffer: the bound (sum of degrees) is ~100x the real size on
  # dense graphs such as ogbl-ddi.
  edge_counts = _count_edges(indptr, indices, nodes, node_offsets, remove_target_edge,
                             _DENSE_TABLE_RATIO)
  edge_offsets = _offsets(edge_counts)
  senders = np.empty(edge_offsets[-1], np.int32)
  receivers = np.empty(edge_offsets[-1], np.int32)
  _write_edges(indptr, indices, nodes, node_offsets, remove_target_edge, _DENSE_TABLE_RATIO,
               edge_offsets, senders, receivers)
  return EnclosingSubgraphs(pairs, nodes, hops, node_offsets, senders, receivers, edge_offsets)


@numba.njit(cache=True)
def _local_csr(n, senders, receivers):
  """Row pointers of one subgraph's edges; they are already grouped by ascending sender."""
  ptr = np.zeros(n + 1, np.int64)
  for s in senders:
    ptr[s + 1] += 1
  for i in range(n):
    ptr[i + 1] += ptr[i]
  return ptr


@numba.njit(parallel=True, cache=True)
def _path_counts(node_offsets, edge_offsets, senders, receivers, lam):
  total = node_offsets[-1]
  out = np.zeros((total, lam), np.int64)
  for p in prange(node_offsets.shape[0] - 1):
    n0 = node_offsets[p]
    n = node_offsets[p + 1] - n0
    e0, e1 = edge_offsets[p], edge_offsets[p + 1]
    rec = receivers[e0:e1]
    ptr = _local_csr(n, senders[e0:e1], rec)
    c = out[n0:n0 + n]
    # adj_v[y]: y is adjacent to v, so a walk reaching y closes a u-v path in one more step.
    adj_v = np.zeros(n, np.bool_)
    for j in range(ptr[1], ptr[2]):
      adj_v[rec[j]] = True
    for j in range(ptr[0], ptr[1]):
      if rec[j] == 1:  # length-1 path: the direct edge (present when not removed)
        c[0, 0] += 1
        c[1, 0] += 1
        break
    if lam < 2:
      continue
    # Iterative DFS over intermediate nodes: stack[0] = u, stack[d] = x_d, d = 1..lam-1.
    stack = np.zeros(lam, np.int64)
    nxt = np.zeros(lam, np.int64)
    on_path = np.zeros(n, np.bool_)
    on_path[0] = True
    on_path[1] = True  # v may only end a path, never be an intermediate node
    d = 0
    nxt[0] = ptr[0]
    while d >= 0:
      x = stack[d]
      if nxt[d] < ptr[x + 1]:
        y = rec[nxt[d]]
        nxt[d] += 1
        if on_path[y]:
          continue
        nd = d + 1  # y is x_nd; closing to v gives length nd + 1, column nd
        if adj_v[y]:
          c[0, nd] += 1
          c[1, nd] += 1
          for i in range(1, nd):
            c[stack[i], nd] += 1
          c[y, nd] += 1
        if nd < lam - 1:
          stack[nd] = y
          nxt[nd] = ptr[y]
          on_path[y] = True
          d = nd
      else:
        if d > 0:
          on_path[x] = False
        d -= 1
  return out


def path_counts(subgraphs: EnclosingSubgraphs, lam: int = 3) -> np.ndarray:
  """Per-length path counts c_w^(l) (module docstring) for every node of every subgraph.

  Args:
    subgraphs: output of `extract`.
    lam: maximum path length, 2..4.

  Returns:
    [N, lam] int64; column l-1 holds c_w^(l). Sum over columns for c_w.
  """
  if not 2 <= lam <= 4:
    raise GraphError(f"path length bound lam must be in 2..4, got {lam}")
  return _path_counts(subgraphs.node_offsets, subgraphs.edge_offsets, subgraphs.senders,
                      subgraphs.receivers, lam)


def path_label_features(counts: np.ndarray, lam: int = 3, per_length: bool = False) -> np.ndarray:
  """One-hot path labels from `path_counts` output.

  Args:
    counts: [N, lam] int, c_w^(l).
    lam: the bound used for `counts`; values are clipped to it.
    per_length: one-hot every c_w^(l) separately instead of the total c_w.

  Returns:
    [N, lam + 1] float32 one_hot(min(c_w, lam)), or [N, lam * (lam + 1)] when `per_length`.
  """
  eye = np.eye(lam + 1, dtype=np.float32)
  if per_length:
    clipped = np.minimum(counts, lam)
    return eye[clipped].reshape(counts.shape[0], -1)
  return eye[np.minimum(counts.sum(axis=1), lam)]


@numba.njit(parallel=True, cache=True)
def _common_neighbours(indptr, indices, pairs):
  out = np.zeros(pairs.shape[0], np.int64)
  for p in prange(pairs.shape[0]):
    u, v = pairs[p, 0], pairs[p, 1]
    i, i1 = indptr[u], indptr[u + 1]
    j, j1 = indptr[v], indptr[v + 1]
    count = 0
    while i < i1 and j < j1:  # merge of two sorted rows
      a, b = indices[i], indices[j]
      if a == b:
        if a != u and a != v:
          count += 1
        i += 1
        j += 1
      elif a < b:
        i += 1
      else:
        j += 1
    out[p] = count
  return out


def common_neighbours(indptr, indices, pairs) -> np.ndarray:
  """Exact number of u-v paths of length 2 (common neighbours) in the whole graph, per pair.

  The capped subgraph only sees a sample of them (ogbl-ddi: ~500 neighbours per node, 20 kept
  per hop), so SEG can take this uncapped count of the pair's own path label c_u^(2) as an
  extra input (`SubgraphModelConfig.pair_counts`). The target edge is not on any such path.

  Args:
    indptr: [num_nodes + 1] CSR row pointers (symmetric graph).
    indices: neighbour ids, sorted ascending within each row (`subgraph_runner.training_csr`).
    pairs: [P, 2] int node pairs.

  Returns:
    [P] int64 common-neighbour counts.
  """
  return _common_neighbours(np.asarray(indptr, np.int64), np.asarray(indices, np.int64),
                            np.asarray(pairs, np.int64).reshape(-1, 2))


@numba.njit(cache=True)
def _bfs(n, ptr, rec, source, blocked):
  dist = np.full(n, _UNREACHED, np.int64)
  queue = np.empty(n, np.int64)
  dist[source] = 0
  queue[0] = source
  head, tail = 0, 1
  while head < tail:
    x = queue[head]
    head += 1
    for j in range(ptr[x], ptr[x + 1]):
      y = rec[j]
      if y != blocked and dist[y] == _UNREACHED:
        dist[y] = dist[x] + 1
        queue[tail] = y
        tail += 1
  return dist


@numba.njit(parallel=True, cache=True)
def _drnl(node_offsets, edge_offsets, senders, receivers):
  out = np.zeros(node_offsets[-1], np.int64)
  for p in prange(node_offsets.shape[0] - 1):
    n0 = node_offsets[p]
    n = node_offsets[p + 1] - n0
    e0, e1 = edge_offsets[p], edge_offsets[p + 1]
    rec = receivers[e0:e1]
    ptr = _local_csr(n, senders[e0:e1], rec)
    du = _bfs(n, ptr, rec, 0, 1)
    dv = _bfs(n, ptr, rec, 1, 0)
    for w in range(n):
      if w < 2:
        out[n0 + w] = 1
      elif du[w] != _UNREACHED and dv[w] != _UNREACHED:
        d = du[w] + dv[w]
        out[n0 + w] = 1 + min(du[w], dv[w]) + (d // 2) * ((d // 2) + (d % 2) - 1)
  return out


def drnl_labels(subgraphs: EnclosingSubgraphs) -> np.ndarray:
  """SEAL's double-radius node labels (module docstring).

  Returns:
    [N] int64; 1 for u and v, 0 for nodes cut off from u or v, else >= 2.
  """
  return _drnl(subgraphs.node_offsets, subgraphs.edge_offsets, subgraphs.senders,
               subgraphs.receivers)


def next_pow2(x: int) -> int:
  """The smallest power of two >= x (1 for x <= 1)."""
  return 1 << max(0, int(x) - 1).bit_length()


def to_graphs_tuple(subgraphs: EnclosingSubgraphs,
                    node_feature_fn: Optional[Callable[[EnclosingSubgraphs], np.ndarray]] = None,
                    pad_to_power_of_two: bool = True) -> SubgraphBatch:
  """Batches enclosing subgraphs into one (padded) `jraph.GraphsTuple`.

  Args:
    subgraphs: output of `extract`, P >= 1 pairs.
    node_feature_fn: maps `subgraphs` to node features [N, ...] (e.g. path-label one-hots
      concatenated with input features), or to a dict of such arrays (each padded alike);
      default: the global node ids [N] int32, for an embedding lookup.
    pad_to_power_of_two: pad nodes to next_pow2(N + 1), edges to next_pow2(E) and graphs to
      next_pow2(P + 1) with `jraph.pad_with_graphs`, so jit sees few distinct shapes.

  Returns:
    `SubgraphBatch`; without padding the masks are all True.
  """
  p = subgraphs.num_pairs
  if p < 1:
    raise GraphError("cannot batch zero subgraphs")
  if node_feature_fn is None:
    nodes = subgraphs.nodes.astype(np.int32)
  else:
    nodes = node_feature_fn(subgraphs)
    nodes = ({k: np.asarray(x) for k, x in nodes.items()} if isinstance(nodes, dict)
             else np.asarray(nodes))
  total_nodes = int(subgraphs.node_offsets[-1])
  total_edges = int(subgraphs.edge_offsets[-1])
  for leaf in (nodes.values() if isinstance(nodes, dict) else [nodes]):
    if leaf.shape[0] != total_nodes:
      raise GraphError(f"node_feature_fn gave {leaf.shape[0]} rows for {total_nodes} nodes")
  n_node = np.diff(subgraphs.node_offsets).astype(np.int32)
  n_edge = np.diff(subgraphs.edge_offsets).astype(np.int32)
  # Local ids become batch ids: add each edge's graph start.
  shift = np.repeat(subgraphs.node_offsets[:-1], n_edge).astype(np.int32)
  graph = jraph.GraphsTuple(nodes=nodes, edges=None, globals=None, n_node=n_node, n_edge=n_edge,
                            senders=subgraphs.senders + shift,
                            receivers=subgraphs.receivers + shift)
  starts = subgraphs.node_offsets[:-1].astype(np.int32)
  if not pad_to_power_of_two:
    return SubgraphBatch(graph, np.ones(total_nodes, bool), np.ones(total_edges, bool),
                         np.ones(p, bool), starts, starts + 1)
  n_graph_pad = next_pow2(p + 1)
  graph = jraph.pad_with_graphs(graph, next_pow2(total_nodes + 1), next_pow2(total_edges),
                                n_graph_pad)
  # jraph's batching widens the index arrays to int64; models expect int32 ids.
  graph = graph._replace(senders=graph.senders.astype(np.int32),
                         receivers=graph.receivers.astype(np.int32))
  pad = np.full(n_graph_pad - p, total_nodes, np.int32)
  return SubgraphBatch(graph,
                       np.asarray(jraph.get_node_padding_mask(graph)),
                       np.asarray(jraph.get_edge_padding_mask(graph)),
                       np.asarray(jraph.get_graph_padding_mask(graph)),
                       np.concatenate([starts, pad]), np.concatenate([starts + 1, pad]))
