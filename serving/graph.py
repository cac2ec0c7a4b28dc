"""Graph store: a CSR adjacency on the host (numpy) and on device(s) (jax arrays).

Row `v` of the CSR lists the neighbours `v` aggregates from when sampled: for a symmetric graph
these are its undirected neighbours; for a directed edge list `src -> dst` loaded with
`direction="in"` they are the in-neighbours (messages flow `src -> dst`, as in GNN inference).

Loaders: a whitespace edge list (SNAP `.txt`/`.txt.gz`, `#` comments), a `.npz`
(`indptr`/`indices`, or `edge_index` [2, E], or `src`/`dst`), and OGB's on-disk layout
(`raw/edge.csv.gz` + `raw/num-node-list.csv.gz`, as in ogbn-*/ogbl-* datasets). Ids are kept as
they are in the file (no renumbering): a file with ids 0..N-1 gives N nodes.
"""

import dataclasses
import gzip
import os
from typing import NamedTuple

import numpy as np

from graphs.errors import GraphError

INT32_MAX = np.iinfo(np.int32).max


def index_dtype(n: int) -> np.dtype:
  """int32 where `n` (a node or edge count) fits, else int64."""
  return np.dtype(np.int32) if n <= INT32_MAX else np.dtype(np.int64)


@dataclasses.dataclass(frozen=True)
class CSRGraph:
  """Compressed sparse rows.

  Attributes:
    indptr: [num_nodes + 1] int32 (int64 past 2^31 edges); row v's neighbours are
      `indices[indptr[v]:indptr[v + 1]]`.
    indices: [num_edges] int32 (int64 past 2^31 nodes) neighbour ids, sorted within each row.
  """
  indptr: np.ndarray
  indices: np.ndarray

  def __post_init__(self):
    if self.indptr.ndim != 1 or self.indices.ndim != 1 or self.indptr.size < 1:
      raise GraphError(f"CSR needs 1-D indptr and indices, got shapes {self.indptr.shape} "
                       f"and {self.indices.shape}")
    if int(self.indptr[-1]) != self.indices.size:
      raise GraphError(f"CSR indptr[-1]={int(self.indptr[-1])} but indices has "
                       f"{self.indices.size} entries")

  @property
  def num_nodes(self) -> int:
    return self.indptr.size - 1

  @property
  def num_edges(self) -> int:
    return self.indices.size

  def degrees(self) -> np.ndarray:
    """[num_nodes] int64 row lengths."""
    return np.diff(self.indptr.astype(np.int64))

  def neighbors(self, v: int) -> np.ndarray:
    return self.indices[self.indptr[v]:self.indptr[v + 1]]

  def transpose(self) -> "CSRGraph":
    """The reversed graph (row v lists the nodes whose rows contain v)."""
    rows = np.repeat(np.arange(self.num_nodes, dtype=self.indices.dtype), self.degrees())
    return from_edges(self.indices, rows, num_nodes=self.num_nodes, dedup=False)

  @classmethod
  def from_edges(cls, src, dst, **kw) -> "CSRGraph":
    return from_edges(src, dst, **kw)


