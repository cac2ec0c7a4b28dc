r"""End-to-end GNN serving on loopback: batched server vs the per-request baseline.

  python -m bench.bench_serving [--dataset=cora] [--rates=50,100,200,400,800,1600]
      [--step_seconds=25] [--model_dir=DIR] [--out_json=serving.json]

Starts `python -m launch.serve_gnn` twice as a user would (a subprocess each): the server as
shipped (dynamic batching, pipelined sample -> gather -> forward, adaptive sampling) and the
per-request baseline (`--no_batching --dispatch=host`: each request sampled, gathered and run
alone on its HTTP thread, as DGL/PyG example servers do). A load generator in another process
sends single-node `POST /v1/infer` requests with Poisson arrivals at each offered rate for
`--step_seconds`; latency is measured from each request's scheduled send time (so a client that
falls behind does not hide queueing). For each mode it prints p50/p99 latency, achieved
throughput and errors per rate, and the highest throughput whose p99 is <= --slo_ms with no
request lost; the ratio of the two is the result. The whole run lasts
2 * len(rates) * step_seconds plus start-up (>= 5 minutes with the defaults).
"""

import argparse
import concurrent.futures
import http.client
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _client_worker(port: int, schedule: np.ndarray, nodes: np.ndarray, out) -> None:
  """Sends request i at `t0 + schedule[i]`, t0 fixed once this process is up and connected."""
  probe = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  probe.request("GET", "/healthz")
  probe.getresponse().read()
  probe.close()
  t0 = time.time() + 0.2
  conns = threading.local()
  lat = np.full(len(schedule), np.nan)
  status = np.zeros(len(schedule), np.int32)

  def send(i):
    delay = t0 + schedule[i] - time.time()
    if delay > 0:
      time.sleep(delay)
    if not hasattr(conns, "c"):
      conns.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"nodes": [int(nodes[i])]})
    try:
      conns.c.request("POST", "/v1/infer", body=body,
                      headers={"Content-Type": "application/json"})
      r = conns.c.getresponse()
      r.read()
      status[i] = r.status
    except (OSError, http.client.HTTPException):
      conns.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
      status[i] = -1
    lat[i] = time.time() - (t0 + schedule[i])

  with concurrent.futures.ThreadPoolExecutor(64) as pool:
    list(pool.map(send, range(len(schedule))))
  out.put((lat.tolist(), status.tolist()))


def run_load(port: int, rate: float, seconds: float, num_nodes: int, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  gaps = rng.exponential(1.0 / rate, int(rate * seconds * 1.2) + 10)
  schedule = np.cumsum(gaps)
  schedule = schedule[schedule < seconds]
  nodes = rng.integers(0, num_nodes, len(schedule))
  q = multiprocessing.get_context("spawn").Queue()
  p = multiprocessing.get_context("spawn").Process(
      target=_client_worker, args=(port, schedule, nodes, q))
  p.start()
  lat, status = q.get()
  p.join()
  lat, status = np.asarray(lat), np.asarray(status)
  ok = status == 200
  return {"rate": rate, "sent": int(len(status)), "ok": int(ok.sum()),
          "errors": int((~ok).sum()),
          "codes": {str(c): int((status == c).sum()) for c in np.unique(status)},
          "p50_ms": float(np.percentile(lat[ok], 50) * 1e3) if ok.any() else float("nan"),
          "p99_ms": float(np.percentile(lat, 99) * 1e3),
          "throughput": float(ok.sum() / seconds)}


def start_server(args, extra: list[str]) -> tuple[subprocess.Popen, int]:
  cmd = [sys.executable, "-m", "launch.serve_gnn", f"--dataset={args.dataset}",
         f"--data_root={args.data_root}", f"--model_dir={args.model_dir}", "--port=0", *extra]
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
  while True:
    line = proc.stdout.readline()
    if not line:
      raise RuntimeError(f"server exited: {' '.join(cmd)}")
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if m:
      return proc, int(m.group(1))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="cora")
  p.add_argument("--data_root", default="../shared/data/planetoid")
  p.add_argument("--model_dir", default=None, help="a launch.train_gnn run (default: train one)")
  p.add_argument("--rates", default="50,100,200,400,800,1600")
  p.add_argument("--step_seconds", type=float, default=25.0)
  p.add_argument("--slo_ms", type=float, default=30.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out_json", default=None)
  a = p.parse_args()
  if not a.model_dir:
    a.model_dir = tempfile.mkdtemp(prefix="bench_serving_")
    subprocess.run([sys.executable, "-m", "launch.train_gnn", f"--dataset={a.dataset}",
                    f"--data_root={a.data_root}", f"--workdir={a.model_dir}", "--overwrite"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  num_nodes = json.load(open(os.path.join(a.model_dir, "config.json")))["num_nodes"]
  rates = [float(r) for r in a.rates.split(",")]
  modes = {"batched": [], "per-request": ["--no_batching", "--dispatch=host"]}
  results = {"dataset": a.dataset, "slo_ms": a.slo_ms, "step_seconds": a.step_seconds,
             "cpus": os.cpu_count(), "modes": {}}
  t_start = time.time()
  for mode, extra in modes.items():
    proc, port = start_server(a, extra)
    rows = []
    try:
      for i, rate in enumerate(rates):
        row = run_load(port, rate, a.step_seconds, num_nodes, a.seed + i)
        rows.append(row)
        print(f"{mode:12s} offered {rate:7.0f}/s: achieved {row['throughput']:7.1f}/s, "
              f"p50 {row['p50_ms']:7.2f} ms, p99 {row['p99_ms']:8.2f} ms, "
              f"codes {row['codes']}", flush=True)
        if row["p99_ms"] > 10 * a.slo_ms and row["errors"] == 0 and i + 1 < len(rates):
          print(f"{mode:12s} far past the SLO; higher rates skipped", flush=True)
          break
    finally:
      proc.terminate()
      proc.wait(timeout=60)
    good = [r["throughput"] for r in rows if r["p99_ms"] <= a.slo_ms and r["errors"] == 0]
    results["modes"][mode] = {"rows": rows, "max_throughput_at_slo": max(good, default=0.0)}
  b = results["modes"]["batched"]["max_throughput_at_slo"]
  base = results["modes"]["per-request"]["max_throughput_at_slo"]
  results["ratio"] = b / base if base else float("inf")
  results["wall_seconds"] = time.time() - t_start
  print(f"\nthroughput at p99 <= {a.slo_ms:.0f} ms with no request lost: batched {b:.0f}/s, "
        f"per-request baseline {base:.0f}/s, ratio {results['ratio']:.2f}x (target >= 5x); "
        f"run {results['wall_seconds'] / 60:.1f} min")
  if a.out_json:
    with open(a.out_json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
