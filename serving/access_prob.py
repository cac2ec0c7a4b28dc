"""Feature access probability (Quiver): how likely one request is to read each node's feature row.

A request is a batch of `B` seeds, each drawn independently from a seed distribution `q` (uniform
by default) and deduplicated; the sampler then expands hop by hop with fanouts `[k_1, ..., k_L]`,
drawing `min(k, d)` of a node's `d` CSR neighbours uniformly without replacement. Every node of the
sample (seeds included) has its feature row read once.

Direction. CSR row `v` lists the neighbours `v` samples from (`serving/graph.py`), so `u` can be
reached from every `v` whose row contains `u` (an "in-neighbour" of `u` in the sampling sense:
`u` is one of `v`'s candidates). The probabilities therefore flow along CSR entries `v -> u`,
and the degree in the fanout ratio is the expanding node's row length `d(v)`. For a symmetric
graph this is simply "u's neighbours".

The recursion (per hop h = 0..L-1, with `d(v)` the row length of `v`):

  p_0(u)     = 1 - (1 - q(u))^B                                  (u is a seed)
  p_{h+1}(u) = 1 - prod_{v : u in row(v)} (1 - p_h(v) * min(1, k_{h+1} / d(v)))
  p(u)       = 1 - prod_{h=0..L} (1 - p_h(u))

`min(1, k/d)` is exact for one expander: a uniform k-subset of d items contains a given item with
probability k/d. The products assume independence twice: between the different expanders `v` of
`u` at one hop, and between the hops of `u` (e.g. `u` being a seed and `u` being re-reached at
hop 2 via a neighbour are positively correlated on graphs with short cycles; a single seed
landing on `u` or on its neighbour are mutually exclusive when B = 1). The recursion also treats
`p_h(v)` as "v is expanded at hop h+1", i.e. a node drawn again at a later hop is expanded again;
the real samplers expand each node once, so the recursion slightly overestimates deeper hops.
These are Quiver's approximations; the ranking of nodes, which is what placement uses, is what
matters, and tests/test_feature_store.py checks the values against Monte-Carlo on small graphs.

Everything is numpy over the CSR entries: one `np.bincount` per hop, sums of `log1p` terms (the
products of many factors near 1 underflow or lose all precision in linear space).
"""

import numpy as np

from graphs.errors import GraphError
from serving.graph import CSRGraph


def _check_fanouts(fanouts) -> np.ndarray:
  arr = np.asarray(list(fanouts), dtype=np.int64)
  if arr.ndim != 1 or arr.size == 0 or (arr < 1).any():
    raise GraphError(f"fanouts must be a non-empty list of positive integers, got {list(fanouts)}")
  return arr


def seed_distribution(num_nodes: int, seed_dist=None) -> np.ndarray:
  """The per-draw seed distribution `q` [N] float64 (sums to 1).

  Args:
    num_nodes: N.
    seed_dist: None for uniform, else [N] non-negative weights (normalised here).
  """
  if seed_dist is None:
    return np.full(num_nodes, 1.0 / max(num_nodes, 1))
  q = np.asarray(seed_dist, dtype=np.float64)
  if q.shape != (num_nodes,):
    raise GraphError(f"seed distribution has shape {q.shape}, expected ({num_nodes},)")
  if not np.isfinite(q).all() or (q < 0).any() or q.sum() <= 0:
    raise GraphError("seed distribution must be finite, non-negative and not all zero")
  return q / q.sum()


def seed_probability(num_nodes: int, batch_size: int = 1, seed_dist=None) -> np.ndarray:
  """p_0 [N] float64: probability that node u is among one request's (deduplicated) seeds.

  Seeds are `batch_size` independent draws from `seed_dist`, so p_0 = 1 - (1 - q)^B; for
  uniform seeds that is 1 - (1 - 1/N)^B (about B/N while B << N).
  """
  if int(batch_size) < 1:
    raise GraphError(f"batch_size must be >= 1, got {batch_size}")
  q = seed_distribution(num_nodes, seed_dist)
  with np.errstate(divide="ignore"):
    return -np.expm1(int(batch_size) * np.log1p(-q))


def hop_probabilities(graph: CSRGraph, fanouts, batch_size: int = 1,
                      seed_dist=None) -> np.ndarray:
  """p_h(u) for h = 0..L: probability that u is reached at hop h of one request.

  Args:
    graph: CSR; row v lists the candidates v draws from when expanded.
    fanouts: [L] positive ints, neighbours drawn per expanded node at each hop.
    batch_size: seeds per request, B.
    seed_dist: None (uniform) or [N] non-negative per-draw seed weights.

  Returns:
    [L + 1, N] float64; row 0 is the seed probability p_0.
  """
  fanouts = _check_fanouts(fanouts)
  n = graph.num_nodes
  deg = graph.degrees()
  # CSR entry e is the pair (expander rows[e], candidate indices[e]).
  rows = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), deg)
  cols = graph.indices
  out = np.empty((fanouts.size + 1, n), np.float64)
  out[0] = seed_probability(n, batch_size, seed_dist)
  safe_deg = np.maximum(deg, 1).astype(np.float64)
  for h, k in enumerate(fanouts):
    # P(v is expanded at this hop and draws one given candidate): exact per expander.
    q = out[h] * np.minimum(1.0, k / safe_deg)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf: u is certainly drawn
      log_miss = np.bincount(cols, weights=np.log1p(-q)[rows], minlength=n)
    out[h + 1] = -np.expm1(log_miss)
  return out


