"""The Planetoid citation graphs (Cora, CiteSeer, PubMed) read in place from their original files.

Planetoid (Yang et al. 2016) ships each dataset as eight files `ind.<name>.<part>` in one folder:

  x, y        features [T, F] (CSR) and one-hot labels [T, C] of the T labelled training nodes;
  allx, ally  the same for every non-test training-side node (node ids 0..len(allx)-1; the first T
              are the labelled ones);
  tx, ty      the same for the test nodes, row i belonging to node `test.index[i]`;
  graph       a dict node id -> list of neighbour ids;
  test.index  one test node id per line.

Facts about the files that this loader relies on (checked on the copies in ../shared/data):
  - they are Python 2 pickles (protocol 2) of numpy arrays, `scipy.sparse.csr.csr_matrix` objects
    and a `collections.defaultdict`; they are read with a restricted unpickler that only builds
    those types (a pickle can run arbitrary code otherwise) and turns each CSR into a dense array
    itself, so scipy is not needed;
  - CiteSeer's test ids span 2312..3326 (1015 ids) but only 1000 are listed: the 15 missing ids
    have edges in `graph` (1 or 2 neighbours each; folklore calls them "isolated") but no feature
    or label rows. As in the Kipf and PyG loaders the node set keeps them (3327 nodes) with zero
    features; they get label -1 (no class) and are in no split;
  - the adjacency lists contain duplicates and self loops (CiteSeer: 124 self loops); edges are
    symmetrised, deduplicated and self loops dropped, giving PyG's counts (Cora 10556 directed
    edges, CiteSeer 9104, PubMed 88648);
  - the copy of PubMed in ../shared/data has no `allx` (features of its 18657 unlabelled
    training-side nodes), so it cannot be loaded with features: that is reported as a GraphError.

The standard ("public") split: train = the T nodes of `y` (20 per class), val = the next 500 node
ids, test = `test.index` (sorted).
"""

import dataclasses
import os
import pickle

import numpy as np

from graphs.errors import GraphError

NAMES = ("cora", "citeseer", "pubmed")
NUM_VAL = 500


@dataclasses.dataclass(frozen=True)
class PlanetoidDataset:
  """One Planetoid graph with its public split.

  Attributes:
    name: "cora", "citeseer" or "pubmed".
    features: [N, F] float32 node features (bag of words; row-normalised if asked).
    labels: [N] int32 class ids, -1 where a node has no label (CiteSeer's 15 missing test nodes).
    src, dst: [E] int32 directed edges, both directions of every undirected edge, sorted by
      (src, dst), no duplicates and no self loops.
    train_idx: [T] int32 training node ids (20 per class).
    val_idx: [500] int32 validation node ids.
    test_idx: [1000] int32 test node ids, sorted.
    num_classes: C.
  """
  name: str
  features: np.ndarray
  labels: np.ndarray
  src: np.ndarray
  dst: np.ndarray
  train_idx: np.ndarray
  val_idx: np.ndarray
  test_idx: np.ndarray
  num_classes: int

  @property
  def num_nodes(self) -> int:
    return self.features.shape[0]

  @property
  def num_features(self) -> int:
    return self.features.shape[1]

  @property
  def num_edges(self) -> int:
    return self.src.size