def from_edges(src, dst, num_nodes: int | None = None, symmetric: bool = False,
               dedup: bool = True, drop_self_loops: bool = False) -> CSRGraph:
  """CSR whose row `s` lists every `d` of the pairs (s, d).

  Args:
    src, dst: [E] integer arrays.
    num_nodes: node count (default max id + 1); ids must lie in [0, num_nodes).
    symmetric: also add (d, s) for every pair.
    dedup: drop repeated pairs.
    drop_self_loops: drop (v, v).
  """
  src = np.asarray(src).astype(np.int64, copy=False).ravel()
  dst = np.asarray(dst).astype(np.int64, copy=False).ravel()
  if src.shape != dst.shape:
    raise GraphError(f"edge arrays differ in length: {src.size} sources, {dst.size} targets")
  if src.size and min(src.min(), dst.min()) < 0:
    raise GraphError("edge list has a negative node id")
  if num_nodes is None:
    num_nodes = int(max(src.max(), dst.max())) + 1 if src.size else 0
  elif src.size and max(src.max(), dst.max()) >= num_nodes:
    raise GraphError(f"edge list has node id {int(max(src.max(), dst.max()))} but the graph "
                     f"has {num_nodes} nodes")
  if symmetric:
    src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
  if drop_self_loops:
    keep = src != dst
    src, dst = src[keep], dst[keep]
  key = np.sort(src * max(num_nodes, 1) + dst)
  if dedup:
    # Sort + neighbour mask, not np.unique: numpy >= 2.3 unique() goes through a hash table that is
    # ~15x slower than sorting on tens of millions of int64 keys.
    keep = np.empty(key.size, bool)
    keep[:1] = True
    np.not_equal(key[1:], key[:-1], out=keep[1:])
    key = key[keep]
  rows = key // max(num_nodes, 1)
  cols = key - rows * max(num_nodes, 1)
  counts = np.bincount(rows, minlength=num_nodes)
  indptr = np.zeros(num_nodes + 1, dtype=index_dtype(cols.size))
  np.cumsum(counts, out=indptr[1:])
  return CSRGraph(indptr=indptr, indices=cols.astype(index_dtype(num_nodes)))


def _read_text(path: str) -> bytes:
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      return f.read()
  except (OSError, EOFError) as e:
    raise GraphError(f"{path}: cannot read: {e}") from None


