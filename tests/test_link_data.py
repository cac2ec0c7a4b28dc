"""graphs/link_data.py: real ogbl-ddi, synthetic OGB layouts, random edge splits, metrics."""

import gzip
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from graphs import link_data
from graphs import planetoid
from graphs.errors import GraphError
from tests import testutil


def _keys(pairs, n):
  """Order-free keys of [E, 2] pairs."""
  pairs = np.asarray(pairs, np.int64)
  return np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])


class RealDdiTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = str(testutil.require_shared("ogbl_ddi", "raw", "edge.csv.gz").parent.parent)
    cls.split = link_data.load_ogbl(cls.root, "ogbl-ddi")

  def test_counts(self):
    s = self.split
    self.assertEqual((s.name, s.num_nodes), ("ogbl-ddi", 4267))
    # Checked by hand with torch.load(weights_only=False) and raw/num-edge-list.csv.gz (1067911).
    self.assertEqual(s.train_pos.shape, (1067911, 2))
    self.assertEqual(s.valid_pos.shape, (133489, 2))
    self.assertEqual(s.valid_neg.shape, (101882, 2))
    self.assertEqual(s.test_pos.shape, (133489, 2))
    self.assertEqual(s.test_neg.shape, (95599, 2))
    self.assertIsNone(s.features)

  def test_ids_in_range_and_edges_once(self):
    s = self.split
    for a in (s.train_pos, s.valid_pos, s.valid_neg, s.test_pos, s.test_neg):
      self.assertEqual(a.dtype, np.int64)
      self.assertGreaterEqual(a.min(), 0)
      self.assertLess(a.max(), s.num_nodes)
    self.assertFalse(np.any(s.train_pos[:, 0] == s.train_pos[:, 1]))
    train = _keys(s.train_pos, s.num_nodes)
    self.assertEqual(np.unique(train).size, train.size)  # each undirected edge once
    self.assertEqual(np.intersect1d(train, _keys(s.test_pos, s.num_nodes)).size, 0)

  def test_parent_root(self):
    # OGB's `root=` is the folder above `ogbl_ddi`; both spellings work.
    s = link_data.load_ogbl(os.path.dirname(self.root), "ogbl_ddi")
    np.testing.assert_array_equal(s.test_neg, self.split.test_neg)


def _write_ogb(root, name, num_nodes, edges, splits, split_type, node_feat=None):
  """A tiny dataset in OGB's layout: raw/*.csv.gz and split/<type>/*.pt (torch.save'd dicts)."""
  import torch  # pylint: disable=g-import-not-at-top
  d = os.path.join(root, name.replace("-", "_"))
  os.makedirs(os.path.join(d, "raw"))
  os.makedirs(os.path.join(d, "split", split_type))
  with gzip.open(os.path.join(d, "raw", "edge.csv.gz"), "wt") as f:
    f.write("".join(f"{u},{v}\n" for u, v in edges))
  with gzip.open(os.path.join(d, "raw", "num-node-list.csv.gz"), "wt") as f:
    f.write(f"{num_nodes}\n")
  if node_feat is not None:
    with gzip.open(os.path.join(d, "raw", "node-feat.csv.gz"), "wt") as f:
      f.write("".join(",".join(str(x) for x in row) + "\n" for row in node_feat))
  for part, dct in splits.items():
    torch.save(dct, os.path.join(d, "split", split_type, f"{part}.pt"))
  return d