class _CSRState:
  """Stands in for `scipy.sparse.csr_matrix` while unpickling: keeps the pickled attributes."""

  def __setstate__(self, state):
    self.state = state

  def to_dense(self, path: str) -> np.ndarray:
    try:
      rows, cols = self.state["_shape"]
      indptr = np.asarray(self.state["indptr"], dtype=np.int64)
      indices = np.asarray(self.state["indices"], dtype=np.int64)
      data = np.asarray(self.state["data"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as e:
      raise GraphError(f"{path}: not a CSR matrix pickle ({e})") from None
    if indptr.size != rows + 1 or indices.size != data.size or indptr[-1] != data.size:
      raise GraphError(f"{path}: inconsistent CSR matrix of shape {(rows, cols)}")
    dense = np.zeros((rows, cols), dtype=np.float32)
    row_ids = np.repeat(np.arange(rows), np.diff(indptr))
    # `add.at`, not assignment: a CSR may hold repeated (row, col) entries, which sum.
    np.add.at(dense, (row_ids, indices), data)
    return dense


def _numpy_reconstruct():
  # numpy 2 moved `numpy.core` to `numpy._core`; the pickles name the old module.
  core = getattr(np, "_core", None) or np.core
  return core.multiarray._reconstruct  # pylint: disable=protected-access


class _Unpickler(pickle.Unpickler):
  """Builds only the types the Planetoid pickles use (numpy arrays, CSR, dict/list)."""

  def find_class(self, module, name):
    if (module, name) in (("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
                          ("scipy.sparse", "csr_matrix")):
      return _CSRState
    if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                          ("numpy._core.multiarray", "_reconstruct")):
      return _numpy_reconstruct()
    if (module, name) == ("_codecs", "encode"):
      # How Python 3 writes `bytes` (numpy buffers) in protocol 2; a pure function.
      import codecs  # pylint: disable=g-import-not-at-top
      return codecs.encode
    if (module, name) == ("numpy", "ndarray"):
      return np.ndarray
    if (module, name) == ("numpy", "dtype"):
      return np.dtype
    if (module, name) == ("collections", "defaultdict"):
      import collections  # pylint: disable=g-import-not-at-top
      return collections.defaultdict
    if module in ("__builtin__", "builtins") and name in ("list", "dict", "set", "int"):
      return {"list": list, "dict": dict, "set": set, "int": int}[name]
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _path(root: str, name: str, part: str) -> str:
  path = os.path.join(root, f"ind.{name}.{part}")
  if not os.path.isfile(path):
    hint = (" (this copy of PubMed has no allx: the features of its unlabelled nodes are missing, "
            "so it cannot be loaded with features)" if (name, part) == ("pubmed", "allx") else "")
    raise GraphError(f"Planetoid file {path} does not exist{hint}")
  return path


def _load_pickle(root: str, name: str, part: str):
  path = _path(root, name, part)
  try:
    with open(path, "rb") as f:
      # latin1: the files are Python 2 pickles whose numpy buffers are byte strings.
      obj = _Unpickler(f, encoding="latin1").load()
  except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
    raise GraphError(f"{path}: not a readable Planetoid pickle: {e}") from None
  if isinstance(obj, _CSRState):
    return obj.to_dense(path)
  if part == "graph":
    if not isinstance(obj, dict):
      raise GraphError(f"{path}: expected a dict of adjacency lists, got {type(obj).__name__}")
    return obj
  obj = np.asarray(obj)
  if obj.ndim != 2:
    raise GraphError(f"{path}: expected a 2-D array, got shape {obj.shape}")
  return obj


def _load_test_index(root: str, name: str) -> np.ndarray:
  path = _path(root, name, "test.index")
  try:
    with open(path, "rb") as f:
      lines = [ln.strip() for ln in f.read().splitlines()]
    return np.array([int(ln) for ln in lines if ln], dtype=np.int64)
  except (OSError, ValueError) as e:
    raise GraphError(f"{path}: expected one integer node id per line: {e}") from None


def _labels(onehot: np.ndarray) -> np.ndarray:
  """Class ids of one-hot rows; -1 for an all-zero row (a node without a label)."""
  return np.where(onehot.any(axis=1), onehot.argmax(axis=1), -1).astype(np.int32)


def _edges(adj: dict, num_nodes: int, path: str) -> tuple[np.ndarray, np.ndarray]:
  """Symmetric, deduplicated, self-loop-free (src, dst) from adjacency lists, sorted."""
  try:
    src = np.concatenate([np.full(len(v), int(k), dtype=np.int64) for k, v in adj.items()] or
                         [np.zeros(0, np.int64)])
    dst = np.concatenate([np.asarray(list(v), dtype=np.int64).reshape(-1) for v in adj.values()] or
                         [np.zeros(0, np.int64)])
  except (TypeError, ValueError) as e:
    raise GraphError(f"{path}: adjacency lists must hold integer node ids: {e}") from None
  if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
    raise GraphError(f"{path}: node id outside [0, {num_nodes}) (the features give {num_nodes} "
                     "nodes)")
  src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
  keep = src != dst
  key = np.unique(src[keep] * num_nodes + dst[keep])
  return (key // num_nodes).astype(np.int32), (key % num_nodes).astype(np.int32)


def row_normalize(features: np.ndarray) -> np.ndarray:
  """Each row divided by its sum (rows summing to 0 stay 0), as Kipf & Welling preprocess."""
  sums = features.sum(axis=1, keepdims=True)
  return np.divide(features, sums, out=np.zeros_like(features), where=sums != 0)


def load_planetoid(root: str, name: str, normalize_features: bool = False) -> PlanetoidDataset:
  """Reads `root/ind.<name>.*` into a `PlanetoidDataset`.

  Args:
    root: the folder holding the `ind.<name>.*` files.
    name: "cora", "citeseer" or "pubmed" (any case).
    normalize_features: divide each feature row by its sum.

  Raises:
    GraphError: unknown name, a missing or malformed file (the message names it).
  """
  name = str(name).lower()
  if name not in NAMES:
    raise GraphError(f"unknown Planetoid dataset {name!r}; choose one of {', '.join(NAMES)}")
  if not os.path.isdir(root):
    raise GraphError(f"Planetoid root {root} is not a directory")
  y = _load_pickle(root, name, "y")
  allx = _load_pickle(root, name, "allx")
  ally = _load_pickle(root, name, "ally")
  tx = _load_pickle(root, name, "tx")
  ty = _load_pickle(root, name, "ty")
  adj = _load_pickle(root, name, "graph")
  test = _load_test_index(root, name)

  if allx.shape[0] != ally.shape[0] or tx.shape[0] != ty.shape[0] or tx.shape[0] != test.size:
    raise GraphError(f"{root}: {name} parts disagree: allx {allx.shape[0]} / ally "
                     f"{ally.shape[0]} rows, tx {tx.shape[0]} / ty {ty.shape[0]} rows, "
                     f"{test.size} test ids")
  if allx.shape[1] != tx.shape[1] or ally.shape[1] != ty.shape[1]:
    raise GraphError(f"{root}: {name} feature or class counts disagree between allx and tx")
  num_train = y.shape[0]
  if num_train + NUM_VAL > allx.shape[0]:
    raise GraphError(f"{root}: {name} has {allx.shape[0]} training-side nodes, fewer than "
                     f"{num_train} + {NUM_VAL} for the train and validation splits")
  # Test ids follow the training-side ids; CiteSeer's span has gaps (see the module docstring), so
  # the node count comes from the largest id, not from the number of test rows.
  num_nodes = max(allx.shape[0], int(test.max()) + 1 if test.size else 0)
  if test.size and (test.min() < allx.shape[0] or np.unique(test).size != test.size):
    raise GraphError(f"{_path(root, name, 'test.index')}: test ids must be distinct and at least "
                     f"{allx.shape[0]} (after the training-side nodes)")

  features = np.zeros((num_nodes, allx.shape[1]), dtype=np.float32)
  features[:allx.shape[0]] = allx
  features[test] = tx
  labels = np.full(num_nodes, -1, dtype=np.int32)
  labels[:ally.shape[0]] = _labels(ally)
  labels[test] = _labels(ty)
  if normalize_features:
    features = row_normalize(features)
  src, dst = _edges(adj, num_nodes, _path(root, name, "graph"))
  return PlanetoidDataset(
      name=name, features=features, labels=labels, src=src, dst=dst,
      train_idx=np.arange(num_train, dtype=np.int32),
      val_idx=np.arange(num_train, num_train + NUM_VAL, dtype=np.int32),
      test_idx=np.sort(test).astype(np.int32), num_classes=int(ally.shape[1]))
