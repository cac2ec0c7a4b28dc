"""Link-prediction datasets: OGB `ogbl-*` read in place, random edge splits, and the OGB Evaluator.

Three sources give one `LinkSplit`:

  - `load_ogbl(root, name)`: an OGB link dataset in OGB's own on-disk layout, with its official
    split and negatives, read without `ogb` (which would write `processed/` next to read-only data);
  - `planetoid_link_split(dataset, seed)`: Cora / CiteSeer with a seeded random 85/5/10 split of the
    undirected edges and as many sampled non-edges as positives for valid/test (SEAL, NBFNet, BUDDY
    and PyG's `RandomLinkSplit` report Planetoid link prediction this way);
  - `edge_list_split(path, seed)`: the same split for any `src dst` text edge list.

`evaluate(name, pos_scores, neg_scores)` scores with `ogb.linkproppred.Evaluator`: Hits@20 for ddi,
Hits@50 for collab, Hits@100 for ppa, MRR for citation2 (OGB's own metrics), Hits@100 for Planetoid
and custom graphs.

Facts about OGB's layout this module relies on (checked on ../shared/data/ogbl_ddi only):
  - `raw/edge.csv.gz` holds one `src,dst` line per edge of the *training* graph, each undirected
    edge once; `raw/num-node-list.csv.gz` and `raw/num-edge-list.csv.gz` hold one integer each;
  - `split/<type>/{train,valid,test}.pt` (type `target` for ddi, `time` for collab/citation2,
    `throughput` for ppa) are `torch.save` files of dicts of arrays: ddi's are numpy int64 arrays
    `edge` [E, 2] and, for valid/test, `edge_neg` [E', 2]. For ddi the train edges are exactly the
    raw edges (1,067,911). They are pickles, so they are loaded with `torch.load(weights_only=True)`
    with only numpy's array reconstructor allow-listed: no arbitrary code runs;
  - citation2's splits are `source_node` [E], `target_node` [E] and, for valid/test,
    `target_node_neg` [E, 1000] (read here, untested: the data is not available offline).
"""

import dataclasses
import gzip
import os
from typing import Sequence

import numpy as np

from graphs.errors import GraphError

# OGB's split folder and metric per dataset (ogb/linkproppred/master.csv).
OGB_SPLITS = {"ogbl-ddi": "target", "ogbl-collab": "time", "ogbl-ppa": "throughput",
              "ogbl-citation2": "time"}
OGB_METRICS = {"ogbl-ddi": "hits@20", "ogbl-collab": "hits@50", "ogbl-ppa": "hits@100",
               "ogbl-citation2": "mrr"}
DEFAULT_K = 100  # Hits@100 for Planetoid and custom graphs.


@dataclasses.dataclass(frozen=True)
class LinkSplit:
  """A graph and its link-prediction split.

  Edge arrays are int64 pairs `(u, v)` of node ids in [0, num_nodes). For undirected graphs (all but
  citation2) each undirected edge appears once.

  Attributes:
    name: "ogbl-ddi", "cora", "citeseer", or the edge-list path.
    num_nodes: N.
    train_pos: [E_tr, 2] training edges; the message-passing graph is made of these only.
    valid_pos: [E_va, 2] validation positives.
    valid_neg: [E_va', 2] validation negatives shared by all positives (Hits@K datasets), or
      [E_va, K, 2] per-positive negatives (MRR datasets: citation2 has K = 1000), or None where
      the caller samples them.
    test_pos: [E_te, 2] test positives.
    test_neg: like `valid_neg`, for test.
    features: [N, F] float32 node features, or None (ddi has none).
    node_ids: [N] int64 original id of each node where ids were relabelled (edge lists), else None.
  """
  name: str
  num_nodes: int
  train_pos: np.ndarray
  valid_pos: np.ndarray
  valid_neg: np.ndarray | None
  test_pos: np.ndarray
  test_neg: np.ndarray | None
  features: np.ndarray | None = None
  node_ids: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# OGB.


def _read_gz_int(path: str) -> int:
  try:
    with gzip.open(path, "rb") as f:
      return int(f.read().split()[0])
  except (OSError, EOFError, ValueError, IndexError) as e:
    raise GraphError(f"{path}: expected one integer: {e}") from None


