r"""Adaptive vs fixed sampling dispatch under a mixed workload (Quiver's latency-throughput figure).

  python -m bench.bench_dispatch [--graph=slashdot | rmat | edges.txt.gz]
      [--fanouts=15,10,5] [--requests=400] [--out_png=dispatch.png] [--out_json=dispatch.json]

1. Calibrates the dispatcher on this machine: both samplers (numba host sampler; the device
   sampler, i.e. the Pallas kernel on a GPU or the jitted jnp sampler on a CPU device) timed over
   a grid of batch sizes, giving two cost curves over PSGS and their crossover.
2. Draws a mixed workload: request sizes from a truncated Zipf distribution over 1..max_batch
   seeds (most requests are small, a few are large), uniform random seeds.
3. Runs every request once on each backend (interleaved, so both see the same machine noise) and
   records its service time (sample, blocked on the result). A policy's service time for a
   request is that of the backend it routes to, plus (adaptive) the measured routing cost.
4. Replays those service times through a single FIFO server at several offered loads (Poisson
   arrivals, the same arrival sequence for every policy): latency = wait + service. This is a
   trace-driven simulation: the service times are real measurements on this machine, the queue
   is computed, so the comparison is not blurred by the load generator sharing the two cores.
Prints p50/p99 latency and throughput per policy and load, and plots p99 latency against
throughput to a PNG.
"""

import argparse
import json
import time

import jax
import numpy as np

from bench import graph_args
from serving import device_sampler as ds
from serving import dispatcher as dispatch_lib
from serving import host_sampler as hs
from serving import psgs as psgs_lib

def zipf_sizes(n: int, max_batch: int, a: float, rng: np.random.Generator) -> np.ndarray:
  """[n] request sizes in 1..max_batch with P(s) proportional to s^-a."""
  s = np.arange(1, max_batch + 1)
  p = s ** -a
  return rng.choice(s, size=n, p=p / p.sum())


