r"""Device (Pallas / jitted jnp) vs host (numba) k-hop sampling speed on a products-sized graph.

  python -m bench.bench_device_sampler [--graph=rmat --scale=21 --edges=31000000]
      [--graph=edges.txt.gz | graph.npz | ogb_dir] [--fanouts=15,10,5]
      [--batches=1,64,1024,4096] [--runs=20] [--paths=pallas,jnp,host] [--out_json=res.json]

The default graph is R-MAT at scale 21 (2.1M nodes; ogbn-products has 2.45M) with 31M undirected
pairs drawn, i.e. ~62M CSR entries after symmetrisation minus duplicates and self loops (OGB counts
products' 61.9M edges as undirected pairs, so `--edges=62000000` matches its 124M CSR entries).
`--num_nodes=N` folds the R-MAT ids onto N nodes (id mod N; ids are already randomly permuted).

For each path and batch size it times `sample(seeds, key)` on fresh random distinct seeds and a new
key per run (seeds copied to the device, result blocked on; host-side seed checks included), after
one warm-up call that compiles. It prints the median ms per batch and sampled edges per second
(mean edges of the runs / median time), the device/host ratio, whether the device output equals
the host sampler's, and the kernel alone (`sample_rows`, Pallas vs jnp) on each hop's row count.

Imports only numpy, jax, numba (for the host sampler, optional) and `serving.*` modules that do not
import jraph, so it runs from the repo root of a plain checkout with a CUDA jax. On a CPU the
Pallas kernel runs interpreted (slow: that column is for completeness, not speed).
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import graph_args
from serving import device_sampler as ds
from serving import graph as graph_lib
from serving import subgraph as subgraph_lib


def build_graph(args) -> tuple[graph_lib.CSRGraph, str]:
  """`graph_args.build_graph`, then (R-MAT with --num_nodes) ids folded onto that many nodes."""
  g, desc = graph_args.build_graph(args)
  if args.graph == "rmat" and args.num_nodes:
    rows = np.repeat(np.arange(g.num_nodes, dtype=np.int64), g.degrees())
    g = graph_lib.from_edges(rows % args.num_nodes, g.indices.astype(np.int64) % args.num_nodes,
                             num_nodes=args.num_nodes, drop_self_loops=True)
    desc += f" folded onto {args.num_nodes} nodes"
  return g, desc


def _median_time(fn, runs: int) -> tuple[float, list]:
  times, outs = [], []
  for i in range(runs):
    t = time.perf_counter()
    out = fn(i)
    times.append(time.perf_counter() - t)
    outs.append(out)
  return float(np.median(times)), outs


def _same(dev, host) -> bool:
  n, e = int(dev.num_nodes), int(dev.num_edges)
  return (n == int(host.num_nodes) and e == int(host.num_edges)
          and np.array_equal(np.asarray(dev.nodes)[:n], np.asarray(host.nodes)[:n])
          and np.array_equal(np.asarray(dev.senders)[:e], np.asarray(host.senders)[:e])
          and np.array_equal(np.asarray(dev.receivers)[:e], np.asarray(host.receivers)[:e]))


def bench_samplers(graph, args, fanouts, batches, paths) -> list[dict]:
  samplers = {}
  if "pallas" in paths:
    samplers["pallas"] = ds.DeviceSampler(graph, fanouts, use_pallas=True,
                                          block_rows=args.block_rows)
  if "jnp" in paths:
    samplers["jnp"] = ds.DeviceSampler(graph, fanouts, use_pallas=False)
  if "host" in paths:
    try:
      from serving import host_sampler  # pylint: disable=g-import-not-at-top
      t = time.perf_counter()
      samplers["host"] = host_sampler.HostSampler(graph, fanouts)
      print(f"host sampler ready in {time.perf_counter() - t:.1f} s (numba compile or cache load)")
    except ImportError as e:
      print(f"host sampler unavailable ({e}); skipping it")
  rng = np.random.default_rng(args.seed + 1)
  rows = []
  for b in batches:
    seed_sets = [rng.choice(graph.num_nodes, b, replace=False).astype(np.int32)
                 for _ in range(args.runs)]
    keys = rng.integers(0, 2**32, args.runs, dtype=np.uint64)
    last = {}
    for name, s in samplers.items():
      if name == "host":
        call = lambda i, s=s: s.sample(seed_sets[i], int(keys[i]))
      else:
        call = lambda i, s=s: jax.block_until_ready(s.sample(seed_sets[i], int(keys[i])))
      t = time.perf_counter()
      try:
        first = call(0)
      except Exception as e:  # pylint: disable=broad-except
        print(f"  {name:<7} batch {b:>5}: FAILED ({type(e).__name__}: {str(e)[:300]})")
        rows.append(dict(path=name, batch=b, error=f"{type(e).__name__}: {str(e)[:300]}"))
        continue
      warm_s = time.perf_counter() - t
      med, outs = _median_time(call, args.runs)
      edges = float(np.mean([int(o.num_edges) for o in outs]))
      nodes = float(np.mean([int(o.num_nodes) for o in outs]))
      last[name] = first
      row = dict(path=name, batch=b, ms=med * 1e3, edges_per_s=edges / med, mean_edges=edges,
                 mean_nodes=nodes, first_call_s=warm_s)
      rows.append(row)
      print(f"  {name:<7} batch {b:>5}: {med * 1e3:9.3f} ms  {edges / med / 1e6:9.2f} M edges/s  "
            f"({edges:.0f} edges, {nodes:.0f} nodes; first call {warm_s:.2f} s)", flush=True)
    if "host" in last:
      for name in ("pallas", "jnp"):
        if name in last:
          same = _same(last[name], last["host"])
          for row in rows:
            if row["path"] == name and row["batch"] == b:
              row["same_as_host"] = same
          if not same:
            print(f"  WARNING: {name} output differs from the host sampler at batch {b}")
  return rows


def check_kernel(block_rows: int) -> bool:
  """The compiled (or, on CPU, interpreted) kernel == the jnp reference on edge-case rows."""
  interpret = jax.devices()[0].platform != "gpu"
  r = np.random.default_rng(0)
  ok = True
  for hop, k in enumerate((15, 10, 5, 1)):
    special = [0, 1, k - 1, k, k + 1, 2 * k, 1000, 2**31 - 1]
    deg = np.concatenate([special, r.integers(0, 4 * k, 3000), r.integers(0, 10**7, 1000)])
    deg = jnp.asarray(np.maximum(deg, 0).astype(np.int32))
    nodes = jnp.asarray(r.integers(0, 2**31 - 1, deg.shape[0]).astype(np.int32))
    key = np.uint32(r.integers(0, 2**32))
    got = ds.sample_rows(deg, deg, nodes, key, hop, k, block_rows=block_rows,
                         interpret=interpret)
    want = ds.sample_rows_reference(deg, deg, nodes, key, hop, k)
    ok &= bool(np.array_equal(np.asarray(got), np.asarray(want)))
  return ok


def bench_kernel(graph, args, fanouts, batch) -> list[dict]:
  """`sample_rows` alone on each hop's worst-case row count for `batch` seeds (random nodes)."""
  out = []
  deg = graph.degrees()
  rng = np.random.default_rng(args.seed + 2)
  interpret = jax.devices()[0].platform != "gpu"
  rows = batch
  for hop, k in enumerate(fanouts):
    v = rng.integers(0, graph.num_nodes, rows).astype(np.int32)
    d = jnp.asarray(deg[v].astype(np.int32))
    start = jnp.asarray(graph.indptr[v].astype(np.int32))
    vv = jnp.asarray(v)
    res = {}
    for name, fn in (("pallas", ds.sample_rows), ("jnp", ds.sample_rows_reference)):
      f = jax.jit(lambda a, b_, c, key, fn=fn, k=k, hop=hop: fn(
          a, b_, c, key, hop, k, block_rows=args.block_rows, interpret=interpret))
      jax.block_until_ready(f(start, d, vv, jnp.uint32(0)))
      med, outs = _median_time(lambda i, f=f: jax.block_until_ready(
          f(start, d, vv, jnp.uint32(i + 1))), args.runs)
      res[name] = (med, outs[-1])
    same = bool(np.array_equal(np.asarray(res["pallas"][1]), np.asarray(res["jnp"][1])))
    row = dict(hop=hop, rows=rows, fanout=k, pallas_ms=res["pallas"][0] * 1e3,
               jnp_ms=res["jnp"][0] * 1e3, same=same)
    out.append(row)
    print(f"  hop {hop}: {rows:>8} rows x {k:>2}: pallas {row['pallas_ms']:8.3f} ms  "
          f"jnp {row['jnp_ms']:8.3f} ms  equal={same}", flush=True)
    rows *= k
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--graph", default="rmat", help="'rmat', or an edge list / .npz / OGB dir")
  p.add_argument("--scale", type=int, default=21, help="R-MAT: 2^scale nodes")
  p.add_argument("--edges", type=int, default=31_000_000, help="R-MAT: pairs drawn")
  p.add_argument("--num_nodes", type=int, default=0, help="R-MAT: fold ids onto this many nodes")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--fanouts", default="15,10,5")
  p.add_argument("--batches", default="1,64,1024,4096")
  p.add_argument("--runs", type=int, default=20, help="timed runs per point (median kept)")
  p.add_argument("--paths", default="pallas,jnp,host", help="subset of pallas,jnp,host")
  p.add_argument("--block_rows", type=int, default=ds.DEFAULT_BLOCK_ROWS)
  p.add_argument("--kernel_batch", type=int, default=4096,
                 help="seeds whose per-hop row counts the kernel-only table uses (0: skip)")
  p.add_argument("--out_json", default="")
  args = p.parse_args(argv)
  fanouts = tuple(int(x) for x in args.fanouts.split(","))
  batches = [int(x) for x in args.batches.split(",")]
  paths = set(args.paths.split(","))

  dev = jax.devices()[0]
  print(f"jax {jax.__version__}, device {dev.device_kind} ({dev.platform}); Pallas "
        f"{'interpreted' if dev.platform != 'gpu' else 'Triton'}; {os.cpu_count()} CPUs")
  t = time.perf_counter()
  graph, desc = build_graph(args)
  build_s = time.perf_counter() - t
  print(f"graph: {desc}: {graph.num_nodes} nodes, {graph.num_edges} CSR entries, max degree "
        f"{int(graph.degrees().max())}; built in {build_s:.1f} s", flush=True)
  print(f"fanouts {list(fanouts)}; worst-case caps per batch: "
        + ", ".join(f"{b}: {subgraph_lib.caps(subgraph_lib.bucket(b), fanouts)}" for b in batches))

  kernel_ok = None
  if "pallas" in paths:
    try:
      kernel_ok = check_kernel(args.block_rows)
      print(f"kernel == jnp reference on edge-case rows: {kernel_ok}")
    except Exception as e:  # pylint: disable=broad-except
      # Keep the run (one GPU slot) useful: time the jnp and host paths without the kernel.
      print(f"Pallas kernel failed ({type(e).__name__}: {e}); dropping the pallas path")
      paths.discard("pallas")
  rows = bench_samplers(graph, args, fanouts, batches, paths)
  kernel = []
  if args.kernel_batch and "pallas" in paths:
    kernel = bench_kernel(graph, args, fanouts, args.kernel_batch)

  print(f"\n{'batch':>6} | " + " | ".join(f"{n + ' ms':>11} {n + ' Me/s':>11}"
                                       for n in ("pallas", "jnp", "host")) + " | host/pallas")
  for b in batches:
    cells, by = [], {r["path"]: r for r in rows if r["batch"] == b and "ms" in r}
    for n in ("pallas", "jnp", "host"):
      r = by.get(n)
      cells.append(f"{r['ms']:>11.3f} {r['edges_per_s'] / 1e6:>11.2f}" if r else f"{'-':>11} "
                   f"{'-':>11}")
    ratio = (f"{by['host']['ms'] / by['pallas']['ms']:.2f}x" if "host" in by and "pallas" in by
             else "-")
    same = {n: by[n].get("same_as_host") for n in ("pallas", "jnp") if n in by}
    print(f"{b:>6} | " + " | ".join(cells) + f" | {ratio:>11}   same as host: {same}")
  if args.out_json:
    with open(args.out_json, "w") as f:
      json.dump(dict(jax=jax.__version__, device=dev.device_kind, platform=dev.platform,
                     graph=desc, num_nodes=graph.num_nodes, num_edges=graph.num_edges,
                     build_s=build_s, fanouts=list(fanouts), runs=args.runs,
                     block_rows=args.block_rows, kernel_ok=kernel_ok, samplers=rows,
                     kernel=kernel), f, indent=1)
    print(f"wrote {args.out_json}")


if __name__ == "__main__":
  main(sys.argv[1:])
