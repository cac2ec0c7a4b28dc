"""PSGS: the recursion by hand, exactness where no node is reached twice, Monte-Carlo agreement on
a tree, the per-hop split, and the overlap-corrected predictor against real samples."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from graphs.errors import GraphError
from serving import graph as graph_lib
from serving import host_sampler
from serving import psgs


def five_node_graph():
  """Undirected 0-1, 0-2, 0-3, 1-2, 3-4: degrees [3, 2, 2, 2, 1]."""
  return graph_lib.from_edges([0, 0, 0, 1, 3], [1, 2, 3, 2, 4], symmetric=True)


def out_tree(num_nodes, max_children, seed):
  """A random directed tree: row v lists v's children only (no node is reachable twice)."""
  r = np.random.default_rng(seed)
  parents, children, frontier, nxt = [], [], [0], 1
  while nxt < num_nodes and frontier:
    v = frontier.pop(0)
    for _ in range(int(r.integers(0, max_children + 1)) if v else max_children):
      if nxt == num_nodes:
        break
      parents.append(v)
      children.append(nxt)
      frontier.append(nxt)
      nxt += 1
  return graph_lib.from_edges(parents, children, num_nodes=num_nodes)


class RecursionTest(parameterized.TestCase):

  def test_by_hand(self):
    # fanouts [2, 1, 2]; m_h(v) = min(d(v), k_h); s_3 = 0.
    # s_2 = m_2 = [2, 2, 2, 2, 1].
    # s_1(v) = 1 + (1/d) sum_u s_2(u): v0 1+6/3=3, v1 1+4/2=3, v2 3, v3 1+3/2=2.5, v4 1+2=3.
    # s_0(v) = m_0 + (m_0/d) sum_u s_1(u): v0 2+(2/3)(3+3+2.5)=7.667, v1 2+(3+3)=8, v2 8,
    #   v3 2+(3+3)=8, v4 1+2.5=3.5.
    got = psgs.node_psgs(five_node_graph(), [2, 1, 2])
    np.testing.assert_allclose(got, [2 + 17 / 3, 8, 8, 8, 3.5], rtol=1e-12)

  def test_hop_split_sums_to_psgs(self):
    g = graph_lib.rmat(8, 1500, seed=3)
    per_hop = psgs.hop_psgs(g, [5, 3, 2], non_backtracking=False)
    self.assertEqual(per_hop.shape, (3, g.num_nodes))
    np.testing.assert_allclose(per_hop.sum(0), psgs.node_psgs(g, [5, 3, 2]), rtol=1e-12)
    # Hop 0 draws exactly min(d, k_0).
    np.testing.assert_allclose(per_hop[0], np.minimum(g.degrees(), 5))

  def test_non_backtracking_by_hand(self):
    # Path 0-1 with fanouts [1, 1]: seed 0 draws 1 (1 edge), 1 draws 0 back (1 edge) and stops.
    # The plain recursion is exact here too (2 hops: the drawn-back node is never expanded in
    # either); with 3 hops the plain one adds 0's third-hop draw, the corrected one does not.
    g = graph_lib.from_edges([0], [1], symmetric=True)
    np.testing.assert_allclose(psgs.node_psgs(g, [1, 1, 1]), [3, 3])
    np.testing.assert_allclose(psgs.hop_psgs(g, [1, 1, 1]).sum(0), [2, 2])
    sampler = host_sampler.HostSampler(g, [1, 1, 1])
    self.assertEqual(int(sampler.sample(np.array([0]), 0).num_edges), 2)

  def test_bad_fanouts(self):
    with self.assertRaisesRegex(GraphError, "fanouts"):
      psgs.node_psgs(five_node_graph(), [])