def queue_latencies(arrivals: np.ndarray, service: np.ndarray) -> np.ndarray:
  """Latency of each request through one FIFO server (Lindley's recursion)."""
  finish = 0.0
  out = np.empty_like(service)
  for i, (a, s) in enumerate(zip(arrivals, service)):
    finish = max(finish, a) + s
    out[i] = finish - a
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--graph", default="slashdot",
                 help="'slashdot', 'rmat', or an edge list / .npz / OGB folder")
  p.add_argument("--scale", type=int, default=18)
  p.add_argument("--edges", type=int, default=4_000_000)
  p.add_argument("--fanouts", default="15,10,5")
  p.add_argument("--requests", type=int, default=400)
  p.add_argument("--max_batch", type=int, default=1024)
  p.add_argument("--zipf", type=float, default=1.2)
  p.add_argument("--loads", default="0.2,0.4,0.6,0.8,0.9,0.95",
                 help="offered loads as fractions of the best fixed policy's capacity")
  p.add_argument("--device_path", default="auto", choices=["auto", "pallas", "jnp"])
  p.add_argument("--min_gain", type=float, default=0.1,
                 help="adaptive: predicted device saving needed to leave the host")
  p.add_argument("--repeats", type=int, default=7, help="calibration draws per batch size")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out_png", default=None)
  p.add_argument("--out_json", default=None)
  a = p.parse_args()
  fanouts = tuple(int(k) for k in a.fanouts.split(","))
  rng = np.random.default_rng(a.seed)
  t = time.perf_counter()
  g, _ = graph_args.build_graph(a)
  print(f"graph {a.graph}: {g.num_nodes} nodes, {g.num_edges} CSR entries "
        f"({time.perf_counter() - t:.1f} s)")
  device = jax.devices()[0]
  on_gpu = device.platform == "gpu"
  use_pallas = on_gpu if a.device_path == "auto" else a.device_path == "pallas"
  host = hs.HostSampler(g, fanouts)
  dev = ds.DeviceSampler(g, fanouts, device=device, use_pallas=use_pallas)
  node_psgs = psgs_lib.node_psgs(g, fanouts)
  machine = f"{device.device_kind} ({device.platform}); device path: " + \
      ("pallas" if use_pallas else "jnp")
  print("device sampler:", machine)

  def run_host(seeds, key=0):
    return host.sample(seeds, key)

  def run_device(seeds, key=0):
    return jax.block_until_ready(dev.sample(seeds, key))

  grid = [1 << i for i in range(14) if (1 << i) <= a.max_batch]
  for b in grid:  # compile every bucket the workload can hit before anything is timed
    run_device(rng.choice(g.num_nodes, b, replace=False).astype(np.int32))
  cal = dispatch_lib.Dispatcher.calibrate(run_host, run_device, node_psgs, grid, repeats=a.repeats,
                                          machine=machine)
  print(f"{'batch':>6} {'PSGS':>10} {'host ms':>9} {'device ms':>10}")
  for b, x, h, d in zip(grid, cal.psgs, cal.host_s, cal.device_s):
    print(f"{b:6d} {x:10.0f} {h * 1e3:9.3f} {d * 1e3:10.3f}")
  print(f"crossover PSGS: {cal.crossover:.0f}")

  sizes = zipf_sizes(a.requests, a.max_batch, a.zipf, rng)
  reqs = [rng.choice(g.num_nodes, s, replace=False).astype(np.int32) for s in sizes]
  policies = {"host": dispatch_lib.Dispatcher(policy="host"),
              "device": dispatch_lib.Dispatcher(policy="device"),
              "adaptive": dispatch_lib.Dispatcher(cal, min_gain=a.min_gain)}
  # Each request runs on both backends, interleaved so both see the same machine noise; a
  # policy's service time is the time of the backend it picks (+ its routing cost).
  t_host, t_dev, t_route = [], [], []
  for i, seeds in enumerate(reqs):
    t = time.perf_counter()
    run_host(seeds, i)
    t_host.append(time.perf_counter() - t)
    t = time.perf_counter()
    run_device(seeds, i)
    t_dev.append(time.perf_counter() - t)
  t_host, t_dev = np.asarray(t_host), np.asarray(t_dev)
  service = {}
  for name, d in policies.items():
    picks = []
    for seeds in reqs:
      t = time.perf_counter()
      picks.append(d.route(float(node_psgs[seeds].sum())) == dispatch_lib.DEVICE)
      t_route.append(time.perf_counter() - t)
    service[name] = np.where(picks, t_dev, t_host) + (np.mean(t_route) if name == "adaptive"
                                                      else 0.0)
    picks = np.asarray(picks)
    wrong = picks != (t_dev < t_host)
    print(f"policy {name:8s}: mean service {service[name].mean() * 1e3:.3f} ms, "
          f"routes {d.counts}; picked the slower backend for {wrong.mean() * 100:.0f}% "
          f"of requests, costing {np.abs(t_dev - t_host)[wrong].sum() * 1e3:.1f} ms in all")
  oracle = np.minimum(t_host, t_dev)
  print(f"oracle (faster backend per request, known after the fact): mean service "
        f"{oracle.mean() * 1e3:.3f} ms")
  capacity = 1.0 / min(service["host"].mean(), service["device"].mean())
  results = {"machine": machine, "graph": a.graph, "fanouts": fanouts,
             "calibration": cal.__dict__, "sizes_mean": float(sizes.mean()), "loads": []}
  print(f"\nrequests: {a.requests}, sizes Zipf({a.zipf}) over 1..{a.max_batch} "
        f"(mean {sizes.mean():.1f}); best fixed capacity {capacity:.0f} req/s")
  print(f"{'load':>5} {'req/s':>8} | " + " | ".join(f"{n:>8} p50/p99 ms  thr" for n in policies))
  gaps = np.random.default_rng(a.seed + 1).exponential(1.0, a.requests)
  ok = True
  for load in [float(x) for x in a.loads.split(",")]:
    rate = load * capacity
    arrivals = np.cumsum(gaps / rate)
    row = {"load": load, "rate": rate}
    cells = []
    for name in policies:
      lat = queue_latencies(arrivals, service[name])
      finish = (arrivals + lat).max()
      row[name] = {"p50_ms": float(np.percentile(lat, 50) * 1e3),
                   "p99_ms": float(np.percentile(lat, 99) * 1e3),
                   "throughput": float(a.requests / finish)}
      cells.append(f"{row[name]['p50_ms']:7.2f}/{row[name]['p99_ms']:8.2f} "
                   f"{row[name]['throughput']:5.0f}")
    best_fixed = min(row["host"]["p99_ms"], row["device"]["p99_ms"])
    row["adaptive_p99_le_best_fixed"] = row["adaptive"]["p99_ms"] <= best_fixed + 1e-9
    ok &= row["adaptive_p99_le_best_fixed"]
    results["loads"].append(row)
    print(f"{load:5.2f} {rate:8.0f} | " + " | ".join(cells) +
          ("" if row["adaptive_p99_le_best_fixed"] else "   <- adaptive p99 above best fixed"))
  print(f"target adaptive p99 <= best fixed policy at every load: {'met' if ok else 'MISSED'}")
  results["target_met"] = bool(ok)
  if a.out_json:
    with open(a.out_json, "w") as f:
      json.dump(results, f, indent=1, default=float)
  if a.out_png:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("host", "s--"), ("device", "^--"), ("adaptive", "o-")):
      ax.plot([r[name]["throughput"] for r in results["loads"]],
              [r[name]["p99_ms"] for r in results["loads"]], style, label=name)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"mixed workload, {machine}", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out_png, dpi=120)
    print("wrote", a.out_png)


if __name__ == "__main__":
  main()