def access_probability(graph: CSRGraph, fanouts, batch_size: int = 1,
                       seed_dist=None) -> np.ndarray:
  """p(u) [N] float64: probability that one request reads u's feature row.

  p(u) = 1 - prod_h (1 - p_h(u)), treating the hops as independent (see the module docstring).
  Arguments as in `hop_probabilities`.
  """
  p = hop_probabilities(graph, fanouts, batch_size, seed_dist)
  with np.errstate(divide="ignore"):
    return -np.expm1(np.log1p(-p).sum(axis=0))


def zipf_seed_distribution(num_nodes: int, exponent: float = 1.0, seed: int = 0) -> np.ndarray:
  """A skewed seed distribution [N]: weight 1/rank^exponent over a random ranking of the nodes.

  The ranking is a random permutation, so popularity is independent of degree (requests for
  popular items, not for hubs): placement by degree alone cannot see it.
  """
  rank = np.empty(num_nodes, np.float64)
  rank[np.random.default_rng(seed).permutation(num_nodes)] = np.arange(1, num_nodes + 1)
  w = rank ** -float(exponent)
  return w / w.sum()


def draw_seed_batches(num_nodes: int, batch_size: int, num_requests: int,
                      rng: np.random.Generator, seed_dist=None) -> np.ndarray:
  """Seeds of `num_requests` requests: [R, B] int64 independent draws from the seed distribution.

  This is the seed model `seed_probability` assumes; a row may repeat an id, and a request's seed
  set is the row deduplicated (`sample_requests` does that; `np.unique` per row for samplers that
  need distinct seeds).
  """
  q = None if seed_dist is None else seed_distribution(num_nodes, seed_dist)
  return rng.choice(num_nodes, size=(int(num_requests), int(batch_size)), replace=True, p=q)


def sample_requests(graph: CSRGraph, fanouts, seed_batches, rng: np.random.Generator,
                    expand_once: bool = True) -> list[np.ndarray]:
  """A reference k-hop sampler (numpy): the distinct nodes each request reads.

  Each expanded node v draws min(k, d(v)) of its row uniformly without replacement (Floyd's
  algorithm, vectorised over the frontier of all requests at once: request r's node v is the
  id r * N + v of a disjoint union). For validating `access_probability` and for benchmarks
  where `serving.host_sampler` is unavailable; it returns only the node sets.

  Args:
    graph: CSR.
    fanouts: [L] positive ints.
    seed_batches: R arrays of seed ids (duplicates within one are dropped).
    rng: numpy Generator.
    expand_once: True: a node is expanded only at the hop after it is first reached (the real
      samplers' rule); False: every node drawn at hop h is expanded at h+1 (the recursion's
      model).

  Returns:
    R arrays [n_r] int64 of distinct node ids: seeds (sorted), then by the hop first reached.
  """
  fanouts = _check_fanouts(fanouts)
  n, num_req = graph.num_nodes, len(seed_batches)
  seeds = [np.unique(np.asarray(s, dtype=np.int64)) for s in seed_batches]
  for s in seeds:
    if s.size and (s[0] < 0 or s[-1] >= n):
      raise GraphError(f"seed id {int(s[0] if s[0] < 0 else s[-1])} is out of range [0, {n})")
  frontier = np.concatenate(
      [s + r * n for r, s in enumerate(seeds)] or [np.zeros(0, np.int64)])
  seen = np.zeros(n * num_req, bool)
  seen[frontier] = True
  visited = [frontier]
  indptr = graph.indptr.astype(np.int64)
  for k in fanouts:
    if frontier.size == 0:
      break
    req, node = np.divmod(frontier, n)
    drawn, owner = _draw(indptr, graph.indices, node, int(k), rng)
    drawn += req[owner] * n
    new = np.unique(drawn[~seen[drawn]])
    seen[new] = True
    visited.append(new)
    frontier = new if expand_once else np.unique(drawn)
  allv = np.concatenate(visited)
  req = allv // n
  order = np.argsort(req, kind="stable")  # keeps seeds-then-hop order within each request
  sizes = np.bincount(req, minlength=num_req)
  return np.split(allv[order] - req[order] * n, np.cumsum(sizes)[:-1])


def _draw(indptr, indices, frontier, k, rng) -> tuple[np.ndarray, np.ndarray]:
  """Candidates drawn by the frontier nodes (a uniform min(k, d)-subset of each row).

  Returns:
    (drawn [D] int64 node ids, owner [D] int64 position in `frontier` of the node that drew it).
  """
  start = indptr[frontier]
  deg = indptr[frontier + 1] - start
  pos = np.arange(frontier.size)
  small = deg <= k  # take the whole row
  s_start, s_deg = start[small], deg[small]
  offsets = np.arange(s_deg.sum()) - np.repeat(np.cumsum(s_deg) - s_deg, s_deg)
  drawn = [indices[np.repeat(s_start, s_deg) + offsets]]
  owner = [np.repeat(pos[small], s_deg)]
  b_start, b_deg = start[~small], deg[~small]
  if b_deg.size:
    # Floyd: for i < k, j = d - k + i, t ~ U[0, j]; take j if t was already chosen, else t.
    chosen = np.empty((b_deg.size, k), np.int64)
    for i in range(k):
      j = b_deg - k + i
      t = np.minimum((rng.random(b_deg.size) * (j + 1)).astype(np.int64), j)  # float rounding
      dup = (chosen[:, :i] == t[:, None]).any(axis=1)
      chosen[:, i] = np.where(dup, j, t)
    drawn.append(indices[(b_start[:, None] + chosen).ravel()])
    owner.append(np.repeat(pos[~small], k))
  return np.concatenate(drawn).astype(np.int64), np.concatenate(owner)