class ExactnessTest(parameterized.TestCase):

  @parameterized.named_parameters(("key0", 0), ("key1", 12345))
  def test_deterministic_tree_is_exact(self, key):
    # Every node has <= 3 children and fanout 3: the sampler takes every child, nothing repeats,
    # so each sample's size is the prediction exactly, for one seed or disjoint seeds.
    g = out_tree(400, 3, seed=1)
    fanouts = [3, 3, 3]
    pred = psgs.node_psgs(g, fanouts)
    actual = host_sampler.single_seed_edge_counts(g, fanouts, key)
    np.testing.assert_array_equal(pred, actual)
    sampler = host_sampler.HostSampler(g, fanouts)
    # Seeds with disjoint subtrees: the children of node 0 (none is another one's descendant).
    seeds = g.neighbors(0)
    out = sampler.sample(seeds, key)
    self.assertEqual(int(out.num_edges), psgs.request_size(pred, seeds))

  def test_monte_carlo_on_random_tree(self):
    # Up to 8 children, fanouts [3, 2, 2]: draws are random, but no node is reachable twice, so
    # the recursion is the exact mean. Tolerance: 5 standard errors of the mean over 400 keys,
    # per node (the keys are fixed, so this is deterministic; it would fail for a biased rule).
    g = out_tree(2000, 8, seed=2)
    fanouts = [3, 2, 2]
    sampler = host_sampler.HostSampler(g, fanouts)
    nodes = np.arange(100)  # breadth-first ids: the top of the tree, where the samples vary
    counts = np.array([[sampler.sample_arrays([v], key)[1].size for v in nodes]
                       for key in range(400)], np.float64)
    mean, se = counts.mean(0), counts.std(0, ddof=1) / np.sqrt(counts.shape[0])
    pred = psgs.node_psgs(g, fanouts)[nodes]
    np.testing.assert_array_less(np.abs(mean - pred), 5 * se + 1e-9)
    self.assertGreater((se > 0).sum(), 30)  # the test really is random

  def test_overlap_corrected_close_on_tree(self):
    # No overlap to correct on a tree: the correction must not move single seeds much.
    g = out_tree(400, 8, seed=3)
    fanouts = [3, 2, 2]
    pred = psgs.node_psgs(g, fanouts)
    overlap = psgs.OverlapPSGS(g, fanouts)
    for v in [0, 1, 5, 17]:
      self.assertAlmostEqual(overlap([v]), pred[v], delta=0.05 * pred[v] + 1e-9)


class OverlapTest(absltest.TestCase):

  def test_overlap_corrected_closer_to_actual(self):
    g = graph_lib.rmat(10, 8000, seed=4)
    fanouts = [10, 5, 3]
    sampler = host_sampler.HostSampler(g, fanouts)
    overlap = psgs.OverlapPSGS(g, fanouts)
    plain = psgs.node_psgs(g, fanouts)
    r = np.random.default_rng(0)
    for batch in [4, 32, 256]:
      seeds = r.choice(g.num_nodes, batch, replace=False)
      actual = np.mean([sampler.sample_arrays(seeds, key)[1].size for key in range(20)])
      naive, corrected = psgs.request_size(plain, seeds), overlap(seeds)
      self.assertLessEqual(corrected, naive)
      self.assertLess(abs(corrected - actual), abs(naive - actual), msg=f"batch {batch}")

  def test_predictor_accuracy(self):
    g = graph_lib.rmat(10, 8000, seed=5)
    r = np.random.default_rng(1)
    requests = [r.choice(g.num_nodes, b, replace=False) for b in [1, 2, 5, 20, 60, 200, 500]]
    acc = psgs.predictor_accuracy(g, [10, 5, 3], requests, key=7)
    self.assertEqual(acc.actual.shape, (len(requests),))
    self.assertEqual(set(acc.predicted), {"psgs", "psgs_overlap", "single_draw"})
    for name in acc.predicted:
      self.assertGreater(acc.pearson_r[name], 0.9, msg=name)
      self.assertGreaterEqual(acc.mape[name], 0)
    self.assertLess(acc.mape["psgs_overlap"], acc.mape["psgs"])


if __name__ == "__main__":
  absltest.main()
