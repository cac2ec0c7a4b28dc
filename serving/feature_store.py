"""A tiered node-feature store: hot rows replicated on every device, warm rows partitioned across
devices, cold rows in host memory or on disk (Quiver's feature placement).

Nodes are ranked by a placement order (most-read first: `order_by_access_prob`, or the baselines
`order_by_degree` / `order_random`). With H hot rows, W warm rows per device and D devices, the
rank of a node decides where its row lives:

  rank [0, H)                 hot:  replicated on all D devices
  rank [H + i*W, H + (i+1)*W) warm: on device i only (one contiguous block per device)
  rank [H + D*W, N)           cold: host numpy array, or a tensorstore zarr array on disk

The `slot` table [N] int32 holds each node's rank, i.e. its row in the concatenation
[hot | warm dev 0 | ... | warm dev D-1 | cold]; tier, owner and position follow from the three
boundaries, so one int32 per node is the whole directory.

`FeatureStore.gather(ids, device)` serves a padded id list from all tiers onto one device: hot
rows from that device's replica, warm rows from their owners (gathered there, then copied over),
cold rows read from host or disk (only those rows). `replay` does the same accounting from the
slot table alone, without copying features, so placements can be compared on large graphs.

Internal index arrays are padded to power-of-two sizes (`subgraph.bucket`) so the jitted pieces
compile once per size class; the output keeps the caller's length M (samplers already pad `nodes`
to a few bucketed sizes, so each M compiles once).
"""

import dataclasses
import functools
import os
from typing import NamedTuple

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from graphs.errors import GraphError
from serving import access_prob
from serving import subgraph as subgraph_lib
from serving.graph import CSRGraph

MESH_AXIS = "rows"  # the 1-D mesh axis the warm tier is partitioned over
_IO_BLOCK_BYTES = 64 << 20  # host<->disk copies go in blocks of about this size


# ------------------------------------------------------------------------------- placement policies

def order_by_access_prob(graph: CSRGraph, fanouts, batch_size: int = 1,
                         seed_dist=None) -> np.ndarray:
  """[N] int64 node ids by descending access probability (ties: higher degree, then lower id).

  Arguments as in `access_prob.access_probability`.
  """
  p = access_prob.access_probability(graph, fanouts, batch_size, seed_dist)
  return np.lexsort((np.arange(graph.num_nodes), -graph.degrees(), -p))


def order_by_degree(graph: CSRGraph) -> np.ndarray:
  """[N] int64 node ids by descending degree (row length; ties: lower id)."""
  return np.argsort(-graph.degrees(), kind="stable")


def order_random(num_nodes: int, seed: int = 0) -> np.ndarray:
  """[N] int64 a random permutation (the placement with no information)."""
  return np.random.default_rng(seed).permutation(num_nodes)


# ------------------------------------------------------------------------------------------ layout

class Layout(NamedTuple):
  """Where every row lives; no feature data (what `replay` needs).

  Attributes:
    slot: [N] int32 rank of each node in [hot | warm dev 0 | ... | warm dev D-1 | cold].
    hot_rows: H, rows replicated on every device.
    warm_rows_per_device: W, rows in each device's warm block (the last blocks may be partly
      empty when fewer than D*W rows remain).
    num_devices: D.
    row_bytes: bytes of one feature row.
  """
  slot: np.ndarray
  hot_rows: int
  warm_rows_per_device: int
  num_devices: int
  row_bytes: int

  @property
  def num_nodes(self) -> int:
    return self.slot.size

  @property
  def cold_start(self) -> int:
    """First rank in the cold tier (min(N, H + D*W))."""
    return min(self.num_nodes, self.hot_rows + self.num_devices * self.warm_rows_per_device)

  def classify(self, ids: np.ndarray):
    """Tier masks and positions for valid ids [m].

    Returns:
      (slot [m], hot [m] bool, warm [m] bool, cold [m] bool, owner [m] int64 warm owner device
      index, -1 elsewhere).
    """
    s = self.slot[ids].astype(np.int64)
    hot = s < self.hot_rows
    cold = s >= self.cold_start
    warm = ~hot & ~cold
    owner = np.full(s.shape, -1, np.int64)
    owner[warm] = (s[warm] - self.hot_rows) // max(self.warm_rows_per_device, 1)
    return s, hot, warm, cold, owner


