r"""Host (numba) k-hop sampler vs PyG's CPU neighbour sampler: throughput and batch-1 latency.

  python -m bench.bench_host_sampler [--graph=slashdot | rmat --scale=17 --edges=2000000 |
      edges.txt.gz | graph.npz | ogb_dir] [--fanouts=15,10,5] [--threads=2]
      [--runs=20] [--latency_runs=2000] [--batch=1024]

Both samplers get the same graph (both directions of every edge), the same seeds (random,
distinct, fresh per run) and the same thread count (`numba.set_num_threads`,
`torch.set_num_threads`); runs alternate between them so machine noise hits both alike. Sampled
edges are counted the same way for both: the edges of the output subgraph (`num_edges` here,
`row.numel()` of PyG's output), i.e. one per draw, including draws of nodes already sampled.
OMP_WAIT_POLICY defaults to PASSIVE (see `HostSampler`); PyG's sampling op is single-threaded.

  - SEPS (sampled edges per second) at `--batch` seeds: total edges / total time over `--runs`.
  - batch-1 latency: ms per single-seed request over `--latency_runs` requests (mean, p50, p99).

The host sampler is timed through `HostSampler.sample` (padded `SampledSubgraph` output, seed
checks included). PyG is timed two ways when available: `torch_geometric.sampler.NeighborSampler`
(`sample_from_nodes`, what `NeighborLoader` calls per batch; it runs pyg-lib's op when pyg-lib is
installed, else torch_sparse's) and torch_sparse's C++ op directly
(`torch.ops.torch_sparse.neighbor_sample`). Without torch_geometric / torch_sparse the bench says
so and measures the host sampler alone.
"""

import argparse
import os
import time
import warnings

import numpy as np

from bench import graph_args