class SyntheticOgbTest(absltest.TestCase):

  EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4]], np.int64)

  def _ddi_like(self, root, train=None, valid_pos=None):
    e = self.EDGES
    return _write_ogb(root, "ogbl-ddi", 6, e, {
        "train": {"edge": e if train is None else train},
        "valid": {"edge": np.array([[0, 2]]) if valid_pos is None else valid_pos,
                  "edge_neg": np.array([[0, 5], [1, 5]])},
        "test": {"edge": np.array([[1, 3]]), "edge_neg": np.array([[2, 5]])}}, "target")

  def test_ddi_layout_with_numpy_arrays(self):
    root = self.create_tempdir().full_path
    self._ddi_like(root)
    s = link_data.load_ogbl(root, "ogbl-ddi")
    np.testing.assert_array_equal(s.train_pos, self.EDGES)
    np.testing.assert_array_equal(s.valid_neg, [[0, 5], [1, 5]])
    np.testing.assert_array_equal(s.test_pos, [[1, 3]])

  def test_train_split_not_matching_edge_list(self):
    root = self.create_tempdir().full_path
    self._ddi_like(root, train=self.EDGES[:3])
    with self.assertRaisesRegex(GraphError, r"train\.pt: 3 train edges but .*edge\.csv\.gz has 4"):
      link_data.load_ogbl(root, "ogbl-ddi")
    root = self.create_tempdir().full_path
    self._ddi_like(root, train=self.EDGES + 1)
    with self.assertRaisesRegex(GraphError, r"train\.pt: the train edges differ"):
      link_data.load_ogbl(root, "ogbl-ddi")

  def test_id_out_of_range_names_file(self):
    root = self.create_tempdir().full_path
    self._ddi_like(root, valid_pos=np.array([[0, 6]]))
    with self.assertRaisesRegex(GraphError, r"valid\.pt: 'edge' has node id 6 outside \[0, 6\)"):
      link_data.load_ogbl(root, "ogbl-ddi")

  def test_missing_dataset_and_unknown_name(self):
    root = self.create_tempdir().full_path
    with self.assertRaisesRegex(GraphError, "no ogbl-ddi dataset here"):
      link_data.load_ogbl(root, "ogbl-ddi")
    with self.assertRaisesRegex(GraphError, "unknown OGB link dataset 'ogbl-foo'"):
      link_data.load_ogbl(root, "ogbl-foo")

  def test_citation2_layout_with_torch_tensors_and_features(self):
    import torch  # pylint: disable=g-import-not-at-top
    root = self.create_tempdir().full_path
    e = self.EDGES
    t = torch.from_numpy
    _write_ogb(root, "ogbl-citation2", 5, e, {
        "train": {"source_node": t(e[:, 0]), "target_node": t(e[:, 1])},
        "valid": {"source_node": t(np.array([0])), "target_node": t(np.array([2])),
                  "target_node_neg": t(np.array([[3, 4, 1]]))},
        "test": {"source_node": t(np.array([4, 1])), "target_node": t(np.array([0, 4])),
                 "target_node_neg": t(np.array([[1, 2, 3], [0, 2, 3]]))}},
               "time", node_feat=np.arange(10).reshape(5, 2) / 2)
    s = link_data.load_ogbl(root, "ogbl-citation2")
    np.testing.assert_array_equal(s.train_pos, e)
    np.testing.assert_array_equal(s.test_pos, [[4, 0], [1, 4]])
    self.assertEqual(s.test_neg.shape, (2, 3, 2))  # per-positive negatives
    np.testing.assert_array_equal(s.test_neg[1], [[1, 0], [1, 2], [1, 3]])
    np.testing.assert_allclose(s.features, np.arange(10).reshape(5, 2) / 2)


class PlanetoidSplitTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = str(testutil.require_shared("planetoid", "ind.cora.graph").parent)
    cls.data = {n: planetoid.load_planetoid(root, n) for n in ("cora", "citeseer")}

  @parameterized.named_parameters(("cora", "cora", 5278, 263, 527),
                                  ("citeseer", "citeseer", 4552, 227, 455))
  def test_split(self, name, num_edges, n_val, n_test):
    d = self.data[name]
    s = link_data.planetoid_link_split(d, seed=0)
    n = d.num_nodes
    self.assertEqual((s.name, s.num_nodes, s.features.shape), (name, n, d.features.shape))
    self.assertEqual((s.valid_pos.shape[0], s.test_pos.shape[0]), (n_val, n_test))
    self.assertEqual(s.train_pos.shape[0] + n_val + n_test, num_edges)
    self.assertEqual((s.valid_neg.shape[0], s.test_neg.shape[0]), (n_val, n_test))
    tr, va, te = (_keys(a, n) for a in (s.train_pos, s.valid_pos, s.test_pos))
    all_edges = np.unique(_keys(np.stack([d.src, d.dst], 1), n))
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), all_edges)  # no overlap
    vn, tn = _keys(s.valid_neg, n), _keys(s.test_neg, n)
    negs = np.concatenate([vn, tn])
    self.assertEqual(np.unique(negs).size, negs.size)  # distinct, valid/test disjoint
    self.assertEqual(np.intersect1d(negs, all_edges).size, 0)  # no negative is an edge
    for a in (s.train_pos, s.valid_pos, s.test_pos, s.valid_neg, s.test_neg):
      self.assertTrue(np.all(a[:, 0] < a[:, 1]))

  def test_seeded(self):
    d = self.data["cora"]
    a, b = link_data.planetoid_link_split(d, 3), link_data.planetoid_link_split(d, 3)
    c = link_data.planetoid_link_split(d, 4)
    for f in ("train_pos", "valid_pos", "valid_neg", "test_pos", "test_neg"):
      np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
      self.assertFalse(np.array_equal(getattr(a, f), getattr(c, f)), f)


