"""graphs/planetoid.py: the real Cora/CiteSeer files, a synthetic set written by scipy, errors."""

import collections
import os
import pathlib
import pickle

from absl.testing import absltest
import numpy as np
import scipy.sparse

from graphs import planetoid
from graphs.errors import GraphError
from tests import testutil

PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def _root():
  return str(testutil.require_shared("planetoid", "ind.cora.graph").parent)


def _check_edges(test, d):
  test.assertTrue(np.all(d.src != d.dst), "self loop")
  key = d.src.astype(np.int64) * d.num_nodes + d.dst
  test.assertTrue(np.all(np.diff(key) > 0), "edges not sorted and unique")
  rev = np.sort(d.dst.astype(np.int64) * d.num_nodes + d.src)
  np.testing.assert_array_equal(key, rev)  # symmetric


class RealPlanetoidTest(absltest.TestCase):

  def test_cora(self):
    d = planetoid.load_planetoid(_root(), "Cora")
    self.assertEqual((d.name, d.num_nodes, d.num_features, d.num_classes), ("cora", 2708, 1433, 7))
    # 5278 undirected edges once duplicates and self loops go (PyG's 10556 directed; checked
    # independently with scipy: (A + A^T > 0) minus the diagonal has 10556 entries).
    self.assertEqual(d.num_edges, 10556)
    _check_edges(self, d)
    self.assertEqual(d.features.dtype, np.float32)
    self.assertEqual(d.labels.dtype, np.int32)
    self.assertEqual(set(np.unique(d.features)), {0.0, 1.0})  # binary bag of words
    self.assertEqual(int(d.features.sum()), 49216)
    np.testing.assert_array_equal(d.train_idx, np.arange(140))
    np.testing.assert_array_equal(np.bincount(d.labels[d.train_idx]), [20] * 7)
    np.testing.assert_array_equal(d.val_idx, np.arange(140, 640))
    self.assertEqual(d.test_idx.size, 1000)
    np.testing.assert_array_equal(d.test_idx, np.arange(1708, 2708))
    self.assertTrue(np.all(d.labels >= 0))
    np.testing.assert_array_equal(np.bincount(d.labels),
                                  [351, 217, 418, 818, 426, 298, 180])  # PyG's Cora counts

  def test_citeseer_gap_nodes(self):
    d = planetoid.load_planetoid(_root(), "citeseer", normalize_features=True)
    self.assertEqual((d.num_nodes, d.num_features, d.num_classes), (3327, 3703, 6))
    self.assertEqual(d.num_edges, 9104)  # PyG's count; 124 self loops dropped
    _check_edges(self, d)
    # The 15 ids inside the test range that test.index does not list: zero features, no label,
    # in no split, yet present in the graph.
    gap = np.setdiff1d(np.arange(2312, 3327), d.test_idx)
    self.assertEqual(gap.size, 15)
    np.testing.assert_array_equal(np.flatnonzero(d.labels < 0), gap)
    self.assertFalse(d.features[gap].any())
    self.assertTrue(np.isin(gap, d.src).all())
    for split in (d.train_idx, d.val_idx, d.test_idx):
      self.assertFalse(np.isin(gap, split).any())
    sums = d.features.sum(1)
    nonzero = sums > 0
    np.testing.assert_allclose(sums[nonzero], 1.0, rtol=1e-5)
    self.assertEqual(int((~nonzero).sum()), 15)  # only the gap rows are empty
    self.assertEqual(int((d.labels >= 0).sum()), 3312)

  def test_pubmed_without_allx(self):
    with self.assertRaisesRegex(GraphError, r"ind\.pubmed\.allx does not exist.*no allx"):
      planetoid.load_planetoid(_root(), "pubmed")


