r"""Serve GraphSAGE node predictions over HTTP with dynamic batching and adaptive sampling.

  python -m launch.serve_gnn --dataset=cora --data_root=../shared/data/planetoid --port=8000
  python -m launch.serve_gnn --edge_list=g.txt.gz --features=x.npy --model_dir=runs/sage --port=8000

  curl -s localhost:8000/v1/infer -d '{"nodes": [0, 1, 2]}'
  curl -s localhost:8000/metrics

With a Planetoid --dataset and no trained model in --model_dir, a model is trained there first
(`launch.train_gnn` with its defaults; seconds on Cora). Listens on 127.0.0.1 unless --host says
otherwise. API and status codes: `serving/server.py`.

Replicas: start one process per replica with `--distributed` (and the usual
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a cluster environment); each
keeps its partition of the features and fetches the rest from its peers
(`serving/replicas.py`). Any replica answers any node.
"""

import os

# numba's OpenMP workers spin after each parallel region by default, taking the cores the
# server's own threads need; a server wants them to sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Replicas (--distributed) exchange addresses with a CPU collective, which needs gloo.
os.environ.setdefault("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")

import signal
import tempfile
import threading
import time

from absl import flags
from absl import logging

from launch import common

_DATASET = flags.DEFINE_string("dataset", None, "Planetoid dataset (cora, citeseer).")
_DATA_ROOT = flags.DEFINE_string("data_root", "../shared/data/planetoid",
                                 "Folder holding the ind.<dataset>.* files.")
_EDGE_LIST = flags.DEFINE_string("edge_list", None, "Instead of --dataset: an edge list "
                                 "(SNAP text, .gz ok), a .npz graph, or an OGB dataset folder.")
_FEATURES = flags.DEFINE_string("features", None, "With --edge_list: a .npy [num_nodes, F].")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A launch.train_gnn run (default: train one "
                                 "into a temporary folder; --dataset only).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8000, "Port (0: pick a free one).", lower_bound=0)
_FANOUTS = flags.DEFINE_list("fanouts", None, "Neighbours per hop (default: the model's).")
_DISPATCH = flags.DEFINE_enum("dispatch", "adaptive", ["adaptive", "host", "device"],
                              "Sampling backend policy.")
_CALIBRATION = flags.DEFINE_string("calibration", None, "Dispatcher calibration JSON to reuse "
                                   "(written after calibrating if absent).")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "Devices to use (0: all local devices).",
                                lower_bound=0)
_HOT = flags.DEFINE_float("hot_fraction", 0.1, "Feature rows replicated on every device.",
                          lower_bound=0, upper_bound=1)
_WARM = flags.DEFINE_float("warm_fraction", 0.2, "Feature rows partitioned across devices.",
                           lower_bound=0, upper_bound=1)
_MAX_BATCH = flags.DEFINE_integer("max_batch_nodes", 1024, "Seeds per batch at most.",
                                  lower_bound=1)
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 2.0, "Batching window after a batch's first "
                               "request.", lower_bound=0)
_QUEUE = flags.DEFINE_integer("queue_size", 4096, "Admission queue bound (429 beyond).",
                              lower_bound=1)
_DEADLINE = flags.DEFINE_float("deadline_ms", 1000.0, "Default per-request deadline (503 after).",
                               lower_bound=0.001)
