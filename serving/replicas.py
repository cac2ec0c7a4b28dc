"""Server replicas across processes, each owning a partition of the node features.

Beyond one machine, each process runs a whole server (its own samplers, model and devices) but
keeps only its share of the feature rows: the nodes ranked `r, r + P, r + 2P, ...` by access
probability go to replica r of P, so every replica holds an equal slice of the hot rows. A batch's
rows owned elsewhere are fetched from their owner's `POST /v1/features` endpoint.

The replicas coordinate through `jax.distributed`: the process count and index come from it
(`jax.process_count()`, `jax.process_index()`), and each replica's listening address is exchanged
with `multihost_utils.process_allgather`, which also makes startup a barrier (nobody routes to a
peer before every peer listens). On CPU, this needs gloo collectives
(`JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo`, set by `launch/serve_gnn`).
"""

import base64
import dataclasses
import http.client
import json
import socket
import threading
from typing import Sequence

import jax
import numpy as np

from graphs.errors import GraphError
from serving import feature_store as feature_store_lib


@dataclasses.dataclass(frozen=True)
class ReplicaGroup:
  """Who is who: this process's index, and every replica's (host, port)."""
  process_id: int
  addresses: tuple[tuple[str, int], ...]

  @property
  def num_processes(self) -> int:
    return len(self.addresses)


def exchange_addresses(host: str, port: int) -> ReplicaGroup:
  """All-gathers every replica's listening address (a barrier across the processes)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  ip = socket.inet_aton(socket.gethostbyname(host))
  mine = np.array([int.from_bytes(ip, "big"), port], np.int64).astype(np.uint32).view(np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(mine)).view(np.uint32).reshape(-1, 2)
  addresses = tuple((socket.inet_ntoa(int(a).to_bytes(4, "big")), int(p)) for a, p in everyone)
  return ReplicaGroup(process_id=jax.process_index(), addresses=addresses)


def partition(order: np.ndarray, num_processes: int) -> np.ndarray:
  """[N] owner replica of each node: round-robin over the access-probability ranking."""
  owner = np.empty(order.size, np.int32)
  owner[order] = np.arange(order.size) % num_processes
  return owner


class PartitionedFeatures:
  """The feature rows one replica owns (in a tiered `FeatureStore`), plus fetches from peers.

  Args:
    features: [N, F] all features (only the owned rows are kept).
    owner: [N] owner replica per node (`partition`).
    process_id: this replica.
    order: [N] node ids by access probability (the local store keeps the same ranking).
    devices, hot_fraction, warm_fraction: the local store's placement.
  """

  def __init__(self, features, owner: np.ndarray, process_id: int, order: np.ndarray,
               devices: Sequence, hot_fraction: float, warm_fraction: float):
    self.num_nodes = owner.size
    self.owner = owner
    self.process_id = process_id
    self.owned = np.nonzero(owner == process_id)[0]
    self.local_index = np.full(self.num_nodes, -1, np.int64)
    self.local_index[self.owned] = np.arange(self.owned.size)
    local_order = self.local_index[order[owner[order] == process_id]]
    n = self.owned.size
    self.store = feature_store_lib.FeatureStore.build(
        np.ascontiguousarray(np.asarray(features)[self.owned], np.float32), order=local_order,
        devices=list(devices), hot_rows=int(round(hot_fraction * n)),
        warm_rows_per_device=int(round(warm_fraction * n / len(devices))))
    self.order = order
    self.dim = self.store.dim
    self.peers: tuple[tuple[str, int], ...] = ()
    self._conns = threading.local()
    self.remote_rows = 0

  def rows(self, ids: np.ndarray) -> np.ndarray:
    """[M, F] float32 host copy of owned rows (what `/v1/features` answers)."""
    ids = feature_store_lib.check_ids(ids, self.num_nodes)
    if (ids < 0).any() or (self.owner[ids] != self.process_id).any():
      bad = ids[(ids < 0) | (self.owner[np.maximum(ids, 0)] != self.process_id)][0]
      raise GraphError(f"node {int(bad)} is not owned by replica {self.process_id}")
    return np.asarray(self.store.gather(self.local_index[ids]), np.float32)

  def _fetch(self, peer: int, ids: np.ndarray) -> np.ndarray:
    conns = getattr(self._conns, "by_peer", None)
    if conns is None:
      conns = self._conns.by_peer = {}
    host, port = self.peers[peer]
    body = json.dumps({"nodes": ids.tolist()})
    for attempt in range(2):  # one retry on a dropped keep-alive connection
      conn = conns.get(peer) or http.client.HTTPConnection(host, port, timeout=30)
      conns[peer] = conn
      try:
        conn.request("POST", "/v1/features", body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = json.loads(r.read())
        break
      except (OSError, http.client.HTTPException):
        conns.pop(peer, None)
        if attempt:
          raise
    if r.status != 200:
      raise GraphError(f"replica {peer} at {host}:{port} refused features: {payload}")
    rows = np.frombuffer(base64.b64decode(payload["rows"]), np.float32)
    return rows.reshape(ids.size, self.dim)

  def gather(self, ids, device=None) -> jax.Array:
    """[M, F] rows of `ids` (-1: zeros) on `device`: owned rows from the local tiers, the rest
    from their owners."""
    ids = feature_store_lib.check_ids(ids, self.num_nodes)
    real = ids >= 0
    owner = np.where(real, self.owner[np.maximum(ids, 0)], -1)
    local = np.where(owner == self.process_id, self.local_index[np.maximum(ids, 0)], -1)
    out = self.store.gather(local, device)
    remote = real & (owner != self.process_id)
    if remote.any():
      host_rows = np.zeros((ids.size, self.dim), np.float32)
      for peer in np.unique(owner[remote]):
        sel = owner == peer
        host_rows[sel] = self._fetch(int(peer), ids[sel])
      self.remote_rows += int(remote.sum())
      out = out + jax.device_put(host_rows, out.devices().pop())  # disjoint rows: a sum merges
    return out