def _dataset_dir(root: str, name: str) -> str:
  """`root/ogbl_ddi` (OGB's layout under a root), or `root` itself if it holds `raw/`."""
  for d in (os.path.join(root, name.replace("-", "_")), root):
    if os.path.isfile(os.path.join(d, "raw", "edge.csv.gz")):
      return d
  raise GraphError(f"{root}: no {name} dataset here (looked for "
                   f"{os.path.join(root, name.replace('-', '_'), 'raw', 'edge.csv.gz')} and "
                   f"{os.path.join(root, 'raw', 'edge.csv.gz')})")


def _torch_load(path: str) -> dict:
  """A split file, with only numpy arrays and torch tensors allowed in the pickle."""
  import torch  # pylint: disable=g-import-not-at-top
  core = getattr(np, "_core", None) or np.core
  reconstruct = core.multiarray._reconstruct  # pylint: disable=protected-access
  # numpy 2 renamed numpy.core; files written under numpy 1 name the old module.
  allowed = [(reconstruct, "numpy.core.multiarray._reconstruct"),
             (reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
  allowed += [type(np.dtype(t)) for t in (np.int64, np.int32, np.float32, np.float64, np.bool_)]
  try:
    with torch.serialization.safe_globals(allowed):
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise GraphError(f"split file {path} does not exist") from None
  except Exception as e:  # pylint: disable=broad-except  # pickle/zip/torch errors: a bad file.
    raise GraphError(f"{path}: not a readable OGB split file: {e}") from None
  if not isinstance(obj, dict):
    raise GraphError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
  return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in obj.items()}


def _pairs(d: dict, path: str, neg: bool, num_nodes: int) -> np.ndarray | None:
  """The positive (`neg=False`) or negative pairs of one split dict, checked against num_nodes."""
  if "edge" in d or "edge_neg" in d:  # ddi, collab, ppa: [E, 2] pairs.
    key = "edge_neg" if neg else "edge"
    if key not in d:
      if neg:
        return None
      raise GraphError(f"{path}: no '{key}' array (keys: {sorted(d)})")
    e = d[key]
    if e.ndim != 2 or e.shape[1] != 2:
      raise GraphError(f"{path}: '{key}' must have shape [E, 2], got {e.shape}")
  elif "source_node" in d:  # citation2: sources [E], targets [E] or negatives [E, K].
    src = d["source_node"]
    key = "target_node_neg" if neg else "target_node"
    if key not in d:
      if neg:
        return None
      raise GraphError(f"{path}: no '{key}' array (keys: {sorted(d)})")
    dst = d[key]
    if dst.shape[0] != src.shape[0]:
      raise GraphError(f"{path}: {src.shape[0]} source nodes but {dst.shape[0]} rows of '{key}'")
    if neg:
      e = np.stack([np.broadcast_to(src[:, None], dst.shape), dst], axis=-1)
    else:
      e = np.stack([src, dst], axis=-1)
  else:
    raise GraphError(f"{path}: unknown split layout (keys: {sorted(d)})")
  e = np.ascontiguousarray(e, dtype=np.int64)
  if e.size and (e.min() < 0 or e.max() >= num_nodes):
    bad = int(e.max()) if e.max() >= num_nodes else int(e.min())
    raise GraphError(f"{path}: '{key}' has node id {bad} outside [0, {num_nodes})")
  return e


def _read_ogb_edges(path: str) -> np.ndarray:
  try:
    with gzip.open(path, "rb") as f:
      text = f.read()
  except (OSError, EOFError) as e:
    raise GraphError(f"{path}: cannot read: {e}") from None
  return _parse_pairs(path, text, comma=True)


def _read_features(path: str, num_nodes: int) -> np.ndarray | None:
  if not os.path.isfile(path):
    return None
  try:
    import pandas as pd  # pylint: disable=g-import-not-at-top  # ogb depends on it; C parser.
    x = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
  except Exception as e:  # pylint: disable=broad-except
    raise GraphError(f"{path}: cannot read node features: {e}") from None
  if x.shape[0] != num_nodes:
    raise GraphError(f"{path}: {x.shape[0]} feature rows for {num_nodes} nodes")
  return x


def load_ogbl(root: str, name: str) -> LinkSplit:
  """An OGB link-prediction dataset read in place from OGB's on-disk layout.

  Nothing is written: `raw/` and `split/` are parsed directly, so a read-only copy works.

  Args:
    root: the dataset folder (`.../ogbl_ddi`) or the folder holding it, as `ogb`'s `root=`.
    name: "ogbl-ddi" (tested); "ogbl-collab", "ogbl-ppa", "ogbl-citation2" follow the same code.

  Returns:
    The official split: `train_pos` [E_tr, 2], `valid_pos`/`test_pos` [E, 2], negatives as
    described on `LinkSplit` (ddi: valid_neg [101882, 2], test_neg [95599, 2]).

  Raises:
    GraphError: unknown name, a missing dataset or file, node ids out of range, or a train split
      whose size differs from the raw edge count (the message names the file).
  """
  name = name.lower().replace("_", "-")
  if name not in OGB_SPLITS:
    raise GraphError(f"unknown OGB link dataset {name!r}; choose one of {', '.join(OGB_SPLITS)}")
  d = _dataset_dir(root, name)
  raw = os.path.join(d, "raw")
  num_nodes = _read_gz_int(os.path.join(raw, "num-node-list.csv.gz"))
  edges = _read_ogb_edges(os.path.join(raw, "edge.csv.gz"))
  if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
    raise GraphError(f"{os.path.join(raw, 'edge.csv.gz')}: node id "
                     f"{int(edges.max() if edges.max() >= num_nodes else edges.min())} outside "
                     f"[0, {num_nodes}) given by num-node-list.csv.gz")
  split_dir = os.path.join(d, "split", OGB_SPLITS[name])
  parts = {}
  for part in ("train", "valid", "test"):
    path = os.path.join(split_dir, f"{part}.pt")
    dct = _torch_load(path)
    parts[part] = (_pairs(dct, path, False, num_nodes), _pairs(dct, path, True, num_nodes))
  train_path = os.path.join(split_dir, "train.pt")
  # OGB's raw graph is the training graph: the train split must be exactly its edges.
  if parts["train"][0].shape[0] != edges.shape[0]:
    raise GraphError(f"{train_path}: {parts['train'][0].shape[0]} train edges but "
                     f"{os.path.join(raw, 'edge.csv.gz')} has {edges.shape[0]}: the split does not "
                     "match the edge list")
  train_keys = np.sort(parts["train"][0][:, 0] * num_nodes + parts["train"][0][:, 1])
  if not np.array_equal(train_keys, np.sort(edges[:, 0] * num_nodes + edges[:, 1])):
    raise GraphError(f"{train_path}: the train edges differ from those in "
                     f"{os.path.join(raw, 'edge.csv.gz')}: the split does not match the edge list")
  features = _read_features(os.path.join(raw, "node-feat.csv.gz"), num_nodes)
  return LinkSplit(name=name, num_nodes=num_nodes, train_pos=parts["train"][0],
                   valid_pos=parts["valid"][0], valid_neg=parts["valid"][1],
                   test_pos=parts["test"][0], test_neg=parts["test"][1], features=features)


# ---------------------------------------------------------------------------------------------
# Random splits (Planetoid, edge lists).


def _parse_pairs(path: str, text: bytes, comma: bool = False) -> np.ndarray:
  """[E, 2] int64 from `src dst` lines (`#` comments, blank lines); a bad line names `path:line`."""
  lines = text.splitlines()
  body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith(b"#")]
  joined = b" ".join(body)
  if comma:
    joined = joined.replace(b",", b" ")
  try:  # Fast path: one numpy parse of everything.
    flat = np.array(joined.split(), dtype=np.int64)
    if flat.size == 2 * len(body) and (flat.size == 0 or flat.min() >= 0):
      pairs = flat.reshape(-1, 2)
      if all(len(ln.replace(b",", b" ").split()) == 2 for ln in body):
        return pairs
  except ValueError:
    pass
  for i, ln in enumerate(lines, 1):  # Slow path: find the first bad line to name it.
    if not ln.strip() or ln.lstrip().startswith(b"#"):
      continue
    cols = (ln.replace(b",", b" ") if comma else ln).split()
    if len(cols) != 2 or not all(c.isdigit() for c in cols):
      raise GraphError(f"{path}:{i}: expected two non-negative integer node ids, got {ln[:80]!r}")
  raise GraphError(f"{path}: cannot parse edge list")