def _pyg_samplers(graph, fanouts):
  """{name: fn(seeds int64 numpy) -> edges} for PyG's samplers that import, and notes."""
  notes, fns = [], {}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return fns, [f"torch is not importable ({e}): PyG not measured"]
  rowptr = torch.from_numpy(graph.indptr.astype(np.int64))
  col = torch.from_numpy(graph.indices.astype(np.int64))
  # PyG samples a node's incoming edges (CSC: column v lists its sources); our CSR row v lists
  # v's neighbours, so rowptr/col serve as PyG's colptr/row unchanged.
  op = None
  try:
    import torch_sparse  # pylint: disable=g-import-not-at-top,unused-import

    def op(seeds):
      _, row, _, _ = torch.ops.torch_sparse.neighbor_sample(rowptr, col, seeds, fanouts, False,
                                                            True)
      return row.numel()
    op_name = "torch_sparse.neighbor_sample"
  except (ImportError, OSError) as e:
    notes.append(f"torch_sparse is not importable ({e}): raw op not measured")
  if op is not None:
    fns[f"PyG op ({op_name})"] = lambda s: op(torch.from_numpy(s))
  try:
    from torch_geometric.data import Data  # pylint: disable=g-import-not-at-top
    from torch_geometric.sampler import NeighborSampler  # pylint: disable=g-import-not-at-top
    from torch_geometric.sampler import NodeSamplerInput  # pylint: disable=g-import-not-at-top
    rows = np.repeat(np.arange(graph.num_nodes, dtype=np.int64), graph.degrees())
    # edge_index [2, E] as (source, target) = (neighbour, v): v's incoming edges are its row.
    data = Data(edge_index=torch.from_numpy(np.stack([graph.indices.astype(np.int64), rows])),
                num_nodes=graph.num_nodes)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      sampler = NeighborSampler(data, num_neighbors=list(fanouts), replace=False)
    if any("pyg-lib" in str(w.message) for w in caught):
      notes.append("pyg-lib is not installed: NeighborSampler runs on torch_sparse's op (PyG "
                   "calls that path deprecated; pyg-lib's op may be faster)")

    def high_level(seeds):
      out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=torch.from_numpy(seeds)))
      return out.row.numel()
    fns["PyG NeighborSampler"] = high_level
  except ImportError as e:
    notes.append(f"torch_geometric is not importable ({e}): NeighborSampler not measured")
  return fns, notes


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--graph", default="slashdot",
                 help="'slashdot' (../shared/data/snap), 'rmat', or an edge list / .npz / OGB dir")
  p.add_argument("--scale", type=int, default=17, help="R-MAT: 2^scale nodes")
  p.add_argument("--edges", type=int, default=2_000_000, help="R-MAT: pairs drawn")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--fanouts", default="15,10,5")
  p.add_argument("--batch", type=int, default=1024, help="seeds per throughput batch")
  p.add_argument("--runs", type=int, default=20, help="timed throughput batches per sampler")
  p.add_argument("--latency_runs", type=int, default=2000, help="timed batch-1 requests")
  p.add_argument("--threads", type=int, default=2, help="numba and torch threads")
  p.add_argument("--parallel_min_draws", type=int, default=-1,
                 help="hops with at least this many draws use numba threads (-1: the default)")
  args = p.parse_args(argv)
  fanouts = [int(k) for k in args.fanouts.split(",")]
  # Before numba or torch load OpenMP: idle OpenMP workers otherwise spin for a while after each
  # parallel region, stealing the cores the calling thread needs on a small or shared machine.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

  import numba  # pylint: disable=g-import-not-at-top
  from serving import host_sampler  # pylint: disable=g-import-not-at-top
  numba.set_num_threads(args.threads)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
  except ImportError:
    pass

  t = time.perf_counter()
  graph, desc = graph_args.build_graph(args)
  print(f"graph: {desc}: {graph.num_nodes} nodes, {graph.num_edges} CSR entries "
        f"(loaded in {time.perf_counter() - t:.1f} s); fanouts {fanouts}; "
        f"{args.threads} threads; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
  t = time.perf_counter()
  host = host_sampler.HostSampler(graph, fanouts)
  if args.parallel_min_draws >= 0:
    host.parallel_min_draws = args.parallel_min_draws
  print(f"host sampler warm-up (numba compile or cache load): {time.perf_counter() - t:.2f} s")
  samplers = {"host (numba)": lambda s, key: int(host.sample(s, key).num_edges)}
  pyg, notes = _pyg_samplers(graph, fanouts)
  for name, fn in pyg.items():
    samplers[name] = lambda s, key, fn=fn: fn(s)
  for note in notes:
    print("note:", note)
  try:
    print(f"numba threading layer: {numba.threading_layer()}; hops with >= "
          f"{host.parallel_min_draws} draws run in parallel")
  except ValueError:  # no parallel region has run
    pass

  r = np.random.default_rng(args.seed)
  batch = min(args.batch, graph.num_nodes)
  big = [r.choice(graph.num_nodes, batch, replace=False).astype(np.int64) for _ in range(args.runs)]
  single = r.integers(0, graph.num_nodes, args.latency_runs).astype(np.int64)
  for fn in samplers.values():  # warm-up: first-call costs (thread pools, allocators)
    fn(big[0], 0)
    fn(single[:1], 0)

  res = {name: {"time": 0.0, "edges": 0, "lat": []} for name in samplers}
  for i, seeds in enumerate(big):  # alternate samplers run by run
    for name, fn in samplers.items():
      t = time.perf_counter()
      e = fn(seeds, i + 1)
      res[name]["time"] += time.perf_counter() - t
      res[name]["edges"] += e
  for i, v in enumerate(single):
    seeds = single[i:i + 1]
    for name, fn in samplers.items():
      t = time.perf_counter()
      fn(seeds, i + 1)
      res[name]["lat"].append(time.perf_counter() - t)

  base = "host (numba)"
  ref = next((n for n in samplers if n.startswith("PyG NeighborSampler")), None)
  ref = ref or next((n for n in samplers if n != base), None)
  print(f"\nbatch {batch}: {args.runs} runs; batch 1: {args.latency_runs} requests "
        f"(ratios: host vs {ref or 'n/a'})")
  print(f"{'sampler':<44}{'edges/batch':>12}{'SEPS':>12}{'b1 mean ms':>12}{'b1 p50 ms':>11}"
        f"{'b1 p99 ms':>11}")
  for name, d in res.items():
    lat = np.array(d["lat"]) * 1e3
    d["seps"] = d["edges"] / d["time"]
    d["mean_ms"] = float(lat.mean())
    print(f"{name:<44}{d['edges'] / args.runs:>12.0f}{d['seps'] / 1e6:>11.2f}M"
          f"{lat.mean():>12.3f}{np.median(lat):>11.3f}{np.percentile(lat, 99):>11.3f}")
  if ref is not None:
    h, q = res[base], res[ref]
    print(f"\nhost / {ref}: SEPS at batch {batch} {h['seps'] / q['seps']:.2f}x (target >= 2x); "
          f"batch-1 latency {h['mean_ms']:.3f} vs {q['mean_ms']:.3f} ms "
          f"({q['mean_ms'] / h['mean_ms']:.2f}x faster; target: not slower)")
  for name in samplers:
    if name not in (base, ref):
      print(f"host / {name}: SEPS {res[base]['seps'] / res[name]['seps']:.2f}x, batch-1 latency "
            f"{res[name]['mean_ms'] / res[base]['mean_ms']:.2f}x faster")


if __name__ == "__main__":
  main()