class EdgeListSplitTest(absltest.TestCase):

  def _write(self, text, name="g.txt"):
    path = os.path.join(self.create_tempdir().full_path, name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "wt") as f:
      f.write(text)
    return path

  def test_ring_with_sparse_ids(self):
    ids = np.arange(40) * 10 + 7  # sparse SNAP-style ids
    lines = ["# a ring", ""] + [f"{ids[i]}\t{ids[(i + 1) % 40]}" for i in range(40)]
    lines += [f"{ids[1]} {ids[0]}", f"{ids[5]} {ids[5]}"]  # a duplicate and a self loop
    path = self._write("\n".join(lines) + "\n", "ring.txt.gz")
    s = link_data.edge_list_split(path, seed=1, val=0.1, test=0.1)
    self.assertEqual(s.num_nodes, 40)
    np.testing.assert_array_equal(s.node_ids, ids)
    self.assertEqual((s.train_pos.shape[0], s.valid_pos.shape[0], s.test_pos.shape[0]), (32, 4, 4))
    ring = _keys(np.stack([np.arange(40), (np.arange(40) + 1) % 40], 1), 40)
    self.assertEqual(np.intersect1d(_keys(np.concatenate([s.valid_neg, s.test_neg]), 40),
                                    ring).size, 0)
    s2 = link_data.edge_list_split(path, seed=1, val=0.1, test=0.1)
    np.testing.assert_array_equal(s.test_neg, s2.test_neg)

  def test_bad_line_names_file_and_line(self):
    path = self._write("# header\n0 1\n1 2 3\n2 0\n")
    with self.assertRaisesRegex(GraphError, rf"{path}:3: expected two non-negative integer"):
      link_data.edge_list_split(path, seed=0)
    path = self._write("0 1\n1 -2\n")
    with self.assertRaisesRegex(GraphError, rf"{path}:2:"):
      link_data.edge_list_split(path, seed=0)

  def test_no_edges(self):
    with self.assertRaisesRegex(GraphError, "no edges"):
      link_data.edge_list_split(self._write("# nothing\n\n"), seed=0)
    with self.assertRaisesRegex(GraphError, "no edges"):
      link_data.edge_list_split(self._write("3 3\n"), seed=0)
    with self.assertRaisesRegex(GraphError, "cannot read"):
      link_data.edge_list_split("/nonexistent/g.txt", seed=0)

  def test_too_few_edges(self):
    with self.assertRaisesRegex(GraphError, "too few"):
      link_data.edge_list_split(self._write("0 1\n1 2\n"), seed=0)


class EvaluateTest(absltest.TestCase):

  # 120 negatives 0/120 .. 119/120: the 100th highest is 20/120, the 20th highest 100/120, the
  # 2nd highest 118/120 (below 0.99).
  NEG = np.arange(120) / 120
  POS = np.array([0.1, 20 / 120, 0.5, 0.99])  # 20/120 ties the 100th negative: not a hit.

  def test_hits_at_100_for_planetoid_and_custom(self):
    self.assertEqual(link_data.evaluate("cora", self.POS, self.NEG), {"hits@100": 0.5})
    self.assertEqual(link_data.evaluate("/tmp/g.txt", self.POS, self.NEG), {"hits@100": 0.5})

  def test_ddi_hits_at_20_and_other_ks(self):
    self.assertEqual(link_data.evaluate("ogbl-ddi", self.POS, self.NEG), {"hits@20": 0.25})
    self.assertEqual(link_data.evaluate("ogbl-ddi", self.POS, self.NEG, ks=[2, 100, 200]),
                     {"hits@2": 0.25, "hits@100": 0.5, "hits@200": 1.0})  # < K negatives: 1.0

  def test_mrr(self):
    # Ranks 3 (two negatives above) and 1.5 (one tie): MRR (1/3 + 1/1.5) / 2 = 0.5.
    out = link_data.evaluate("ogbl-citation2", np.array([0.5, 0.9]),
                             np.array([[0.1, 0.6, 0.7], [0.9, 0.2, 0.3]]))
    self.assertAlmostEqual(out["mrr"], 0.5, places=6)
    self.assertEqual((out["hits@1"], out["hits@3"]), (0.0, 1.0))


if __name__ == "__main__":
  absltest.main()