def check_order(order, num_nodes: int) -> np.ndarray:
  """`order` as [N] int64 after checking it is a permutation of 0..N-1 (None: identity)."""
  if order is None:
    return np.arange(num_nodes)
  order = np.asarray(order)
  if order.shape != (num_nodes,) or not np.issubdtype(order.dtype, np.integer):
    raise GraphError(f"placement order must be [{num_nodes}] integer node ids (one per feature "
                     f"row), got shape {order.shape} dtype {order.dtype}")
  order = order.astype(np.int64)
  if num_nodes and (order.min() < 0 or order.max() >= num_nodes
                    or np.bincount(order, minlength=num_nodes).max() != 1):
    raise GraphError(f"placement order must list every node id in [0, {num_nodes}) exactly once")
  return order


def make_layout(order, num_devices: int, hot_rows: int, warm_rows_per_device: int,
                row_bytes: int) -> Layout:
  """The layout of a placement order under a device budget.

  Args:
    order: [N] node ids, most-read first.
    num_devices: D.
    hot_rows: H (clamped to N: a budget over N puts everything in the hot tier).
    warm_rows_per_device: W (shrunk to ceil((N - H) / D) when the warm tier would pass N).
    row_bytes: bytes per feature row (for byte counts).
  """
  n = np.asarray(order).size
  order = check_order(order, n)
  if num_devices < 1 or hot_rows < 0 or warm_rows_per_device < 0:
    raise GraphError(f"need >= 1 device and non-negative budgets, got devices={num_devices}, "
                     f"hot_rows={hot_rows}, warm_rows_per_device={warm_rows_per_device}")
  hot = min(int(hot_rows), n)
  warm = min(int(warm_rows_per_device), -(-(n - hot) // num_devices))
  slot = np.empty(n, np.int32)
  slot[order] = np.arange(n, dtype=np.int32)
  return Layout(slot=slot, hot_rows=hot, warm_rows_per_device=warm, num_devices=int(num_devices),
                row_bytes=int(row_bytes))


def check_ids(ids, num_nodes: int) -> np.ndarray:
  """[M] int64 from `ids`, where -1 is padding; any other id outside [0, N) is a GraphError."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
    raise GraphError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
  ids = ids.astype(np.int64)
  bad = (ids < -1) | (ids >= num_nodes)
  if bad.any():
    first = int(ids[np.argmax(bad)])
    raise GraphError(f"node id {first} is out of range: the feature store has {num_nodes} rows "
                     f"(ids must be in [0, {num_nodes}) or -1 for padding)")
  return ids


# ---------------------------------------------------------------------------------------- counters

@dataclasses.dataclass
class Counters:
  """What gathers served, by tier (bytes are rows * row_bytes of real, non-padding rows).

  `host_bytes` is what crossed from host memory or disk to a device (the cold rows);
  `device_bytes` what crossed between devices (warm rows owned by another device). Index arrays
  and the power-of-two padding of the copies are not counted.
  """
  requests: int = 0
  rows: int = 0
  padding_rows: int = 0
  hot_rows: int = 0
  warm_local_rows: int = 0
  warm_remote_rows: int = 0
  cold_rows: int = 0
  hot_bytes: int = 0
  warm_bytes: int = 0
  cold_bytes: int = 0
  host_bytes: int = 0
  device_bytes: int = 0

  @property
  def hit_rate(self) -> float:
    """Fraction of real rows served from device memory (hot + warm)."""
    return (self.hot_rows + self.warm_local_rows + self.warm_remote_rows) / max(self.rows, 1)

  def add(self, hot, warm_local, warm_remote, cold, padding, row_bytes) -> None:
    self.requests += 1
    self.rows += hot + warm_local + warm_remote + cold
    self.padding_rows += padding
    self.hot_rows += hot
    self.warm_local_rows += warm_local
    self.warm_remote_rows += warm_remote
    self.cold_rows += cold
    self.hot_bytes += hot * row_bytes
    self.warm_bytes += (warm_local + warm_remote) * row_bytes
    self.cold_bytes += cold * row_bytes
    self.host_bytes += cold * row_bytes
    self.device_bytes += warm_remote * row_bytes

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["hit_rate"] = self.hit_rate
    d["local_hit_rate"] = (self.hot_rows + self.warm_local_rows) / max(self.rows, 1)
    d["host_bytes_per_request"] = self.host_bytes / max(self.requests, 1)
    d["device_bytes_per_request"] = self.device_bytes / max(self.requests, 1)
    return d


def replay(store, access_lists, targets=None) -> dict:
  """Tier accounting of a stream of accesses, from the slot table only (no feature copies).

  Args:
    store: a FeatureStore or a Layout.
    access_lists: R arrays of node ids a request reads (e.g. sampled `nodes`; -1 is padding).
    targets: [R] device index serving each request (default round robin, r % D); decides which
      warm rows count as remote.

  Returns:
    `Counters.as_dict()` of the R requests: hit_rate (hot + warm rows / rows), local_hit_rate,
    host_bytes, host_bytes_per_request, device_bytes, rows and bytes per tier, ...
  """
  layout = store.layout if isinstance(store, FeatureStore) else store
  lists = [check_ids(a, layout.num_nodes) for a in access_lists]
  sizes = np.array([a.size for a in lists], np.int64)
  ids = np.concatenate(lists) if lists else np.zeros(0, np.int64)
  req = np.repeat(np.arange(len(lists)), sizes)
  if targets is None:
    target = req % layout.num_devices
  else:
    target = np.asarray(targets, np.int64)[req]
  real = ids >= 0
  _, hot, warm, cold, owner = layout.classify(ids[real])
  local = warm & (owner == target[real])
  c = Counters()
  c.add(int(hot.sum()), int(local.sum()), int((warm & ~local).sum()), int(cold.sum()),
        int((~real).sum()), layout.row_bytes)
  c.requests = len(lists)
  return c.as_dict()


# ------------------------------------------------------------------------------- jitted copy pieces

@jax.jit
def _take(table, idx):
  """table [T, F], idx [b] -> [b, F] (runs on the table's device)."""
  return jnp.take(table, idx, axis=0, mode="clip")


@functools.partial(jax.jit, donate_argnums=0)
def _put(out, rows, piece):
  """out [M, F] with out[rows] = piece; rows == M (padding) are dropped."""
  return out.at[rows].set(piece, mode="drop")


@functools.partial(jax.jit, donate_argnums=0)
def _take_put(out, table, idx, rows):
  """out[rows] = table[idx], both on the output's device (no intermediate copy)."""
  return out.at[rows].set(jnp.take(table, idx, axis=0, mode="clip"), mode="drop")


def _padded(values: np.ndarray, fill: int, size: int | None = None) -> np.ndarray:
  """values as int32, padded with `fill` to `size` (default: a power-of-two length).

  `gather` pads every piece to its output's length M, so each jitted piece compiles once per M
  (a server warms those up front) rather than once per (M, piece length) pair at request time.
  """
  out = np.full(size or subgraph_lib.bucket(values.size, minimum=8), fill, np.int32)
  out[:values.size] = values
  return out


# --------------------------------------------------------------------------------------- zarr I/O

def _zarr_driver(path: str) -> str:
  if os.path.exists(os.path.join(path, "zarr.json")):
    return "zarr3"
  if os.path.exists(os.path.join(path, ".zarray")):
    return "zarr"
  raise GraphError(f"{path}: not a zarr array (no .zarray or zarr.json)")


def open_zarr(path: str):
  """A tensorstore handle on an existing zarr (v2 or v3) array [N, F] at `path` (a directory)."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  spec = {"driver": _zarr_driver(path), "kvstore": {"driver": "file", "path": path}}
  try:
    arr = ts.open(spec, open=True, read=True).result()
  except ValueError as e:  # tensorstore reports missing/corrupt metadata as ValueError
    raise GraphError(f"{path}: cannot open zarr array: {e}") from None
  if arr.rank != 2:
    raise GraphError(f"{path}: features must be a 2-D [num_nodes, dim] array, got shape "
                     f"{tuple(arr.shape)}")
  return arr


def write_zarr(path: str, features, chunk_rows: int | None = None, ids=None):
  """Writes `features[ids]` (all rows if ids is None) as a zarr v2 array, in blocks.

  Args:
    path: directory to create (an existing array there is replaced).
    features: [N, F] numpy array (or np.memmap), or a tensorstore array.
    chunk_rows: rows per zarr chunk; default ~64 KiB chunks. A random row read loads one whole
      chunk, so small chunks suit serving; uncompressed, since float features barely compress.
    ids: optional [R] row ids to write, in this order (the output has R rows).

  Returns:
    The tensorstore handle of the written array [R, F].
  """
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  num_rows = features.shape[0] if ids is None else len(ids)
  dim = features.shape[1]
  dtype = np.dtype(features.dtype.numpy_dtype if hasattr(features.dtype, "numpy_dtype")
                   else features.dtype)
  row_bytes = max(dim * dtype.itemsize, 1)
  chunk_rows = chunk_rows or max(1, (64 << 10) // row_bytes)
  spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": os.fspath(path)},
          "metadata": {"chunks": [max(1, min(chunk_rows, num_rows)), max(dim, 1)],
                       "compressor": None}}
  arr = ts.open(spec, create=True, delete_existing=True, dtype=ts.dtype(dtype.name),
                shape=[num_rows, dim]).result()
  block = max(chunk_rows, _IO_BLOCK_BYTES // row_bytes // chunk_rows * chunk_rows)
  for a in range(0, num_rows, block):
    b = min(num_rows, a + block)
    arr[a:b].write(_read_rows(features, np.arange(a, b) if ids is None else ids[a:b])).result()
  return arr


def _read_rows(table, rows: np.ndarray) -> np.ndarray:
  """table[rows] as numpy, for a numpy array or a tensorstore array (sorted unique reads)."""
  if isinstance(table, np.ndarray):
    return table[rows]
  uniq, inverse = np.unique(rows, return_inverse=True)
  if uniq.size == 0:
    return np.zeros((0,) + tuple(table.shape[1:]), table.dtype.numpy_dtype)
  if uniq.size == uniq[-1] - uniq[0] + 1:  # a contiguous range: one slice read
    data = table[int(uniq[0]):int(uniq[-1]) + 1].read().result()
  else:
    data = table[uniq].read().result()
  return np.asarray(data)[inverse]


def _read_rows_blocked(table, rows: np.ndarray, row_bytes: int) -> np.ndarray:
  block = max(1, _IO_BLOCK_BYTES // max(row_bytes, 1))
  parts = [_read_rows(table, rows[a:a + block]) for a in range(0, rows.size, block)]
  return np.concatenate(parts) if parts else _read_rows(table, rows)


# ----------------------------------------------------------------------------------- feature store

class FeatureStore:
  """Node features [N, F] in three tiers; see the module docstring.

  Attributes:
    layout: the Layout (slot table and tier sizes).
    order: [N] int64 node ids by rank (order[slot[u]] == u).
    devices: the D devices, device i owning warm block i.
    mesh: 1-D Mesh over `devices`, axis `MESH_AXIS`.
    hot: [H, F] jax array, fully replicated over `mesh` (one copy per device).
    warm: [D*W, F] jax array sharded over `mesh` on rows: device i holds the nodes
      order[H + i*W : H + (i+1)*W] (zero rows past N).
    cold: the cold tier: a numpy array or a tensorstore array (see `cold_on_disk`).
    counters: Counters of every `gather` since construction or `reset_counters`.
  """

  def __init__(self, layout, order, devices, mesh, hot, warm, cold, cold_by_id: bool,
               dim: int, dtype):
    self.layout = layout
    self.order = order
    self.devices = list(devices)
    self.mesh = mesh
    self.hot = hot
    self.warm = warm
    self.cold = cold
    # True: the cold table is the full base array, indexed by node id (no copy was made);
    # False: it holds only the cold rows, in rank order, indexed by rank - cold_start.
    self._cold_by_id = cold_by_id
    self.dim = dim
    self.dtype = np.dtype(dtype)
    self.counters = Counters()
    self._index = {d: i for i, d in enumerate(self.devices)}
    # Per-device views of the replicated and partitioned arrays (no copies).
    self._hot_on = {s.device: s.data for s in hot.addressable_shards}
    # The mesh lists `devices` in order, so the shard on device i is warm block i.
    self._warm_on = [None] * len(self.devices)
    for s in warm.addressable_shards:
      self._warm_on[self._index[s.device]] = s.data

  # -------------------------------------------------------------------------------- construction

  @classmethod
  def build(cls, features, order=None, devices=None, hot_rows: int = 0,
            warm_rows_per_device: int = 0, cold: str = "host",
            disk_path: str | None = None) -> "FeatureStore":
    """Places `features` by `order` over `devices`.

    Args:
      features: [N, F] numpy array (np.memmap for larger-than-RAM), or the path of a zarr array
        (read with tensorstore), or an open tensorstore array.
      order: [N] node ids, most-read first (default: id order).
      devices: jax devices (default `jax.devices()`); device i owns warm block i.
      hot_rows: H rows replicated on every device (a budget over N puts all rows there).
      warm_rows_per_device: W rows partitioned to each device.
      cold: "host" (a numpy array in host memory) or "disk" (a zarr array read on demand).
      disk_path: for cold="disk": where to write the cold rows (rank order). May be omitted
        when `features` is already a zarr array: it then serves the cold rows in place.

    Raises:
      GraphError: features not 2-D, order not a permutation of the rows, bad tier name, ...
    """
    if cold not in ("host", "disk"):
      raise GraphError(f"cold must be 'host' or 'disk', got {cold!r}")
    if isinstance(features, (str, os.PathLike)):
      features = open_zarr(features)
    on_disk = not isinstance(features, np.ndarray)
    if not on_disk:
      features = np.asarray(features)
    shape = tuple(features.shape)
    if len(shape) != 2:
      raise GraphError(f"features must be a 2-D [num_nodes, dim] array, got shape {shape}")
    n, dim = shape
    dtype = np.dtype(features.dtype.numpy_dtype if on_disk else features.dtype)
    devices = list(jax.devices() if devices is None else devices)
    if not devices or len(set(devices)) != len(devices):
      raise GraphError(f"devices must be a non-empty list of distinct devices, got {devices}")
    if order is not None and np.asarray(order).shape != (n,):
      raise GraphError(f"placement order has shape {np.asarray(order).shape} but features have "
                       f"{n} rows")
    order = check_order(order, n)
    row_bytes = dim * dtype.itemsize
    layout = make_layout(order, len(devices), hot_rows, warm_rows_per_device, row_bytes)
    h, w, d = layout.hot_rows, layout.warm_rows_per_device, len(devices)

    mesh = Mesh(np.array(devices, dtype=object), (MESH_AXIS,))
    hot_np = _read_rows_blocked(features, order[:h], row_bytes)
    warm_np = np.zeros((d * w, dim), dtype)
    warm_ids = order[h:layout.cold_start]
    warm_np[:warm_ids.size] = _read_rows_blocked(features, warm_ids, row_bytes)
    hot = jax.device_put(hot_np, NamedSharding(mesh, P()))
    warm = jax.device_put(warm_np, NamedSharding(mesh, P(MESH_AXIS)))
    del hot_np, warm_np

    cold_ids = order[layout.cold_start:]
    if cold == "disk" and disk_path is None:
      if not on_disk:
        raise GraphError("cold='disk' needs disk_path (or features given as a zarr array)")
      table, by_id = features, True  # serve cold rows from the base array in place
    elif cold == "disk":
      table, by_id = write_zarr(disk_path, features, ids=cold_ids), False
    elif on_disk:
      table, by_id = _read_rows_blocked(features, cold_ids, row_bytes), False
    else:
      table, by_id = features, True  # no copy of the (largest) tier
    return cls(layout, order, devices, mesh, hot, warm, table, by_id, dim, dtype)

  @classmethod
  def from_zarr(cls, path: str, order=None, devices=None, hot_rows: int = 0,
                warm_rows_per_device: int = 0) -> "FeatureStore":
    """A store whose base features are the zarr array at `path`; cold rows are read from it on
    demand (nothing but the hot and warm rows is loaded)."""
    return cls.build(path, order, devices, hot_rows, warm_rows_per_device, cold="disk")

  # -------------------------------------------------------------------------------------- access

  @property
  def num_nodes(self) -> int:
    return self.layout.num_nodes

  @property
  def row_bytes(self) -> int:
    return self.layout.row_bytes

  @property
  def cold_on_disk(self) -> bool:
    return not isinstance(self.cold, np.ndarray)

  @property
  def slot(self) -> np.ndarray:
    """[N] int32 each node's rank (tier and position; see the module docstring)."""
    return self.layout.slot

  def tier_sizes(self) -> dict:
    lay = self.layout
    return dict(hot=lay.hot_rows, warm=lay.cold_start - lay.hot_rows,
                warm_per_device=lay.warm_rows_per_device, cold=lay.num_nodes - lay.cold_start)

  def reset_counters(self) -> None:
    self.counters = Counters()

  def _device(self, device):
    if device is None:
      return self.devices[0]
    if isinstance(device, (int, np.integer)):
      return self.devices[int(device)]
    if device not in self._index:
      raise GraphError(f"device {device} holds no part of this feature store "
                       f"(its devices: {self.devices})")
    return device

  def gather(self, ids, device=None) -> jax.Array:
    """Feature rows of `ids`, assembled on `device`, reading every tier as needed.

    Args:
      ids: [M] integer node ids on the host (e.g. a sample's `nodes`); -1 is padding.
      device: one of `devices` (or its index; default devices[0]).

    Returns:
      [M, F] jax array on `device`: row j is features[ids[j]], zeros where ids[j] == -1.

    Raises:
      GraphError: an id outside [0, N) other than -1 (the message names the first), or a
        device outside the store.
    """
    target = self._device(device)
    t = self._index[target]
    ids = check_ids(ids, self.num_nodes)
    m = ids.size
    out_rows = np.nonzero(ids >= 0)[0]
    slot, hot, warm, cold, owner = self.layout.classify(ids[out_rows])
    h, w = self.layout.hot_rows, self.layout.warm_rows_per_device
    out = jnp.zeros((m, self.dim), self.dtype, device=target)
    put = lambda a: jax.device_put(a, target)

    if hot.any():
      out = _take_put(out, self._hot_on[target], put(_padded(slot[hot], 0, m)),
                      put(_padded(out_rows[hot], m, m)))
    n_local = n_remote = 0
    for o in np.unique(owner[warm]):
      sel = warm & (owner == o)
      pos = _padded(slot[sel] - h - o * w, 0, m)
      rows = put(_padded(out_rows[sel], m, m))
      if o == t:
        out = _take_put(out, self._warm_on[o], put(pos), rows)
        n_local += int(sel.sum())
      else:
        # Gather on the owner so only the requested rows cross (device-to-device copy).
        src = self._warm_on[o]
        piece = _take(src, jax.device_put(pos, next(iter(src.devices()))))
        out = _put(out, rows, put(piece))
        n_remote += int(sel.sum())
    if cold.any():
      if self._cold_by_id:
        rows_in_table = ids[out_rows[cold]]
      else:
        rows_in_table = slot[cold] - self.layout.cold_start
      data = _read_rows(self.cold, rows_in_table)  # only the cold rows leave host/disk
      piece = np.zeros((m, self.dim), self.dtype)
      piece[:data.shape[0]] = data
      out = _put(out, put(_padded(out_rows[cold], m, m)), put(piece))
    self.counters.add(int(hot.sum()), n_local, n_remote, int(cold.sum()), m - out_rows.size,
                      self.row_bytes)
    return out
