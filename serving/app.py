"""Assembles a GNN server from a graph, features and a trained model (what `launch/serve_gnn` runs).

`build_server` wires, for each local device: a host sampler, a device sampler on that device, a
dispatcher (calibrated on this machine, or a fixed policy), the feature store (rows placed by
access probability across the devices) and the jitted GraphSAGE forward, then the batching
`GNNServer` over one worker per device.
"""

import dataclasses
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np

from graphs.errors import GraphError
from serving import device_sampler as device_sampler_lib
from serving import dispatcher as dispatch_lib
from serving import feature_store as feature_store_lib
from serving import host_sampler as host_sampler_lib
from serving import model as model_lib
from serving import psgs as psgs_lib
from serving import replicas as replicas_lib
from serving.engine import Engine
from serving.graph import CSRGraph
from serving.server import GNNServer
from serving.server import ServerConfig


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  """How to serve.

  Attributes:
    fanouts: neighbours per hop (None: the model's recorded serving fanouts).
    dispatch: "adaptive" (calibrate both samplers here), "host" or "device".
    calibration: a calibration JSON to reuse (read if it exists, else written after calibrating).
    num_workers: devices to use, one worker each (0: all local devices).
    hot_fraction: share of feature rows replicated on every device.
    warm_fraction: share of rows partitioned across the devices (split evenly).
    server: batching and admission settings.
    seed: base of the per-batch sampling keys.
  """
  fanouts: tuple[int, ...] | None = None
  dispatch: str = "adaptive"
  calibration: str | None = None
  num_workers: int = 0
  hot_fraction: float = 0.1
  warm_fraction: float = 0.2
  server: ServerConfig = ServerConfig()
  seed: int = 0


def _calibration(cfg: ServeConfig, host, device, node_psgs) -> dispatch_lib.Calibration | None:
  if cfg.dispatch != "adaptive":
    return None
  if cfg.calibration and os.path.exists(cfg.calibration):
    logging.info("dispatcher calibration read from %s", cfg.calibration)
    return dispatch_lib.Calibration.load(cfg.calibration)
  grid = [b for b in (1, 4, 16, 64, 256, 1024, 4096) if b <= cfg.server.max_batch_nodes]
  grid = [b for b in grid if b <= host.graph.num_nodes] or [1]
  rng = np.random.default_rng(cfg.seed)
  for b in grid:  # compile each seed bucket once before timing
    jax.block_until_ready(device.sample(rng.choice(host.graph.num_nodes, b, replace=False), 0))
  dev = device.device
  cal = dispatch_lib.Dispatcher.calibrate(
      lambda s: host.sample(s, 0), lambda s: jax.block_until_ready(device.sample(s, 0)),
      node_psgs, grid, repeats=3, seed=cfg.seed,
      machine=f"{dev.device_kind} ({dev.platform})")
  logging.info("dispatcher calibrated: crossover PSGS %.0f", cal.crossover)
  if cfg.calibration:
    cal.save(cfg.calibration)
  return cal


def build_server(graph: CSRGraph, features: np.ndarray, model, cfg: ServeConfig = ServeConfig(),
                 devices: Sequence[Any] | None = None, num_replicas: int = 1,
                 replica_id: int = 0, warmup: bool = True) -> GNNServer:
  """A ready (not started) `GNNServer`.

  Args:
    graph: the CSR graph requests sample from (row v: the nodes v aggregates from).
    features: [N, F] float32 node features, already transformed as the model expects.
    model: `graphs.sage_train.LoadedModel` (config, params, apply_fn).
    cfg: serving settings.
    devices: jax devices, one worker each (default: `cfg.num_workers` local devices).
    num_replicas, replica_id: with several replicas, this one keeps only its partition of the
      features (`serving/replicas.py`) and fetches the rest from peers, whose addresses must be
      set (`server.features.peers`) before `warmup_server`.
    warmup: compile everything now (`warmup_server`); with replicas, do it after the peers are
      known.
  """
  features = np.asarray(features, np.float32)
  if features.ndim != 2 or features.shape[0] != graph.num_nodes:
    raise GraphError(f"features have shape {features.shape}; the graph has {graph.num_nodes} "
                     "nodes (want [num_nodes, num_features])")
  want_f = model.config.get("num_features")
  if want_f is not None and features.shape[1] != want_f:
    raise GraphError(f"the model was trained on {want_f} features per node; these have "
                     f"{features.shape[1]}")
  fanouts = tuple(cfg.fanouts or model.config.get("fanouts") or ())
  if not fanouts or min(fanouts) < 1:
    raise GraphError(f"fanouts must be positive integers, got {fanouts}")
  if devices is None:
    devices = jax.local_devices()
    devices = devices[:cfg.num_workers] if cfg.num_workers > 0 else devices
  devices = list(devices)
  n = graph.num_nodes
  node_psgs = psgs_lib.node_psgs(graph, fanouts)
  order = feature_store_lib.order_by_access_prob(graph, fanouts)
  hot = int(round(cfg.hot_fraction * n))
  warm = int(round(cfg.warm_fraction * n / len(devices)))
  if num_replicas > 1:
    store = replicas_lib.PartitionedFeatures(
        features, replicas_lib.partition(order, num_replicas), replica_id, order, devices,
        cfg.hot_fraction, cfg.warm_fraction)
  else:
    store = feature_store_lib.FeatureStore.build(features, order=order, devices=devices,
                                                 hot_rows=hot, warm_rows_per_device=warm)
  forward = model_lib.make_forward(model.config)
  engines, calibration = [], None
  for i, dev in enumerate(devices):
    host = host_sampler_lib.HostSampler(graph, fanouts)
    device = None
    if cfg.dispatch != dispatch_lib.HOST:
      device = device_sampler_lib.DeviceSampler(graph, fanouts, device=dev,
                                                use_pallas=dev.platform == "gpu")
    if calibration is None:
      calibration = _calibration(cfg, host, device, node_psgs)
    engines.append(Engine(host, device, dispatch_lib.Dispatcher(calibration, cfg.dispatch),
                          node_psgs, store, forward, model.params, device=dev,
                          seed=cfg.seed + 7919 * i))
  server = GNNServer(engines, cfg.server, features=store)
  if warmup:
    warmup_server(server)
  return server


def warmup_server(server: GNNServer) -> None:
  """Compiles every shape the workers can hit (see `Engine.warmup`)."""
  for engine in server.engines:
    compiles = engine.warmup(server.config.max_batch_nodes)
    logging.info("worker on %s warmed up: %d forward compiles", engine.device, compiles)