_NO_BATCHING = flags.DEFINE_bool("no_batching", False, "Answer each request alone on its HTTP "
                                 "thread (the per-request baseline; for comparison only).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 0, "Stop after this long (0: until killed).",
                                  lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Base of the sampling keys.")


def load_inputs():
  """(graph, features [N, F] float32, model) from the flags."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from graphs import planetoid  # pylint: disable=g-import-not-at-top
  from graphs import sage_train  # pylint: disable=g-import-not-at-top
  from graphs.errors import GraphError  # pylint: disable=g-import-not-at-top
  from serving import graph as graph_lib  # pylint: disable=g-import-not-at-top
  from serving import model as model_lib  # pylint: disable=g-import-not-at-top

  if bool(_DATASET.value) == bool(_EDGE_LIST.value):
    raise GraphError("give exactly one of --dataset or --edge_list")
  if _EDGE_LIST.value:
    if not _FEATURES.value or not _MODEL_DIR.value:
      raise GraphError("--edge_list needs --features (.npy) and --model_dir (a trained model)")
    graph = graph_lib.load_graph(_EDGE_LIST.value)
    try:
      features = np.load(_FEATURES.value, mmap_mode="r")
    except (OSError, ValueError) as e:
      raise GraphError(f"--features: cannot read {_FEATURES.value}: {e}") from None
    model = sage_train.load_model(_MODEL_DIR.value)
    return graph, model_lib.prepare_features(model.config, features), model
  model_dir = _MODEL_DIR.value
  if not model_dir or not os.path.exists(os.path.join(model_dir, "config.json")):
    model_dir = model_dir or tempfile.mkdtemp(prefix=f"sage_{_DATASET.value}_")
    print(f"no trained model in --model_dir: training GraphSAGE on {_DATASET.value} into "
          f"{model_dir}", flush=True)
    metrics = sage_train.train_and_evaluate(
        sage_train.TrainConfig(dataset=_DATASET.value, data_root=_DATA_ROOT.value), model_dir)
    print(f"trained: test accuracy {metrics['test_acc']:.3f}", flush=True)
  model = sage_train.load_model(model_dir)
  if model.config.get("dataset") not in (None, _DATASET.value):
    raise GraphError(f"--model_dir {model_dir} holds a model of {model.config['dataset']}, "
                     f"not {_DATASET.value}")
  data = planetoid.load_planetoid(_DATA_ROOT.value, _DATASET.value,
                                  normalize_features=bool(model.config.get("normalize_features")))
  graph = graph_lib.from_edges(data.dst, data.src, num_nodes=data.num_nodes)
  return graph, data.features, model


def main(argv):
  del argv
  from graphs.errors import GraphError  # pylint: disable=g-import-not-at-top
  from serving import app  # pylint: disable=g-import-not-at-top
  from serving import server as server_lib  # pylint: disable=g-import-not-at-top

  try:
    fanouts = tuple(int(k) for k in _FANOUTS.value) if _FANOUTS.value else None
  except ValueError:
    raise GraphError(f"--fanouts must be integers, got {','.join(_FANOUTS.value)}") from None
  graph, features, model = load_inputs()
  cfg = app.ServeConfig(
      fanouts=fanouts, dispatch=_DISPATCH.value, calibration=_CALIBRATION.value,
      num_workers=_WORKERS.value, hot_fraction=_HOT.value, warm_fraction=_WARM.value,
      seed=_SEED.value,
      server=server_lib.ServerConfig(max_batch_nodes=_MAX_BATCH.value,
                                     max_wait_ms=_MAX_WAIT.value, queue_size=_QUEUE.value,
                                     deadline_ms=_DEADLINE.value,
                                     batching=not _NO_BATCHING.value))
  import jax  # pylint: disable=g-import-not-at-top
  from serving import replicas  # pylint: disable=g-import-not-at-top
  num_replicas, replica_id = jax.process_count(), jax.process_index()
  server = app.build_server(graph, features, model, cfg, num_replicas=num_replicas,
                            replica_id=replica_id, warmup=num_replicas == 1)
  try:
    httpd = server_lib.make_http_server(server, _HOST.value, _PORT.value)
  except OSError as e:
    raise GraphError(f"cannot listen on {_HOST.value}:{_PORT.value}: {e}") from None
  host, port = httpd.server_address[:2]
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  where = ""
  if num_replicas > 1:
    # Listening already (peers may fetch features from now on); the exchange is a barrier.
    group = replicas.exchange_addresses(host, port)
    server.features.peers = group.addresses
    app.warmup_server(server)
    where = f", replica {replica_id} of {num_replicas}, peers {list(group.addresses)}"
  server.start()
  print(f"serving {graph.num_nodes} nodes on http://{host}:{port} "
        f"({len(server.engines)} worker(s), dispatch={_DISPATCH.value}{where})", flush=True)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  try:
    deadline = time.monotonic() + _MAX_SECONDS.value if _MAX_SECONDS.value else None
    while not stop.wait(0.2):
      if deadline is not None and time.monotonic() > deadline:
        break
  except KeyboardInterrupt:
    pass
  logging.info("shutting down")
  httpd.shutdown()
  server.stop()
  httpd.server_close()
  print("stopped", flush=True)


if __name__ == "__main__":
  common.run(main)
