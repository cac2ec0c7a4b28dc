"""The inference pipeline one serving worker runs: sample -> gather -> forward.

An `Engine` owns, for one device: a host sampler (numba), optionally a device sampler (Pallas/JAX),
the dispatcher that picks between them per batch, a feature source (a tiered `FeatureStore` or a
plain array), and a jitted GNN forward. Each stage is a method so a server can run the stages in
separate threads (sampling batch n+1 while batch n is in the forward pass); `infer` runs all three.

Shapes stay static under jit: a sample is cut to a power-of-two node bucket with edges tied to it
(`padded_sizes`) before the gather, so the forward compiles once per node bucket; `warmup`
compiles them all before requests come, and `compiles` counts them.
"""

import dataclasses
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from graphs.errors import GraphError
from serving import dispatcher as dispatch_lib
from serving import subgraph as subgraph_lib
from serving.subgraph import SampledSubgraph


def padded_sizes(num_nodes: int, num_edges: int, edge_ratio: int = 4,
                 min_nodes: int = 8) -> tuple[int, int]:
  """(max_nodes, max_edges) for a sample: one power-of-two ladder, edges = edge_ratio * nodes.

  Tying the edge bucket to the node bucket makes the forward's shapes one-dimensional: a server
  compiles once per node bucket (about log2 of the largest sample), not once per (nodes, edges)
  pair. A sample with more edges than `edge_ratio` per node moves up the ladder.
  """
  max_nodes = subgraph_lib.bucket(num_nodes + 1, min_nodes)
  while edge_ratio * max_nodes < num_edges:
    max_nodes *= 2
  return max_nodes, edge_ratio * max_nodes


def trim(sample: SampledSubgraph, edge_ratio: int = 4) -> SampledSubgraph:
  """The sample as numpy arrays cut (or padded) to `padded_sizes` of its real sizes.

  The last node slot stays padding (padded edges point at it), as `SampledSubgraph` requires.
  """
  n, e = int(sample.num_nodes), int(sample.num_edges)
  max_nodes, max_edges = padded_sizes(n, e, edge_ratio)
  nodes = np.full(max_nodes, -1, np.int32)
  nodes[:n] = np.asarray(sample.nodes[:n])
  senders = np.full(max_edges, max_nodes - 1, np.int32)
  receivers = np.full(max_edges, max_nodes - 1, np.int32)
  senders[:e] = np.asarray(sample.senders[:e])
  receivers[:e] = np.asarray(sample.receivers[:e])
  node_mask = np.arange(max_nodes) < n
  edge_mask = np.arange(max_edges) < e
  return SampledSubgraph(nodes, senders, receivers, node_mask, edge_mask, np.int32(n),
                         np.int32(e), np.int32(sample.num_seeds))


def empty_sample(max_nodes: int, edge_ratio: int = 4) -> SampledSubgraph:
  """An all-padding sample of one ladder size (to compile the forward ahead of requests)."""
  max_edges = edge_ratio * max_nodes
  return SampledSubgraph(np.full(max_nodes, -1, np.int32),
                         np.full(max_edges, max_nodes - 1, np.int32),
                         np.full(max_edges, max_nodes - 1, np.int32),
                         np.zeros(max_nodes, bool), np.zeros(max_edges, bool), np.int32(0),
                         np.int32(0), np.int32(0))


@dataclasses.dataclass
class Batch:
  """One batch moving through the pipeline.

  Attributes:
    seeds: [B] distinct int32 node ids.
    backend: "host" or "device" (set by `sample`).
    sample: the trimmed sample (set by `sample`).
    features: [max_nodes, F] gathered rows on the engine's device (set by `gather`).
    logits: [B, C] numpy (set by `forward`); embeddings [B, H] likewise.
    payload: whatever the caller attaches (the server keeps its requests here).
  """
  seeds: np.ndarray
  backend: str = ""
  sample: SampledSubgraph | None = None
  features: Any = None
  logits: np.ndarray | None = None
  embeddings: np.ndarray | None = None
  payload: Any = None
  sampled_edges: int = 0