def _undirected(pairs: np.ndarray, num_nodes: int) -> np.ndarray:
  """[E, 2] with u < v, sorted, no duplicates and no self loops."""
  u = np.minimum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
  v = np.maximum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
  keep = u != v
  key = np.unique(u[keep] * num_nodes + v[keep])
  return np.stack([key // num_nodes, key % num_nodes], axis=1)


def _sample_non_edges(edge_keys: np.ndarray, num_nodes: int, count: int,
                      rng: np.random.Generator) -> np.ndarray:
  """`count` distinct pairs u < v (in random order) that are not in `edge_keys` (sorted u*N+v)."""
  if count == 0:
    return np.zeros((0, 2), np.int64)
  out = np.zeros(0, np.int64)
  total = num_nodes * (num_nodes - 1) // 2
  free = total - edge_keys.size
  while out.size < count:
    need = count - out.size
    draw = int(need * total / free * 1.2) + 64  # Rejection sampling with headroom.
    a = rng.integers(0, num_nodes, draw)
    b = rng.integers(0, num_nodes, draw)
    u, v = np.minimum(a, b), np.maximum(a, b)
    key = (u * num_nodes + v)[u != v]
    pos = np.searchsorted(edge_keys, key)
    is_edge = (pos < edge_keys.size) & (edge_keys[np.minimum(pos, edge_keys.size - 1)] == key)
    key = np.concatenate([out, key[~is_edge]])
    _, first = np.unique(key, return_index=True)  # Drop repeats, keep the first draw's order.
    out = key[np.sort(first)][:count]
  return np.stack([out // num_nodes, out % num_nodes], axis=1)


def random_link_split(edges: np.ndarray, num_nodes: int, seed: int, val: float = 0.05,
                      test: float = 0.1, name: str = "custom",
                      features: np.ndarray | None = None,
                      node_ids: np.ndarray | None = None) -> LinkSplit:
  """A seeded random split of an undirected graph's edges, with sampled negatives.

  Each undirected edge is counted once; `floor(val * E)` go to validation, `floor(test * E)` to
  test, the rest to train (PyG `RandomLinkSplit`'s sizes: Cora 4488/263/527). Validation and test
  each get as many negatives as positives: distinct node pairs u < v that are not edges of the
  *whole* graph, and not shared between valid and test. Everything is a function of `seed` alone.

  Args:
    edges: [E, 2] node id pairs (either direction, duplicates and self loops allowed: dropped).
    num_nodes: N.
    seed: the split's random seed.
    val: fraction of edges for validation.
    test: fraction of edges for test.
    name: recorded on the result.
    features: [N, F] node features, or None.
    node_ids: [N] original node ids, or None.

  Returns:
    A `LinkSplit` with [E_tr, 2], [E_va, 2] x 2 and [E_te, 2] x 2 arrays, each pair with u < v.

  Raises:
    GraphError: no edges, fractions outside [0, 1), too few edges for a non-empty valid/test split,
      or too few non-edges for the negatives.
  """
  if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
    raise GraphError(f"{name}: val={val} and test={test} must be fractions summing below 1")
  und = _undirected(np.asarray(edges, np.int64).reshape(-1, 2), num_nodes)
  e = und.shape[0]
  if e == 0:
    raise GraphError(f"{name}: the graph has no edges (self loops do not count)")
  n_val, n_test = int(np.floor(val * e)), int(np.floor(test * e))
  if (val > 0 and n_val == 0) or (test > 0 and n_test == 0) or e - n_val - n_test == 0:
    raise GraphError(f"{name}: {e} edges are too few for a {val}/{test} valid/test split")
  edge_keys = und[:, 0] * num_nodes + und[:, 1]  # Sorted by construction.
  free = num_nodes * (num_nodes - 1) // 2 - e
  if free < n_val + n_test:
    raise GraphError(f"{name}: only {free} non-edges, {n_val + n_test} negatives needed")
  rng = np.random.default_rng(seed)
  perm = rng.permutation(e)
  valid_pos = und[perm[:n_val]]
  test_pos = und[perm[n_val:n_val + n_test]]
  train_pos = und[np.sort(perm[n_val + n_test:])]
  neg = _sample_non_edges(edge_keys, num_nodes, n_val + n_test, rng)
  return LinkSplit(name=name, num_nodes=num_nodes, train_pos=train_pos, valid_pos=valid_pos,
                   valid_neg=neg[:n_val], test_pos=test_pos, test_neg=neg[n_val:],
                   features=features, node_ids=node_ids)


def planetoid_link_split(dataset, seed: int, val: float = 0.05, test: float = 0.1) -> LinkSplit:
  """Cora / CiteSeer with a seeded random 85/5/10 edge split (see `random_link_split`).

  Args:
    dataset: a `graphs.planetoid.PlanetoidDataset` (its `src`/`dst` hold both directions).
    seed: the split's random seed.
    val: fraction of undirected edges for validation.
    test: fraction of undirected edges for test.

  Returns:
    A `LinkSplit` named after the dataset, with its [N, F] features.
  """
  edges = np.stack([np.asarray(dataset.src), np.asarray(dataset.dst)], axis=1)
  return random_link_split(edges, dataset.num_nodes, seed, val, test, name=dataset.name,
                           features=dataset.features)


def edge_list_split(path: str, seed: int, val: float = 0.05, test: float = 0.1) -> LinkSplit:
  """A `src dst` edge-list file (`#` comments, optional `.gz`) as an undirected link dataset.

  Node ids are relabelled 0..N-1 in increasing order of the ids that occur (SNAP ids are often
  sparse; isolated phantom nodes would make easy negatives); `node_ids` keeps the originals.

  Args:
    path: the file.
    seed: the split's random seed.
    val: fraction of undirected edges for validation.
    test: fraction of undirected edges for test.

  Returns:
    A `LinkSplit` named `path`, without features.

  Raises:
    GraphError: an unreadable file, a malformed line (named `path:line`), or no edges.
  """
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      text = f.read()
  except (OSError, EOFError) as e:
    raise GraphError(f"{path}: cannot read: {e}") from None
  pairs = _parse_pairs(path, text)
  if pairs.shape[0] == 0:
    raise GraphError(f"{path}: the graph has no edges")
  node_ids, inverse = np.unique(pairs, return_inverse=True)
  return random_link_split(inverse.reshape(-1, 2), node_ids.size, seed, val, test, name=path,
                           node_ids=node_ids)


# ---------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(name: str, pos_scores, neg_scores, ks: Sequence[int] | None = None) -> dict:
  """Scores with `ogb.linkproppred.Evaluator`, using each dataset's OGB metric.

  Hits@K (OGB's definition): the fraction of positives scored strictly above the K-th highest
  negative score; 1.0 when there are fewer than K negatives. MRR (citation2): each positive ranked
  against its own negatives, ties counted half.

  Args:
    name: "ogbl-ddi" (Hits@20), "ogbl-collab" (Hits@50), "ogbl-ppa" (Hits@100), "ogbl-citation2"
      (MRR), or anything else (Planetoid, edge lists: Hits@100).
    pos_scores: [E] scores of the positives.
    neg_scores: [E'] shared negatives' scores, or [E, K] per-positive ones for MRR.
    ks: Hits@K values to report instead of the dataset's default (Hits@K datasets only).

  Returns:
    {"hits@20": ...} (one key per K) or {"mrr": ..., "hits@1": ..., "hits@3": ..., "hits@10": ...},
    as Python floats.
  """
  from ogb.linkproppred import Evaluator  # pylint: disable=g-import-not-at-top  # imports torch.
  name = name.lower().replace("_", "-")
  pos = np.asarray(pos_scores, np.float64).reshape(-1)
  neg = np.asarray(neg_scores, np.float64)
  if OGB_METRICS.get(name) == "mrr":
    import torch  # pylint: disable=g-import-not-at-top
    if neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
      raise ValueError(f"MRR needs neg_scores of shape [{pos.shape[0]}, K], got {neg.shape}")
    # OGB's numpy MRR branch calls `.sum(dim=1)` on arrays and fails; its torch branch works.
    out = Evaluator(name).eval({"y_pred_pos": torch.from_numpy(pos),
                                "y_pred_neg": torch.from_numpy(neg)})
    return {k.removesuffix("_list"): float(v.mean()) for k, v in out.items()}
  evaluator = Evaluator(name if name in OGB_METRICS else "ogbl-ddi")
  if ks is None:
    ks = [evaluator.K if name in OGB_METRICS else DEFAULT_K]
  result = {}
  for k in ks:
    evaluator.K = int(k)  # The Evaluator reads K at eval time; this is how OGB's examples vary it.
    result.update({key: float(v) for key, v in
                   evaluator.eval({"y_pred_pos": pos, "y_pred_neg": neg.reshape(-1)}).items()})
  return result