def _write_synthetic(root: pathlib.Path, gap: bool = True):
  """A tiny Planetoid set written with scipy and pickle protocol 2, as the originals were.

  Nodes 0..511 are training-side (2 labelled), test ids 512..515 listed out of order, and (with
  `gap`) id 514 left out as in CiteSeer."""
  rng = np.random.default_rng(0)
  n_side, feats, classes = 512, 4, 3
  test = np.array([515, 512, 513] + ([] if gap else [514]))
  allx = (rng.random((n_side, feats)) < 0.5).astype(np.float32)
  ally = np.eye(classes, dtype=np.int32)[rng.integers(0, classes, n_side)]
  tx = np.arange(1, 1 + test.size * feats, dtype=np.float32).reshape(test.size, feats)
  ty = np.eye(classes, dtype=np.int32)[np.arange(test.size) % classes]
  adj = collections.defaultdict(list, {0: [1, 1, 0, 515], 1: [0], 514: [2], 515: [0]})
  objs = {"x": scipy.sparse.csr_matrix(allx[:2]), "y": ally[:2],
          "allx": scipy.sparse.csr_matrix(allx), "ally": ally,
          "tx": scipy.sparse.csr_matrix(tx), "ty": ty, "graph": adj}
  for part, obj in objs.items():
    with open(root / f"ind.syn.{part}", "wb") as f:
      pickle.dump(obj, f, protocol=2)
  (root / "ind.syn.test.index").write_text("".join(f"{i}\n" for i in test))
  return allx, tx, test


class SyntheticPlanetoidTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = pathlib.Path(self.create_tempdir().full_path)
    self.enter_context(absltest.mock.patch.object(planetoid, "NAMES", ("syn",)))

  def test_layout(self):
    allx, tx, test = _write_synthetic(self.root)
    d = planetoid.load_planetoid(str(self.root), "syn")
    self.assertEqual(d.num_nodes, 516)  # the gap id 514 still counts
    np.testing.assert_array_equal(d.features[:512], allx)
    for row, node in enumerate(test):  # tx row i belongs to node test.index[i]
      np.testing.assert_array_equal(d.features[node], tx[row])
    self.assertFalse(d.features[514].any())
    self.assertEqual(d.labels[514], -1)
    np.testing.assert_array_equal(d.labels[test], np.arange(3) % 3)
    np.testing.assert_array_equal(d.test_idx, [512, 513, 515])
    np.testing.assert_array_equal(d.val_idx, np.arange(2, 502))
    # Duplicates, the self loop and one-directional entries become one symmetric pair each.
    self.assertEqual(sorted(zip(d.src.tolist(), d.dst.tolist())),
                     [(0, 1), (0, 515), (1, 0), (2, 514), (514, 2), (515, 0)])

  def test_missing_file_is_named(self):
    _write_synthetic(self.root)
    os.remove(self.root / "ind.syn.ty")
    with self.assertRaisesRegex(GraphError, f"{self.root}/ind.syn.ty does not exist"):
      planetoid.load_planetoid(str(self.root), "syn")

  def test_refuses_code_in_a_pickle(self):
    _write_synthetic(self.root)
    with open(self.root / "ind.syn.graph", "wb") as f:
      pickle.dump(_Exploit(), f, protocol=2)
    with self.assertRaisesRegex(GraphError, r"ind\.syn\.graph.*refusing to load"):
      planetoid.load_planetoid(str(self.root), "syn")

  def test_bad_test_index(self):
    _write_synthetic(self.root)
    (self.root / "ind.syn.test.index").write_text("512\nabc\n513\n")
    with self.assertRaisesRegex(GraphError, r"ind\.syn\.test\.index"):
      planetoid.load_planetoid(str(self.root), "syn")

  def test_unknown_name_and_root(self):
    with self.assertRaisesRegex(GraphError, "unknown Planetoid dataset 'nope'"):
      planetoid.load_planetoid(str(self.root), "nope")
    with self.assertRaisesRegex(GraphError, "is not a directory"):
      planetoid.load_planetoid(str(self.root / "absent"), "syn")


class _Exploit:

  def __reduce__(self):
    return (os.system, ("echo pwned",))


if __name__ == "__main__":
  absltest.main()