class Engine:
  """Sample -> gather -> forward on one device.

  Args:
    host_sampler: `.sample(seeds, key) -> SampledSubgraph` on the host.
    device_sampler: the same interface on `device`, or None (host only).
    dispatcher: picks the sampler per batch (`serving.dispatcher.Dispatcher`).
    node_psgs: [N] per-node predicted sampled-graph size.
    features: a `FeatureStore` (`.gather(ids, device)`) or an array [N, F].
    forward: `forward(params, sample, features) -> (logits [max_nodes, C], emb [max_nodes, H])`,
      pure and jittable (the engine jits it).
    params: the model parameters (copied to `device`).
    device: the jax device this engine computes on.
    seed: base of the per-batch sampling keys (each batch gets a new key).
    edge_ratio: padded edges per padded node (see `padded_sizes`).
  """

  def __init__(self, host_sampler, device_sampler, dispatcher: dispatch_lib.Dispatcher,
               node_psgs: np.ndarray, features, forward: Callable, params, device=None,
               seed: int = 0, edge_ratio: int = 4):
    self.host_sampler = host_sampler
    self.fanouts = tuple(int(k) for k in getattr(host_sampler, "fanouts", ()))
    self.edge_ratio = int(edge_ratio)
    self.device_sampler = device_sampler
    self.dispatcher = dispatcher
    self.node_psgs = np.asarray(node_psgs)
    self.num_nodes = self.node_psgs.shape[0]
    self.device = device or jax.devices()[0]
    self.features = features
    self._device_features = None
    if not hasattr(features, "gather"):
      self._device_features = jax.device_put(jnp.asarray(features), self.device)
    self.params = jax.device_put(params, self.device)
    self.compiles = 0

    def counted_forward(params, sample, feats):
      self.compiles += 1  # runs at trace time only
      return forward(params, sample, feats)

    self._forward = jax.jit(counted_forward)
    self._key = np.uint32(seed)
    self._key_lock = threading.Lock()

  def _next_key(self) -> int:
    with self._key_lock:
      self._key = np.uint32((int(self._key) + 0x9E3779B9) & 0xFFFFFFFF)
      return int(self._key)

  def check_ids(self, ids: np.ndarray) -> None:
    """Raises GraphError naming the first id outside [0, num_nodes)."""
    bad = (ids < 0) | (ids >= self.num_nodes)
    if bad.any():
      raise GraphError(f"unknown node id {int(ids[bad][0])} (the graph has nodes "
                       f"0..{self.num_nodes - 1})")

  def sample(self, batch: Batch) -> Batch:
    """Routes by PSGS, samples, and trims to buckets."""
    psgs = float(self.node_psgs[batch.seeds].sum())
    backend = self.dispatcher.route(psgs) if self.device_sampler is not None else "host"
    sampler = self.device_sampler if backend == dispatch_lib.DEVICE else self.host_sampler
    raw = sampler.sample(batch.seeds, self._next_key())
    batch.backend = backend
    batch.sample = trim(raw, self.edge_ratio)
    batch.sampled_edges = int(batch.sample.num_edges)
    return batch

  def gather(self, batch: Batch) -> Batch:
    """Reads the sample's feature rows (every tier of the store) onto the device."""
    ids = batch.sample.nodes
    if self._device_features is not None:
      idx = jax.device_put(np.maximum(ids, 0), self.device)
      rows = self._device_features[idx]
      batch.features = jnp.where(jax.device_put(ids >= 0, self.device)[:, None], rows, 0)
    else:
      batch.features = self.features.gather(ids, self.device)
    return batch

  def forward(self, batch: Batch) -> Batch:
    """Runs the GNN over the sample and keeps the seed rows."""
    sample = jax.device_put(batch.sample, self.device)
    logits, emb = self._forward(self.params, sample, batch.features)
    b = len(batch.seeds)  # the seeds are the sample's first rows
    # Sliced on the host: slicing the jax array by a Python int would compile a new slice for
    # every batch size (~100 ms each on a CPU, paid by live requests).
    batch.logits = np.asarray(logits)[:b]
    batch.embeddings = np.asarray(emb)[:b]
    return batch

  def warmup(self, max_batch: int, seed: int = 0) -> int:
    """Compiles everything a batch of up to `max_batch` seeds can hit, before requests come.

    The forward (and the feature gather) once per node bucket up to the largest possible sample
    (capped by the graph's size), and the device sampler once per seed bucket. Returns the number
    of forward compiles. A server calls this first, so no request pays for a compile against its
    deadline.
    """
    rng = np.random.default_rng(seed)  # seed buckets of the device sampler
    worst = subgraph_lib.caps(max_batch, self.fanouts)[0] if self.fanouts else self.num_nodes
    largest = padded_sizes(min(worst, self.num_nodes), 0, self.edge_ratio)[0]
    # Ids spread evenly over the store's priority order touch every tier (hot, each device's
    # warm block, cold), so every gather piece compiles here, not under a live request.
    order = getattr(self.features, "order", None)
    order = np.arange(self.num_nodes) if order is None else np.asarray(order)
    size = 8
    while size <= largest:
      batch = Batch(seeds=np.zeros(0, np.int32), sample=empty_sample(size, self.edge_ratio))
      spread = np.linspace(0, self.num_nodes - 1, min(size - 1, self.num_nodes)).astype(np.int64)
      batch.sample.nodes[:spread.size] = order[spread]
      self.forward(self.gather(batch))
      size *= 2
    if self.device_sampler is not None:
      b = 1
      while b <= min(max_batch, self.num_nodes):
        seeds = np.sort(rng.choice(self.num_nodes, b, replace=False)).astype(np.int32)
        jax.block_until_ready(self.device_sampler.sample(seeds, 0))
        b *= 2
    return self.compiles

  def infer(self, seeds) -> Batch:
    """All three stages for `seeds` ([B] ints, repeats allowed: answered per position)."""
    seeds = np.asarray(seeds, np.int64).ravel()
    self.check_ids(seeds)
    uniq, inverse = np.unique(seeds, return_inverse=True)
    batch = self.forward(self.gather(self.sample(Batch(seeds=uniq.astype(np.int32)))))
    batch.logits = batch.logits[inverse]
    batch.embeddings = batch.embeddings[inverse]
    return batch
