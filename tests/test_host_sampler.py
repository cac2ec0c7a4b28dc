"""Host sampler: the fixed sampling rule against a pure-Python reference, sample validity,
uniformity of the draws, keys, bad seeds, padding, and a real-graph sanity check."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from graphs.errors import GraphError
from serving import graph as graph_lib
from serving import host_sampler
from serving import rng
from serving import subgraph
from tests import testutil

# Chi-square critical value for 19 degrees of freedom at p = 0.001 (tables; used when scipy is
# absent). The draws are a fixed function of the keys, so the tests are deterministic either way.
_CHI2_19DF_P001 = 43.82


def reference_sample(graph, fanouts, seeds, key):
  """The sampling rule written plainly (Python lists and `rng.hash_u32`); unpadded arrays."""
  indptr, indices = graph.indptr, graph.indices
  local, nodes, senders, receivers = {}, [], [], []
  for s in seeds:
    local[int(s)] = len(nodes)
    nodes.append(int(s))
  lo, hi = 0, len(nodes)
  for hop, k in enumerate(fanouts):
    for r in range(lo, hi):
      v = nodes[r]
      start, d = int(indptr[v]), int(indptr[v + 1] - indptr[v])
      if d <= k:
        positions = list(range(d))
      else:
        positions = []
        for i in range(k):
          j = d - k + i
          t = int(rng.hash_u32(key, v, hop * rng.STREAM_STRIDE + i)) % (j + 1)
          positions.append(j if t in positions else t)
      for p in positions:
        u = int(indices[start + p])
        if u not in local:
          local[u] = len(nodes)
          nodes.append(u)
        senders.append(local[u])
        receivers.append(r)
    lo, hi = hi, len(nodes)
  return np.array(nodes), np.array(senders), np.array(receivers)


def small_graph(seed=0, n=60, avg_degree=8):
  """A random symmetric graph with a spread of degrees (some above, some below the fanouts)."""
  r = np.random.default_rng(seed)
  m = n * avg_degree // 2
  src = r.integers(0, n, m)
  dst = (src + 1 + r.zipf(1.6, m) % (n - 1)) % n  # skewed offsets: a few hubs, many leaves
  return graph_lib.from_edges(src, dst, num_nodes=n, symmetric=True, drop_self_loops=True)


def node_levels(sample):
  """[num_nodes] hop at which each local node is expanded (seeds 0)."""
  n, s = int(sample.num_seeds), int(sample.num_nodes)
  level = np.zeros(s, np.int64)
  seen = n
  for snd, rcv in zip(sample.senders[:int(sample.num_edges)], sample.receivers):
    if snd == seen:  # first occurrence: local ids are handed out in edge order
      level[snd] = level[rcv] + 1
      seen += 1
  assert seen == s
  return level


class HashTest(absltest.TestCase):

  def test_numba_hash_matches_numpy(self):
    r = np.random.default_rng(0)
    nodes = np.concatenate([r.integers(0, 2**31 - 1, 20000), [0, 1, 2**31 - 1]])
    counters = np.concatenate([r.integers(0, 2**32, 20000), [0, 2**32 - 1, 65536]])
    for key in [0, 1, 12345, 2**31, 2**32 - 1]:
      np.testing.assert_array_equal(host_sampler.hash_u32_array(key, nodes, counters),
                                    rng.hash_u32(key, nodes, counters))


class HostSamplerTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.graph = small_graph()
    cls.fanouts = [4, 3, 2]
    cls.sampler = host_sampler.HostSampler(cls.graph, cls.fanouts)

  @parameterized.named_parameters(
      ("one_seed", [5], 0),
      ("few_seeds", [3, 17, 0, 42], 7),
      ("many_seeds", list(range(0, 60, 3)), 2**32 - 1),
  )
  def test_matches_reference(self, seeds, key):
    nodes, senders, receivers = reference_sample(self.graph, self.fanouts, seeds, key)
    out = self.sampler.sample(np.array(seeds), key)
    n, e = int(out.num_nodes), int(out.num_edges)
    np.testing.assert_array_equal(out.nodes[:n], nodes)
    np.testing.assert_array_equal(out.senders[:e], senders)
    np.testing.assert_array_equal(out.receivers[:e], receivers)
    self.assertEqual(int(out.num_seeds), len(seeds))

  def test_parallel_and_serial_paths_agree(self):
    g = self.graph
    seeds = np.arange(0, 60, 2)
    local_of = np.full(g.num_nodes, -1, np.int32)
    fan = np.asarray(self.fanouts, np.int64)
    par = host_sampler._sample_impl(g.indptr, g.indices, seeds, fan, 9, local_of, 0)
    ser = host_sampler._sample_impl(g.indptr, g.indices, seeds, fan, 9, local_of, 2**62)
    for a, b in zip(par[:3], ser[:3]):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(local_of, -1)  # the scratch is left clean

  def test_sample_is_valid(self):
    g = self.graph
    out = self.sampler.sample(np.array([1, 8, 30, 31]), 3)
    n, e = int(out.num_nodes), int(out.num_edges)
    nodes = out.nodes[:n]
    self.assertLen(np.unique(nodes), n)
    # Every sampled edge exists (sender is a neighbour of the receiver).
    for s, r in zip(nodes[out.senders[:e]], nodes[out.receivers[:e]]):
      self.assertIn(s, g.neighbors(r))
    # No repeated neighbour per expanded node, and exactly min(deg, k) draws for it.
    level = node_levels(out)
    deg = g.degrees()
    for loc in range(n):
      mine = out.senders[:e][out.receivers[:e] == loc]
      self.assertLen(np.unique(mine), len(mine))
      want = min(deg[nodes[loc]], self.fanouts[level[loc]]) if level[loc] < 3 else 0
      self.assertLen(mine, want, msg=f"local node {loc} at level {level[loc]}")
    # Edges are grouped by hop, then receiver, in order.
    self.assertTrue(np.all(np.diff(out.receivers[:e]) >= 0))

  def test_padding_and_caps(self):
    out = self.sampler.sample(np.array([2, 9]), 1)
    n, e = int(out.num_nodes), int(out.num_edges)
    self.assertEqual(out.nodes.shape, (subgraph.bucket(n + 1),))
    self.assertEqual(out.senders.shape, (subgraph.bucket(e),))
    np.testing.assert_array_equal(out.node_mask, np.arange(out.nodes.size) < n)
    np.testing.assert_array_equal(out.edge_mask, np.arange(out.senders.size) < e)
    np.testing.assert_array_equal(out.nodes[n:], -1)
    np.testing.assert_array_equal(out.senders[e:], out.nodes.size - 1)
    np.testing.assert_array_equal(out.receivers[e:], out.nodes.size - 1)
    max_nodes, max_edges = subgraph.caps(2, self.fanouts)
    capped = self.sampler.sample(np.array([2, 9]), 1, max_nodes=max_nodes, max_edges=max_edges)
    self.assertEqual(capped.nodes.shape, (max_nodes,))
    self.assertEqual(capped.senders.shape, (max_edges,))
    self.assertEqual(subgraph.edge_set(capped), subgraph.edge_set(out))
    with self.assertRaisesRegex(GraphError, "over the caps"):
      self.sampler.sample(np.array([2, 9]), 1, max_nodes=n, max_edges=max_edges)
    with self.assertRaisesRegex(GraphError, "over the caps"):
      self.sampler.sample(np.array([2, 9]), 1, max_nodes=max_nodes, max_edges=e - 1)

  def test_keys(self):
    seeds = np.array([0, 10, 20])
    a = self.sampler.sample(seeds, 1)
    b = self.sampler.sample(seeds, 1)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    distinct = {frozenset(subgraph.edge_set(self.sampler.sample(seeds, k))) for k in range(20)}
    self.assertGreater(len(distinct), 15)

  @parameterized.named_parameters(
      ("repeated", [3, 5, 3], "seed node id 3 is repeated"),
      ("too_large", [3, 60], "seed node id 60 is out of range"),
      ("negative", [-2, 3], "seed node id -2 is out of range"),
      ("not_integers", [1.5, 3.0], "must be integers"),
  )
  def test_bad_seeds(self, seeds, message):
    before = self.sampler.sample(np.array([3, 4]), 5)
    with self.assertRaisesRegex(GraphError, message):
      self.sampler.sample(np.array(seeds), 5)
    after = self.sampler.sample(np.array([3, 4]), 5)  # the scratch table was left clean
    for x, y in zip(before, after):
      np.testing.assert_array_equal(x, y)

  def test_bad_fanouts(self):
    with self.assertRaisesRegex(GraphError, "fanouts"):
      host_sampler.HostSampler(self.graph, [3, 0])

  def test_single_seed_counts_match_sampler(self):
    counts = host_sampler.single_seed_edge_counts(self.graph, self.fanouts, 11)
    want = [int(self.sampler.sample(np.array([v]), 11).num_edges)
            for v in range(self.graph.num_nodes)]
    np.testing.assert_array_equal(counts, want)


def _chi_square_pvalue(observed, expected):
  """(statistic, p-value or None without scipy)."""
  stat = float(((observed - expected) ** 2 / expected).sum())
  try:
    from scipy import stats  # pylint: disable=g-import-not-at-top
  except ImportError:
    return stat, None
  return stat, float(stats.chi2.sf(stat, len(observed) - 1))


class UniformityTest(absltest.TestCase):

  def _star(self, degree):
    """Node 0 linked to 1..degree (one hop from node 0 draws from its `degree` neighbours)."""
    leaves = np.arange(1, degree + 1)
    return graph_lib.from_edges(np.zeros(degree, np.int64), leaves, symmetric=True)

  def test_each_neighbour_with_probability_k_over_d(self):
    # Degree 20, k = 5: each neighbour is in a sample with probability 1/4.
    sampler = host_sampler.HostSampler(self._star(20), [5])
    keys = 4000
    counts = np.zeros(21)
    for key in range(keys):
      out = sampler.sample(np.array([0]), key)
      counts[out.nodes[out.senders[:int(out.num_edges)]]] += 1
    self.assertEqual(counts[0], 0)
    stat, p = _chi_square_pvalue(counts[1:], np.full(20, keys * 5 / 20))
    if p is None:
      self.assertLess(stat, _CHI2_19DF_P001)
    else:
      self.assertGreater(p, 0.001)

  def test_every_subset_equally_likely(self):
    # Degree 6, k = 3: the C(6, 3) = 20 subsets are equally likely (a joint test, not just the
    # marginals), chi-square with 19 degrees of freedom.
    sampler = host_sampler.HostSampler(self._star(6), [3])
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(1, 7), 3))}
    keys = 4000
    counts = np.zeros(len(subsets))
    for key in range(keys):
      out = sampler.sample(np.array([0]), key)
      picked = tuple(sorted(out.nodes[out.senders[:int(out.num_edges)]].tolist()))
      counts[subsets[picked]] += 1
    stat, p = _chi_square_pvalue(counts, np.full(len(subsets), keys / len(subsets)))
    if p is None:
      self.assertLess(stat, _CHI2_19DF_P001)
    else:
      self.assertGreater(p, 0.001)


class RealGraphTest(absltest.TestCase):

  def test_slashdot_batch(self):
    path = testutil.require_shared("snap", "soc-Slashdot0902.txt.gz")
    g = graph_lib.load_edge_list(str(path))
    fanouts = [15, 10, 5]
    sampler = host_sampler.HostSampler(g, fanouts)
    seeds = np.random.default_rng(0).choice(g.num_nodes, 1024, replace=False)
    out = sampler.sample(seeds, 123)
    n, e = int(out.num_nodes), int(out.num_edges)
    max_nodes, max_edges = subgraph.caps(1024, fanouts)
    self.assertLess(n, max_nodes)
    self.assertLessEqual(e, max_edges)
    self.assertGreater(e, 50_000)  # ~97K: seeds reach hubs, whose neighbourhoods overlap
    nodes = out.nodes[:n]
    np.testing.assert_array_equal(nodes[:1024], seeds)
    self.assertLen(np.unique(nodes), n)
    # Every edge exists: the CSR rows are sorted, so look each sender up in its receiver's row.
    s = nodes[out.senders[:e]].astype(np.int64)
    r = nodes[out.receivers[:e]].astype(np.int64)
    keys = r * g.num_nodes + s
    rows = np.repeat(np.arange(g.num_nodes, dtype=np.int64), g.degrees())
    all_keys = rows * g.num_nodes + g.indices
    self.assertTrue(np.isin(keys, all_keys).all())
    # No receiver has two copies of one neighbour.
    self.assertLen(np.unique(keys), e)


if __name__ == "__main__":
  absltest.main()
