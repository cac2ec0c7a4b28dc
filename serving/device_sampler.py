"""K-hop neighbour sampling on the accelerator: a Pallas kernel draws the positions, XLA relabels.

Sampling rule (shared bit for bit with the host sampler, `serving/host_sampler.py`): expanding node
`v` at hop `h` with degree `d` and fanout `k`, take positions `0..d-1` if `d <= k`, else Floyd's
algorithm without replacement:

    chosen = []
    for i in range(k):
      j = d - k + i
      t = hash_u32(key, v, h * STREAM_STRIDE + i) % (j + 1)      # uint32 remainder
      chosen.append(j if t in chosen else t)

Slot `i` holds `chosen[i]`; the neighbour is `indices[indptr[v] + chosen[i]]`. Local ids, edge order
and padding follow `serving/subgraph.py`.

Backend. `sample_rows` is a `pl.pallas_call` lowered through Pallas' **Triton** backend, selected
explicitly with `compiler_params=pallas.triton.CompilerParams(...)`: in jax 0.10.2 the flag
`jax_pallas_use_mosaic_gpu` defaults to True, so a bare `pallas_call` on an NVIDIA GPU goes to
Mosaic GPU, not Triton. The kernel is integer hashing plus a k-step loop over a small
[block_rows, fanout] tile per row block: no matmul, no TMA, no warpgroup tiles. Triton lowers that
directly on any sm80+ GPU (A100 included), while Mosaic GPU is built around Hopper warpgroup/TMA
pipelines (and `pl.pallas_call` for Mosaic GPU is itself deprecated in favour of `plgpu.kernel`).
The Triton backend is deprecated upstream as of jax 0.11 (it still ships). There is no `backend=`
argument on `pallas_call`; the choice is the type of `compiler_params` (`pallas.triton` vs
`pallas.mosaic_gpu` `CompilerParams`), and without params the `jax_pallas_use_mosaic_gpu` flag. If a
future jax drops `jax.experimental.pallas.triton`, this module passes no params and the kernel goes
to Mosaic GPU (untested). The pure-`jnp` path (`use_pallas=False`) needs no Pallas at all. On CPU
the kernel runs with `interpret=True`.

The neighbour gather `indices[row_start + pos]` runs outside the kernel as one XLA gather over the
[rows, fanout] positions. Inside the kernel it would need the whole 62M-entry `indices` array as an
un-blocked ref indexed by data-dependent vectors; the kernel instead touches only blocked,
power-of-two tiles (what both the interpreter and Triton handle), and the memory traffic is the
same either way.

Relabelling (first-occurrence local ids) is a stable sort of [known nodes; this hop's candidates]
by global id: the first element of each run of equal ids is the node's earliest occurrence (a known
node if there is one, since known nodes come first), so new nodes are the candidates that lead
their run, numbered in candidate order by a cumsum. All sizes are static functions of
(batch bucket, fanouts); one compile per bucket.
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import pallas as pl
import numpy as np

from graphs.errors import GraphError
from serving import rng
from serving import subgraph as subgraph_lib
from serving.graph import CSRGraph, DeviceCSR, to_device

try:  # Deprecated upstream in jax 0.11; gone in some future release.
  from jax.experimental.pallas import triton as pltriton  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  pltriton = None

_INT32_MAX = np.iinfo(np.int32).max
DEFAULT_BLOCK_ROWS = 256


def _pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


def _floyd_tile(degree, node_ids, key, hop: int, fanout: int, width: int):
  """Positions [rows, width] int32 for one block of rows (shared by the kernel and the reference).

  Written with ops the Triton lowering has (no boolean `any` reduction: `max` over int32 instead).
  """
  rows = degree.shape[0]
  col = lax.broadcasted_iota(jnp.int32, (rows, width), 1)
  chosen = jnp.full((rows, width), -1, jnp.int32)
  for i in range(fanout):  # static: fanouts are small (<= a few dozen)
    j = degree - (fanout - i)  # [rows] int32; >= i when degree > fanout
    h = rng.hash_u32(key, node_ids, hop * rng.STREAM_STRIDE + i, xp=jnp)
    bound = jnp.maximum(j + 1, 1).astype(jnp.uint32)
    t = (h % bound).astype(jnp.int32)
    seen = jnp.max((chosen == t[:, None]).astype(jnp.int32), axis=1) > 0
    pick = jnp.where(seen, j, t)
    chosen = jnp.where(col == i, pick[:, None], chosen)
  small = jnp.where(col < degree[:, None], col, -1)
  out = jnp.where((degree > fanout)[:, None], chosen, small)
  return jnp.where(col < fanout, out, -1)


def _kernel(key_ref, degree_ref, node_ref, out_ref, *, hop, fanout):
  out_ref[...] = _floyd_tile(degree_ref[...], node_ref[...], key_ref[0], hop, fanout,
                             out_ref.shape[1])


def sample_rows(row_start, degree, node_ids, key, hop: int, fanout: int, *,
                block_rows: int = DEFAULT_BLOCK_ROWS, interpret: bool = False):
  """Floyd-sample `fanout` distinct positions per row, with a Pallas kernel over row blocks.

  Args:
    row_start: [R] int32 `indptr[v]` of each row (unused by the kernel: the neighbour gather
      `indices[row_start + pos]` is an XLA gather outside it; kept so the signature names the row).
    degree: [R] int32 row lengths (0 for padding rows).
    node_ids: [R] int32 node ids (hashed into the draws).
    key: uint32 request key (a traced scalar is fine).
    hop: static hop index (0-based); draws use counters `hop * STREAM_STRIDE + i`.
    fanout: static sample size k.
    block_rows: rows per program (rounded up to a power of two; shrunk, not below 16, for few rows).
    interpret: run the kernel in Pallas' interpreter (CPU).

  Returns:
    [R, fanout] int32 positions within each row, -1 in slots >= degree.
  """
  del row_start
  r = degree.shape[0]
  if fanout < 1:
    return jnp.zeros((r, 0), jnp.int32)
  width = _pow2(fanout)  # Triton tiles need power-of-two shapes
  block = min(_pow2(block_rows), max(16, _pow2(r)))  # >= 16 rows: no degenerate Triton tiles
  padded = -(-max(r, 1) // block) * block
  degree = jnp.pad(degree.astype(jnp.int32), (0, padded - r))
  node_ids = jnp.pad(node_ids.astype(jnp.int32), (0, padded - r))
  key_arr = jnp.reshape(_as_key(key), (1,))
  params = {}
  if not interpret and pltriton is not None:
    params["compiler_params"] = pltriton.CompilerParams(num_warps=4, num_stages=1)
  out = pl.pallas_call(
      functools.partial(_kernel, hop=hop, fanout=fanout),
      out_shape=jax.ShapeDtypeStruct((padded, width), jnp.int32),
      grid=(padded // block,),
      in_specs=[pl.BlockSpec((1,), lambda b: (0,)),
                pl.BlockSpec((block,), lambda b: (b,)),
                pl.BlockSpec((block,), lambda b: (b,))],
      out_specs=pl.BlockSpec((block, width), lambda b: (b, 0)),
      interpret=interpret,
      name="floyd_sample_rows",
      **params,
  )(key_arr, degree, node_ids)
  return out[:r, :fanout]


def sample_rows_reference(row_start, degree, node_ids, key, hop: int, fanout: int, *,
                          block_rows: int = DEFAULT_BLOCK_ROWS, interpret: bool = False):
  """Plain `jnp` version of `sample_rows` (same signature; block_rows/interpret are ignored)."""
  del row_start, block_rows, interpret
  if fanout < 1:
    return jnp.zeros((degree.shape[0], 0), jnp.int32)
  return _floyd_tile(degree.astype(jnp.int32), node_ids.astype(jnp.int32), _as_key(key), hop,
                     fanout, fanout)


def _relabel(known, num_known, cand, valid):
  """Local ids for one hop's candidates, given the nodes already numbered.

  Args:
    known: [K] int32 global ids of local nodes 0..K-1 (entries >= num_known are ignored).
    num_known: [] int32 count of real known nodes.
    cand: [C] int32 candidate global ids in (expanded node, slot) order.
    valid: [C] bool.

  Returns:
    local: [C] int32 local id of each valid candidate (garbage where invalid).
    is_new: [C] bool, the candidate is a node's first occurrence.
    rank: [C] int32 order of new candidates (valid where is_new).
    num_new: [] int32.
  """
  k, c = known.shape[0], cand.shape[0]
  big = jnp.int32(_INT32_MAX)
  ids = jnp.concatenate([jnp.where(jnp.arange(k) < num_known, known, big),
                         jnp.where(valid, cand, big)])
  m = k + c
  iota = jnp.arange(m, dtype=jnp.int32)
  sorted_ids, order = lax.sort((ids, iota), num_keys=1, is_stable=True)
  first = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
  leader_pos = lax.cummax(jnp.where(first, iota, 0))  # sorted position of each run's head
  leader = order[leader_pos]  # its original index: the earliest occurrence
  leader_of = jnp.zeros((m,), jnp.int32).at[order].set(leader, unique_indices=True)
  lead_c = leader_of[k:]
  is_new = valid & (lead_c == k + jnp.arange(c, dtype=jnp.int32))
  new_i = is_new.astype(jnp.int32)
  rank = jnp.cumsum(new_i) - 1
  local = jnp.where(lead_c < k, lead_c, num_known + rank[jnp.clip(lead_c - k, 0, c - 1)])
  return local, is_new, rank, jnp.sum(new_i)


def _as_key(key):
  """A uint32 scalar from a Python int (any size, taken mod 2^32), numpy scalar or jax array."""
  if isinstance(key, (int, np.integer)):
    key = np.uint32(int(key) & 0xFFFFFFFF)
  return jnp.asarray(key).astype(jnp.uint32)


def _check_caps(num_seeds: int, fanouts, max_nodes: int, max_edges: int) -> tuple[int, int]:
  need_n, need_e = subgraph_lib.caps(num_seeds, fanouts)
  max_nodes = need_n if max_nodes is None else int(max_nodes)
  max_edges = need_e if max_edges is None else int(max_edges)
  if max_nodes < need_n or max_edges < need_e:
    raise GraphError(f"caps max_nodes={max_nodes}, max_edges={max_edges} are below the worst case "
                     f"({need_n}, {need_e}) for {num_seeds} seeds and fanouts {tuple(fanouts)}")
  return max_nodes, max_edges


def sample(dcsr: DeviceCSR, seeds, key, fanouts: Sequence[int], max_nodes: int | None = None,
           max_edges: int | None = None, *, use_pallas: bool = True, interpret: bool = False,
           block_rows: int = DEFAULT_BLOCK_ROWS) -> subgraph_lib.SampledSubgraph:
  """The k-hop sample of `seeds` (jittable; fanouts, caps and flags static).

  Args:
    dcsr: the graph on device.
    seeds: [B] int32 distinct node ids; negative entries are padding and must come last.
    key: uint32 request key.
    fanouts: neighbours per node at each hop, e.g. (15, 10, 5).
    max_nodes, max_edges: output sizes, default (and at least) `subgraph.caps(B, fanouts)`.
    use_pallas: draw positions with the Pallas kernel, else with the `jnp` reference.
    interpret: run the kernel in Pallas' interpreter (needed on CPU).
    block_rows: kernel rows per program.

  Returns:
    A `SampledSubgraph` of jax arrays (layout in `serving/subgraph.py`).
  """
  fanouts = tuple(int(k) for k in fanouts)
  seeds = jnp.asarray(seeds).astype(jnp.int32)
  b = seeds.shape[0]
  max_nodes, max_edges = _check_caps(b, fanouts, max_nodes, max_edges)
  total_nodes, total_edges = subgraph_lib.caps(b, fanouts)
  total_nodes -= 1  # the internal buffer has no spare slot
  key = _as_key(key)
  draw = functools.partial(sample_rows if use_pallas else sample_rows_reference,
                           block_rows=block_rows, interpret=interpret)

  num_seeds = jnp.sum((seeds >= 0).astype(jnp.int32))
  nodes = jnp.full((total_nodes,), -1, jnp.int32).at[:b].set(jnp.where(seeds >= 0, seeds, -1))
  senders = jnp.zeros((total_edges,), jnp.int32)
  receivers = jnp.zeros((total_edges,), jnp.int32)
  frontier, frontier_local, frontier_count = seeds, jnp.arange(b, dtype=jnp.int32), num_seeds
  n, e, known_cap = num_seeds, jnp.int32(0), b
  for hop, k in enumerate(fanouts):
    f = frontier.shape[0]
    live = jnp.arange(f) < frontier_count
    v = jnp.where(live, frontier, 0)
    start = dcsr.indptr[v]
    degree = jnp.where(live, dcsr.indptr[v + 1] - start, 0)
    pos = draw(start, degree, v, key, hop, k)  # [f, k]
    ok = pos >= 0
    if dcsr.indices.shape[0]:
      nbr = jnp.where(ok, dcsr.indices[start[:, None] + jnp.maximum(pos, 0)], -1)
    else:  # no edges at all: nothing to gather (and a gather from [0] cannot be built)
      nbr = jnp.full(pos.shape, -1, jnp.int32)
    cand, valid = nbr.reshape(-1), ok.reshape(-1)
    c = cand.shape[0]
    local, is_new, rank, num_new = _relabel(nodes[:known_cap], n, cand, valid)
    nodes = nodes.at[jnp.where(is_new, n + rank, total_nodes)].set(cand, mode="drop")
    slot = jnp.where(valid, e + jnp.cumsum(valid.astype(jnp.int32)) - 1, total_edges)
    senders = senders.at[slot].set(local, mode="drop")
    receivers = receivers.at[slot].set(jnp.repeat(frontier_local, k), mode="drop")
    e = e + jnp.sum(valid.astype(jnp.int32))
    if hop + 1 < len(fanouts):
      frontier = jnp.zeros((c,), jnp.int32).at[jnp.where(is_new, rank, c)].set(cand, mode="drop")
      frontier_local = n + jnp.arange(c, dtype=jnp.int32)
      frontier_count = num_new
    n = n + num_new
    known_cap += c

  node_ids = jnp.full((max_nodes,), -1, jnp.int32).at[:total_nodes].set(nodes)
  node_mask = jnp.arange(max_nodes) < n
  edge_mask = jnp.arange(max_edges) < e
  pad = jnp.int32(max_nodes - 1)
  senders = jnp.full((max_edges,), pad).at[:total_edges].set(senders)
  receivers = jnp.full((max_edges,), pad).at[:total_edges].set(receivers)
  return subgraph_lib.SampledSubgraph(
      nodes=jnp.where(node_mask, node_ids, -1),
      senders=jnp.where(edge_mask, senders, pad),
      receivers=jnp.where(edge_mask, receivers, pad),
      node_mask=node_mask, edge_mask=edge_mask,
      num_nodes=n, num_edges=e, num_seeds=num_seeds)


class DeviceSampler:
  """A graph copied to one device once, and a jitted sampler compiled once per seed bucket.

  Example:
    sampler = DeviceSampler(graph, fanouts=(15, 10, 5))
    sub = sampler.sample(np.array([3, 17, 42]), key=7)   # SampledSubgraph of jax arrays
  """

  def __init__(self, graph: CSRGraph, fanouts: Sequence[int], device=None,
               interpret: bool | None = None, use_pallas: bool = True,
               block_rows: int = DEFAULT_BLOCK_ROWS):
    """Args:
      graph: the host CSR (copied to `device` as int32).
      fanouts: neighbours per node at each hop.
      device: a jax device (default: the first).
      interpret: run the Pallas kernel interpreted; default True unless the device is a GPU.
      use_pallas: False draws with the pure-`jnp` reference (the jitted XLA sampler).
      block_rows: kernel rows per program.
    """
    self.fanouts = tuple(int(k) for k in fanouts)
    self.device = device or jax.devices()[0]
    self.num_nodes = graph.num_nodes
    self.dcsr = to_device(graph, self.device)
    self.interpret = (self.device.platform != "gpu") if interpret is None else bool(interpret)
    self.use_pallas = bool(use_pallas)
    self.num_traces = 0  # bumped at each trace: one per bucket

    def run(dcsr, seeds, key):
      self.num_traces += 1
      return sample(dcsr, seeds, key, self.fanouts, use_pallas=self.use_pallas,
                    interpret=self.interpret, block_rows=block_rows)

    self._run = jax.jit(run)

  def sample(self, seeds, key) -> subgraph_lib.SampledSubgraph:
    """Sample around `seeds` ([B] distinct ids in [0, num_nodes)) with request key `key`.

    Seeds are padded with -1 to `subgraph.bucket(B)`, so the outputs have sizes
    `subgraph.caps(bucket(B), fanouts)`.
    """
    seeds = np.asarray(seeds).reshape(-1)
    if seeds.size and (seeds.min() < 0 or seeds.max() >= self.num_nodes):
      bad = seeds[(seeds < 0) | (seeds >= self.num_nodes)][0]
      raise GraphError(f"seed {int(bad)} is not a node id in [0, {self.num_nodes})")
    if np.unique(seeds).size != seeds.size:
      raise GraphError("seeds must be distinct (deduplicate and map repeats back)")
    padded = np.full(subgraph_lib.bucket(seeds.size), -1, np.int32)
    padded[:seeds.size] = seeds
    seeds_d = jax.device_put(padded, self.device)
    key_d = jax.device_put(np.uint32(int(key) & 0xFFFFFFFF), self.device)
    return self._run(self.dcsr, seeds_d, key_d)
