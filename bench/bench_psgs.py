r"""How well PSGS predicts a request's sampled edges, vs torch-quiver's single-draw proxy.

  python -m bench.bench_psgs [--graph=slashdot | rmat --scale=17 --edges=2000000 |
      edges.txt.gz | graph.npz | ogb_dir] [--fanouts=15,10,5] [--requests=400]
      [--median_batch=16 --sigma=1.8 --max_batch=1024]

Requests get a skewed number of seeds: round(lognormal(log(median_batch), sigma)) clipped to
[1, max_batch] (the defaults give ~9% single-seed requests and ~1% at the 1024 cap), seeds drawn
uniformly without replacement, one key per request. Each request is sampled once with
`HostSampler` (the "actual" sampled edges) and predicted by
  - psgs: Quiver's sum of per-node PSGS over the seeds;
  - psgs_overlap: the same with the non-backtracking and occupancy corrections (`OverlapPSGS`);
  - single_draw: torch-quiver's proxy, the sum of one real single-seed sample size per seed.
It prints Pearson r and the mean absolute percentage error (MAPE) of each predictor over all
requests and per batch-size range, and the cost of precomputing and of predicting one request.
Target (Quiver's claim that PSGS is a good predictor): Pearson r >= 0.9.
"""

import argparse
import time

import numpy as np

from bench import graph_args
from serving import host_sampler
from serving import psgs

def batch_sizes(rng, count, median, sigma, max_batch):
  """[count] skewed batch sizes in [1, max_batch] (lognormal, rounded)."""
  raw = np.exp(rng.normal(np.log(median), sigma, count))
  return np.clip(np.round(raw), 1, max_batch).astype(np.int64)


def _report(name, predicted, actual):
  keep = actual > 0
  r = np.corrcoef(predicted, actual)[0, 1] if actual.size > 1 and actual.std() > 0 else np.nan
  mape = np.mean(np.abs(predicted[keep] - actual[keep]) / actual[keep]) * 100
  return f"{name}: r={r:.4f} MAPE={mape:.1f}%"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--graph", default="slashdot",
                 help="'slashdot' (../shared/data/snap), 'rmat', or an edge list / .npz / OGB dir")
  p.add_argument("--scale", type=int, default=17, help="R-MAT: 2^scale nodes")
  p.add_argument("--edges", type=int, default=2_000_000, help="R-MAT: pairs drawn")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--fanouts", default="15,10,5")
  p.add_argument("--requests", type=int, default=400)
  p.add_argument("--median_batch", type=float, default=16)
  p.add_argument("--sigma", type=float, default=1.8, help="lognormal sigma of the batch size")
  p.add_argument("--max_batch", type=int, default=1024)
  p.add_argument("--key", type=int, default=0, help="base key (request r uses key + r + 1)")
  args = p.parse_args(argv)
  fanouts = [int(k) for k in args.fanouts.split(",")]

  graph, desc = graph_args.build_graph(args)
  print(f"graph: {desc}: {graph.num_nodes} nodes, {graph.num_edges} CSR entries; "
        f"fanouts {fanouts}")
  rng = np.random.default_rng(args.seed)
  sizes = batch_sizes(rng, args.requests, args.median_batch, args.sigma,
                      min(args.max_batch, graph.num_nodes))
  requests = [rng.choice(graph.num_nodes, b, replace=False) for b in sizes]
  print(f"{args.requests} requests, seeds per request: min {sizes.min()}, median "
        f"{int(np.median(sizes))}, mean {sizes.mean():.0f}, max {sizes.max()} "
        f"({(sizes == 1).mean():.0%} single-seed)")

  t = time.perf_counter()
  per_node = psgs.node_psgs(graph, fanouts)
  t_psgs = time.perf_counter() - t
  t = time.perf_counter()
  overlap = psgs.OverlapPSGS(graph, fanouts)
  t_overlap = time.perf_counter() - t
  sampler = host_sampler.HostSampler(graph, fanouts)
  t = time.perf_counter()
  single = psgs.single_draw_sizes(graph, fanouts, args.key)
  t_single = time.perf_counter() - t
  print(f"precompute: psgs {t_psgs:.2f} s, psgs_overlap {t_overlap:.2f} s, single_draw "
        f"{t_single:.2f} s (one sample per node)")

  acc = psgs.predictor_accuracy(graph, fanouts, requests, args.key, sampler=sampler)
  actual = acc.actual.astype(np.float64)
  print(f"\nactual sampled edges per request: min {actual.min():.0f}, median "
        f"{np.median(actual):.0f}, max {actual.max():.0f}")
  print(f"{'predictor':<14}{'Pearson r':>11}{'MAPE %':>9}{'mean pred/actual':>18}"
        f"{'predict us/req':>16}")
  cost = {"psgs": lambda s: psgs.request_size(per_node, s), "psgs_overlap": overlap,
          "single_draw": lambda s: psgs.request_size(single, s)}
  for name in ["psgs", "psgs_overlap", "single_draw"]:
    t = time.perf_counter()
    for s in requests:
      cost[name](s)
    us = (time.perf_counter() - t) / len(requests) * 1e6
    ratio = np.mean(acc.predicted[name] / np.maximum(actual, 1))
    print(f"{name:<14}{acc.pearson_r[name]:>11.4f}{acc.mape[name]:>9.1f}{ratio:>18.2f}{us:>16.1f}")
  print("\nby batch size:")
  for lo, hi in [(1, 1), (2, 16), (17, 128), (129, 1024)]:
    sel = (sizes >= lo) & (sizes <= hi)
    if sel.sum() < 2:
      continue
    parts = [_report(n, acc.predicted[n][sel], actual[sel])
             for n in ["psgs", "psgs_overlap", "single_draw"]]
    print(f"  {lo}-{hi} seeds ({sel.sum()} requests): " + "; ".join(parts))
  best = max(acc.pearson_r, key=acc.pearson_r.get)
  print(f"\ntarget Pearson r >= 0.9: psgs {acc.pearson_r['psgs']:.4f} "
        f"({'met' if acc.pearson_r['psgs'] >= 0.9 else 'NOT met'}); best: {best}")


if __name__ == "__main__":
  main()