def _parse_pairs(path: str, text: bytes, sep: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Two integer columns from text; a malformed line is reported as `path:line`."""
  lines = [ln for ln in text.splitlines()]
  body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith(b"#")]
  joined = b" ".join(body).replace(b",", b" ") if sep == b"," else b" ".join(body)
  try:
    flat = np.array(joined.split(), dtype=np.int64)
    if flat.size % 2 == 0 and all(len(ln.replace(b",", b" ").split()) == 2 for ln in body[:1]):
      pairs = flat.reshape(-1, 2)
      if pairs.shape[0] == len(body):
        return pairs[:, 0], pairs[:, 1]
  except ValueError:
    pass
  for i, ln in enumerate(lines, 1):  # slow path: find the first bad line to name it
    if not ln.strip() or ln.lstrip().startswith(b"#"):
      continue
    parts = ln.replace(b",", b" ").split()
    if len(parts) != 2 or not all(p.lstrip(b"-").isdigit() for p in parts):
      raise GraphError(f"{path}:{i}: expected two integer node ids, got {ln[:80]!r}")
  raise GraphError(f"{path}: cannot parse edge list")


def load_edge_list(path: str, symmetric: bool = True, direction: str = "out",
                   num_nodes: int | None = None) -> CSRGraph:
  """A SNAP-style edge list (`src dst` per line, `#` comments, optional `.gz`).

  Args:
    path: the file.
    symmetric: treat every line as an undirected edge (both directions), deduplicated.
    direction: for directed graphs, "out" (row s lists d for each line `s d`) or "in" (row d lists s).
    num_nodes: node count (default: max id + 1).
  """
  if direction not in ("out", "in"):
    raise GraphError(f"direction must be 'out' or 'in', got {direction!r}")
  src, dst = _parse_pairs(path, _read_text(path))
  if direction == "in":
    src, dst = dst, src
  return from_edges(src, dst, num_nodes=num_nodes, symmetric=symmetric)


def load_npz(path: str, symmetric: bool = False) -> CSRGraph:
  """A `.npz` with `indptr`+`indices` (used as is), `edge_index` [2, E], or `src`+`dst`."""
  try:
    with np.load(path) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise GraphError(f"{path}: not a readable .npz: {e}") from None
  n = int(arrays["num_nodes"]) if "num_nodes" in arrays else None
  if "indptr" in arrays and "indices" in arrays:
    return CSRGraph(indptr=arrays["indptr"].astype(index_dtype(arrays["indices"].size)),
                    indices=arrays["indices"].astype(index_dtype(arrays["indptr"].size - 1)))
  if "edge_index" in arrays:
    ei = arrays["edge_index"]
    if ei.ndim != 2 or ei.shape[0] != 2:
      raise GraphError(f"{path}: edge_index must have shape [2, E], got {ei.shape}")
    return from_edges(ei[0], ei[1], num_nodes=n, symmetric=symmetric)
  if "src" in arrays and "dst" in arrays:
    return from_edges(arrays["src"], arrays["dst"], num_nodes=n, symmetric=symmetric)
  raise GraphError(f"{path}: needs arrays indptr+indices, edge_index, or src+dst; "
                   f"found {sorted(arrays)}")


def save_npz(path: str, graph: CSRGraph) -> None:
  """Write `indptr` and `indices` (atomically: a temp file renamed into place)."""
  tmp = path + ".tmp.npz"
  np.savez(tmp, indptr=graph.indptr, indices=graph.indices)
  os.replace(tmp, path)


def load_ogb(root: str, symmetric: bool = True) -> CSRGraph:
  """OGB's raw layout: `root/raw/edge.csv.gz` (one `src,dst` per line) and `num-node-list.csv.gz`."""
  edge_file = os.path.join(root, "raw", "edge.csv.gz")
  if not os.path.exists(edge_file):
    raise GraphError(f"{root}: not an OGB dataset directory (no raw/edge.csv.gz)")
  n = None
  count_file = os.path.join(root, "raw", "num-node-list.csv.gz")
  if os.path.exists(count_file):
    n = int(_read_text(count_file).split()[0])
  src, dst = _parse_pairs(edge_file, _read_text(edge_file), sep=b",")
  return from_edges(src, dst, num_nodes=n, symmetric=symmetric)


def load_graph(path: str, symmetric: bool = True) -> CSRGraph:
  """Any graph file this module reads, by what `path` is: an OGB dataset folder, a `.npz`, or an
  edge list (text, `.gz` allowed). A missing path is a GraphError naming it."""
  if os.path.isdir(path):
    return load_ogb(path, symmetric=symmetric)
  if not os.path.exists(path):
    raise GraphError(f"{path} does not exist (want an edge list, a .npz or an OGB folder)")
  if path.endswith(".npz"):
    return load_npz(path, symmetric=symmetric)
  return load_edge_list(path, symmetric=symmetric)


def rmat(scale: int, num_edges: int, seed: int = 0, a: float = 0.57, b: float = 0.19,
         c: float = 0.19, symmetric: bool = True) -> CSRGraph:
  """An R-MAT power-law graph on 2^scale nodes (Chakrabarti et al. 2004; Graph500 parameters).

  Each edge picks one quadrant per bit with probabilities (a, b, c, 1-a-b-c); node ids are then
  permuted so degree does not correlate with id. Self loops and duplicates are dropped, so the
  result has somewhat fewer than `num_edges` (x2 if symmetric) entries.
  """
  rng = np.random.default_rng(seed)
  n = 1 << scale
  src = np.zeros(num_edges, dtype=np.int64)
  dst = np.zeros(num_edges, dtype=np.int64)
  for bit in range(scale):
    r = rng.random(num_edges, dtype=np.float32)
    down = r >= a + b  # quadrants c, d: source bit set
    right = ((r >= a) & (r < a + b)) | (r >= a + b + c)  # quadrants b, d: target bit set
    src |= down.astype(np.int64) << bit
    dst |= right.astype(np.int64) << bit
  perm = rng.permutation(n)
  return from_edges(perm[src], perm[dst], num_nodes=n, symmetric=symmetric, drop_self_loops=True)


class DeviceCSR(NamedTuple):
  """The CSR as jax arrays (a pytree): indptr [N + 1] int32, indices [E] int32."""
  indptr: "jax.Array"
  indices: "jax.Array"


def to_device(graph: CSRGraph, device=None) -> DeviceCSR:
  """Copy the CSR to one device (default: the first), as int32 (JAX runs without 64-bit types)."""
  import jax  # pylint: disable=g-import-not-at-top
  if graph.num_edges > INT32_MAX:
    raise GraphError(f"{graph.num_edges} edges do not fit int32 device indices")
  device = device or jax.devices()[0]
  return DeviceCSR(indptr=jax.device_put(graph.indptr.astype(np.int32), device),
                   indices=jax.device_put(graph.indices.astype(np.int32), device))
