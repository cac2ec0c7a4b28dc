r"""Feature placement (Quiver's access probability vs degree vs random) and the real tiered gather.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m bench.bench_feature_store \
      [--graphs=slashdot,rmat] [--requests=200] [--batch_size=16] [--fanouts=15,10,5]

For each graph (SNAP soc-Slashdot0902, symmetrised; an R-MAT graph) and each seed distribution
(uniform; Zipf over a random node ranking, so popularity is independent of degree), it samples
`--requests` k-hop requests of `--batch_size` seeds (serving.host_sampler.HostSampler when
present, else the numpy reference sampler in serving.access_prob) and replays their `nodes`
against each placement at device budgets of 5%, 10% and 20% of the rows: the budget is the number
of distinct rows in device memory, `--hot_share` of it replicated on every device, the rest
partitioned. Requests are served round robin over the devices. It prints hit rate (rows served
from device memory), bytes per request from host, and bytes per request between devices.

Then it builds the real FeatureStore (random [N, --dim] float32 features, 10% budget,
access-probability order) on the devices and times `gather` over the same requests (a warm-up
pass compiles; the best of `--repeats` timed passes is kept), with the cold tier in host memory
and on disk (tensorstore zarr in a temp dir).
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):  # before jax initialises: 8 fake CPU devices
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from serving import access_prob  # pylint: disable=g-import-not-at-top,wrong-import-position
from serving import feature_store as fs  # pylint: disable=g-import-not-at-top,wrong-import-position
from serving import graph as graph_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_GRAPHS = flags.DEFINE_list("graphs", ["slashdot", "rmat"], "slashdot and/or rmat.")
_SLASHDOT = flags.DEFINE_string(
    "slashdot", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "data", "snap", "soc-Slashdot0902.txt.gz"), "SNAP edge list.")
_RMAT_SCALE = flags.DEFINE_integer("rmat_scale", 16, "R-MAT graph on 2^scale nodes.")
_RMAT_EDGE_FACTOR = flags.DEFINE_integer("rmat_edge_factor", 16, "R-MAT edges per node.")
_FANOUTS = flags.DEFINE_list("fanouts", ["15", "10", "5"], "Neighbours drawn per hop.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Seed draws per request.")
_REQUESTS = flags.DEFINE_integer("requests", 200, "Requests replayed per setting.")
_ZIPF = flags.DEFINE_float("zipf", 1.1, "Exponent of the skewed seed distribution.")
_DIM = flags.DEFINE_integer("dim", 100, "Feature dimension (float32).")
_HOT_SHARE = flags.DEFINE_float("hot_share", 0.25, "Share of the device budget replicated.")
_BUDGETS = flags.DEFINE_list("budgets", ["0.05", "0.1", "0.2"], "Fractions of rows on devices.")
_GATHER_REQUESTS = flags.DEFINE_integer("gather_requests", 64, "Requests in the timed gather.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed gather passes (best is kept).")


def load(name: str) -> graph_lib.CSRGraph:
  if name == "slashdot":
    return graph_lib.load_edge_list(_SLASHDOT.value)
  if name == "rmat":
    return graph_lib.rmat(_RMAT_SCALE.value, _RMAT_EDGE_FACTOR.value << _RMAT_SCALE.value)
  raise app.UsageError(f"unknown graph {name!r}")


def make_sampler(graph, fanouts):
  """(name, fn(seed_rows [R, B], rng) -> R padded node arrays)."""
  try:
    from serving.host_sampler import HostSampler  # pylint: disable=g-import-not-at-top
  except ImportError:
    return "numpy reference (serving.access_prob.sample_requests)", (
        lambda rows, rng: access_prob.sample_requests(graph, fanouts, rows, rng))
  sampler = HostSampler(graph, fanouts)
  def run(rows, rng):
    keys = rng.integers(0, 2**32, len(rows))
    return [sampler.sample(np.unique(r), int(k)).nodes for r, k in zip(rows, keys)]
  return "serving.host_sampler.HostSampler", run


def split_budget(n: int, fraction: float, num_devices: int) -> tuple[int, int]:
  """(hot rows, warm rows per device) holding `fraction * n` distinct rows."""
  rows = int(fraction * n)
  hot = int(_HOT_SHARE.value * rows)
  return hot, (rows - hot) // num_devices


def gather_rate(store, accesses, devices) -> dict:
  """Rows/s of the real gather over `accesses`, round robin over devices (best pass)."""
  def one_pass():
    out = None
    for r, ids in enumerate(accesses):
      out = store.gather(ids, devices[r % len(devices)])
    jax.block_until_ready(out)
  one_pass()  # compile every (device, size) combination
  store.reset_counters()
  best = float("inf")
  for _ in range(_REPEATS.value):
    t = time.perf_counter()
    one_pass()
    best = min(best, time.perf_counter() - t)
  c = store.counters.as_dict()
  rows = c["rows"] / _REPEATS.value
  return dict(rows_per_s=rows / best, ms_per_request=1e3 * best / len(accesses),
              mb_per_s=rows * store.row_bytes / best / 1e6, hit_rate=c["hit_rate"])


def bench_graph(name: str, devices) -> None:
  t = time.perf_counter()
  graph = load(name)
  n = graph.num_nodes
  fanouts = [int(k) for k in _FANOUTS.value]
  deg = graph.degrees()
  print(f"\n=== {name}: {n} nodes, {graph.num_edges} CSR entries, max degree {deg.max()}, "
        f"mean {deg.mean():.1f} (loaded in {time.perf_counter() - t:.1f}s); fanouts {fanouts}, "
        f"{_BATCH.value} seed draws/request, {_REQUESTS.value} requests, {len(devices)} devices")
  sampler_name, sample = make_sampler(graph, fanouts)
  print(f"sampler: {sampler_name}")
  row_bytes = 4 * _DIM.value
  rng = np.random.default_rng(0)
  zipf_accesses = None
  for dist_name, dist in (("uniform", None),
                          (f"zipf({_ZIPF.value})",
                           access_prob.zipf_seed_distribution(n, _ZIPF.value, seed=1))):
    seeds = access_prob.draw_seed_batches(n, _BATCH.value, _REQUESTS.value, rng, dist)
    t = time.perf_counter()
    accesses = sample(seeds, rng)
    t_sample = time.perf_counter() - t
    t = time.perf_counter()
    prob = access_prob.access_probability(graph, fanouts, _BATCH.value, dist)
    t_prob = time.perf_counter() - t
    rows = np.mean([(a >= 0).sum() for a in accesses])
    print(f"\n[{name}, {dist_name} seeds] sampled in {t_sample:.2f}s; access probability in "
          f"{t_prob:.2f}s; rows/request: measured {rows:.0f}, predicted sum(p) {prob.sum():.0f}")
    orders = {"access-prob": np.lexsort((np.arange(n), -deg, -prob)),
              "degree": fs.order_by_degree(graph), "random": fs.order_random(n, seed=0)}
    print(f"{'budget':>7} {'policy':<12}{'hit rate':>9}{'local':>8}{'host KB/req':>13}"
          f"{'dev KB/req':>12}{'rows/device':>13}")
    for budget in (float(b) for b in _BUDGETS.value):
      hot, warm = split_budget(n, budget, len(devices))
      for policy, order in orders.items():
        r = fs.replay(fs.make_layout(order, len(devices), hot, warm, row_bytes), accesses)
        print(f"{budget:>7.0%} {policy:<12}{r['hit_rate']:>9.3f}{r['local_hit_rate']:>8.3f}"
              f"{r['host_bytes_per_request'] / 1e3:>13.1f}"
              f"{r['device_bytes_per_request'] / 1e3:>12.1f}{hot + warm:>13}")
    zipf_accesses = (accesses, orders["access-prob"])

  # The real gather: features on the devices and the host/disk, 10% budget, access-prob order.
  accesses, order = zipf_accesses
  accesses = accesses[:_GATHER_REQUESTS.value]
  features = np.random.default_rng(1).standard_normal((n, _DIM.value), dtype=np.float32)
  hot, warm = split_budget(n, 0.1, len(devices))
  with tempfile.TemporaryDirectory() as tmp:
    for cold in ("host", "disk"):
      t = time.perf_counter()
      store = fs.FeatureStore.build(features, order, devices, hot, warm, cold=cold,
                                    disk_path=os.path.join(tmp, "cold") if cold == "disk" else None)
      t_build = time.perf_counter() - t
      r = gather_rate(store, accesses, devices)
      check = accesses[0]
      got = np.asarray(store.gather(check, devices[1]))
      ok = np.array_equal(got, np.where((check >= 0)[:, None], features[check], 0))
      print(f"gather [{name}, zipf seeds, 10% budget, cold={cold}]: {r['rows_per_s'] / 1e6:.2f}M "
            f"rows/s ({r['mb_per_s']:.0f} MB/s, {r['ms_per_request']:.2f} ms/request, hit rate "
            f"{r['hit_rate']:.3f}); build {t_build:.1f}s; exact: {ok}")


def main(argv):
  del argv
  devices = jax.devices()
  print(f"machine: {jax.devices()[0].device_kind}, {len(devices)} device(s), {os.cpu_count()} "
        f"CPU cores; features {_DIM.value} x float32; hot share {_HOT_SHARE.value:.0%} of budget")
  for name in _GRAPHS.value:
    bench_graph(name, devices)


if __name__ == "__main__":
  app.run(main)
