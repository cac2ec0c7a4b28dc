"""SEG / SEAL (graphs/seg.py, graphs/dgcnn.py, graphs/subgraph_runner.py): SortPool by hand,
padding and batch-composition invariance, cached == dynamic, one shard == four shards, a tiny
end-to-end run that learns, and a short real Cora run."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from graphs import dgcnn
from graphs import enclosing
from graphs import link_data
from graphs import seg
from graphs import subgraph_runner as sr
from graphs.errors import GraphError
from tests import testutil
from tests.test_enclosing import make_csr


def clique_split(seed=0, cliques=15, size=6, noise=20):
  """Cliques plus a few random edges: a held-out clique edge has size - 2 common neighbours, a
  random pair almost none, so links are predictable from the structure alone."""
  rng = np.random.default_rng(seed)
  n = cliques * size
  edges = [(c * size + a, c * size + b) for c in range(cliques)
           for a in range(size) for b in range(a + 1, size)]
  edges += [tuple(rng.choice(n, 2, replace=False)) for _ in range(noise)]
  return link_data.random_link_split(np.array(edges), n, seed=seed, name="cliques")


def labelled_batch(model, subgraphs, pad):
  def fn(s):
    if model == "seg":
      label = enclosing.path_label_features(enclosing.path_counts(s, 3), 3)
    else:
      label = enclosing.drnl_labels(s).astype(np.int32)
    return {"label": label, "id": s.nodes.astype(np.int32)}
  return enclosing.to_graphs_tuple(subgraphs, fn, pad_to_power_of_two=pad)


class SortPoolTest(absltest.TestCase):

  def test_by_hand(self):
    # Graph 0: 3 nodes (last channel 0.1, 0.9, 0.5); graph 1: 1 node.
    h = jnp.array([[1., 0.1], [2., 0.9], [3., 0.5], [4., 0.7]])
    out = dgcnn.sort_pool(h, jnp.array([3, 1]), k=2)
    np.testing.assert_allclose(out[0], [[2., 0.9], [3., 0.5]])
    np.testing.assert_allclose(out[1], [[4., 0.7], [0., 0.]])

  def test_ties_keep_node_order(self):
    h = jnp.array([[1., 0.5], [2., 0.5], [3., 0.5]])
    np.testing.assert_allclose(dgcnn.sort_pool(h, jnp.array([3]), k=3)[0, :, 0], [1., 2., 3.])

  def test_sortpool_k(self):
    self.assertEqual(dgcnn.sortpool_k(np.arange(1, 101)), 60)
    self.assertEqual(dgcnn.sortpool_k(np.array([3, 4, 5])), 10)  # at least 10

  def test_k_below_ten_refused(self):
    with self.assertRaisesRegex(GraphError, "k must be >= 10"):
      dgcnn.DGCNNConfig(k=5)


class ModelTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    n = 40
    edges = rng.integers(0, n, (160, 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    self.n = n
    self.indptr, self.indices = make_csr(n, np.unique(np.sort(edges, axis=1), axis=0))
    self.pairs = np.array([[0, 1], [2, 3], [5, 9], [10, 30], [7, 8]])

  def _cfg(self, model, pair_readout=True):
    return seg.SubgraphModelConfig(model=model, label_dim=4, num_nodes=self.n, embedding_dim=8,
                                   feature_dim=3, hidden=16,
                                   readout=dgcnn.DGCNNConfig(hidden=8, k=10),
                                   pair_readout=pair_readout)

  @parameterized.parameters(("seg", True), ("seg", False), ("seal", True))
  def test_padding_and_batch_invariance(self, model, pair_readout):
    cfg = self._cfg(model, pair_readout)
    self.assertEqual("pair_out_1" in seg.init(cfg, jax.random.key(0))["params"],
                     model == "seg" and pair_readout)
    params = seg.init(cfg, jax.random.key(1))
    feats = jnp.asarray(np.random.default_rng(1).normal(size=(self.n, 3)), jnp.float32)
    sub = enclosing.extract(self.indptr, self.indices, self.pairs, 2, None)
    plain = labelled_batch(model, sub, pad=False)
    padded = labelled_batch(model, sub, pad=True)
    self.assertGreater(padded.graph.n_node.shape[0], plain.graph.n_node.shape[0])
    s_plain = seg.apply(params, plain.graph, plain.u_index, plain.v_index, cfg, features=feats)
    s_pad = seg.apply(params, padded.graph, padded.u_index, padded.v_index, cfg, features=feats)
    np.testing.assert_allclose(s_pad[:len(self.pairs)], s_plain, rtol=1e-5, atol=1e-6)
    # One pair alone scores as it does inside the batch.
    alone = labelled_batch(model, enclosing.extract(self.indptr, self.indices, self.pairs[2:3],
                                                    2, None), pad=True)
    s_alone = seg.apply(params, alone.graph, alone.u_index, alone.v_index, cfg, features=feats)
    np.testing.assert_allclose(s_alone[0], s_plain[2], rtol=1e-5, atol=1e-6)

  def test_common_neighbours_by_hand(self):
    # 0-1, 0-2, 1-2, 0-3, 1-3, 3-4: pair (0, 1) has common neighbours 2 and 3; (2, 3): 0 and 1.
    indptr, indices = make_csr(5, [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [3, 4]])
    np.testing.assert_array_equal(
        enclosing.common_neighbours(indptr, indices, [[0, 1], [2, 3], [2, 4], [0, 4]]),
        [2, 2, 0, 1])

  def test_pair_counts_enter_the_score(self):
    cfg = dataclasses.replace(self._cfg("seg"), pair_counts=True)
    params = seg.init(cfg, jax.random.key(3))
    sub = enclosing.extract(self.indptr, self.indices, self.pairs, 1, None)
    b = labelled_batch("seg", sub, pad=True)
    feats = jnp.zeros((self.n, 3))
    g_pad = b.graph.n_node.shape[0]
    scores = [seg.apply(params, b.graph._replace(globals=jnp.full((g_pad, 1), c)), b.u_index,
                        b.v_index, cfg, features=feats) for c in (0.0, 2.0)]
    self.assertGreater(float(jnp.max(jnp.abs(scores[0] - scores[1]))), 1e-4)

  def test_seg_uses_the_path_labels(self):
    cfg = self._cfg("seg")
    params = seg.init(cfg, jax.random.key(2))
    sub = enclosing.extract(self.indptr, self.indices, self.pairs, 1, None)
    b = labelled_batch("seg", sub, pad=True)
    feats = jnp.zeros((self.n, 3))
    base = seg.apply(params, b.graph, b.u_index, b.v_index, cfg, features=feats)
    nodes = dict(b.graph.nodes, label=np.roll(b.graph.nodes["label"], 1, axis=1))
    other = seg.apply(params, b.graph._replace(nodes=nodes), b.u_index, b.v_index, cfg,
                      features=feats)
    self.assertGreater(float(jnp.max(jnp.abs(base - other)[:len(self.pairs)])), 1e-4)

  def test_config_errors(self):
    with self.assertRaisesRegex(GraphError, "unknown subgraph model"):
      seg.SubgraphModelConfig(model="vgae")
    with self.assertRaisesRegex(GraphError, "multiple of"):
      sr.SubgraphConfig(batch_size=10, data_shards=4)
    with self.assertRaisesRegex(GraphError, "mode"):
      sr.SubgraphConfig(mode="lazy")


class RunnerTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.split = clique_split()

  def test_select_equals_direct_extraction(self):
    indptr, indices = sr.training_csr(self.split)
    pairs = self.split.test_pos[:9]
    whole = enclosing.extract(indptr, indices, pairs, 1, 5, seed=3)
    idx = np.array([4, 0, 7])
    part, rows = sr.select(whole, idx)
    direct = enclosing.extract(indptr, indices, pairs[idx], 1, 5, seed=3)
    for field in enclosing.EnclosingSubgraphs._fields:
      np.testing.assert_array_equal(getattr(part, field), getattr(direct, field), err_msg=field)
    np.testing.assert_array_equal(whole.nodes[rows], direct.nodes)

  def test_training_csr_is_symmetric_and_deduplicated(self):
    split = link_data.LinkSplit(name="t", num_nodes=4, train_pos=np.array([[0, 1], [1, 0], [2, 3]]),
                                valid_pos=None, valid_neg=None, test_pos=None, test_neg=None,
                                features=None)
    indptr, indices = sr.training_csr(split)
    np.testing.assert_array_equal(indptr, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(indices, [1, 0, 3, 2])

  @parameterized.parameters(("seg", False), ("seg", True), ("seal", False))
  def test_cached_dynamic_and_sharded_scores_agree(self, model, pair_counts):
    base = dict(model=model, embedding_dim=8, hidden=8, gnn_hidden=8, sortpool_k=10,
                max_nodes_per_hop=8, eval_batch_size=8, batch_size=8, pair_counts=pair_counts)
    cached = sr.SubgraphRunner(self.split, sr.SubgraphConfig(mode="cached", **base), seed=0)
    dynamic = sr.SubgraphRunner(self.split, sr.SubgraphConfig(mode="dynamic", **base), seed=0)
    sharded = sr.SubgraphRunner(
        self.split, sr.SubgraphConfig(mode="dynamic", **dict(base, data_shards=4)), seed=0)
    self.assertEqual((cached.mode, dynamic.mode), ("cached", "dynamic"))
    state = cached.init()
    pairs = np.concatenate([self.split.test_pos, self.split.test_neg])[:21]  # a partial batch
    a = cached.score(state, pairs, name="x")
    b = dynamic.score(state, pairs)
    c = sharded.score(state, pairs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(np.isfinite(a)))

  def test_tiny_run_learns(self):
    cfg = sr.SubgraphConfig(model="seg", embedding_dim=0, hidden=16, gnn_hidden=16,
                            sortpool_k=10, batch_size=32, lr=3e-3, dropout=0.0)
    runner = sr.SubgraphRunner(self.split, cfg, seed=0)
    state = runner.init()
    pos, neg = self.split.test_pos, self.split.test_neg
    before = self._auc(runner.score(state, pos), runner.score(state, neg))
    losses = []
    for epoch in range(6):
      state, stats = runner.train_epoch(state, epoch)
      losses.append(stats["loss"])
    self.assertEqual(stats["pairs"], 2 * self.split.train_pos.shape[0])
    self.assertLess(losses[-1], 0.8 * losses[0])
    after = self._auc(runner.score(state, pos), runner.score(state, neg))
    self.assertGreater(after, 0.85)
    self.assertGreater(after, before)
    self.assertLessEqual(runner.compiles, 12)  # power-of-two buckets bound the recompiles

  @staticmethod
  def _auc(pos, neg):
    return float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))

  def test_no_training_edges(self):
    split = link_data.LinkSplit(name="empty", num_nodes=3, train_pos=np.zeros((0, 2), np.int64),
                                valid_pos=None, valid_neg=None, test_pos=None, test_neg=None,
                                features=None)
    with self.assertRaisesRegex(GraphError, "no training edges"):
      sr.SubgraphRunner(split, sr.SubgraphConfig(), seed=0)


class CoraTest(absltest.TestCase):

  def test_one_short_epoch_beats_chance_by_far(self):
    root = testutil.require_shared("planetoid", "ind.cora.graph").parent
    from graphs import planetoid  # pylint: disable=g-import-not-at-top
    split = link_data.planetoid_link_split(planetoid.load_planetoid(str(root), "cora"), seed=0)
    cfg = sr.SubgraphConfig(model="seg", embedding_dim=0, train_pairs_per_epoch=1500,
                            batch_size=64, eval_batch_size=512)
    runner = sr.SubgraphRunner(split, cfg, seed=0)
    state, _ = runner.train_epoch(runner.init(), 0)
    hits = link_data.evaluate("cora", runner.score(state, split.test_pos),
                              runner.score(state, split.test_neg))["hits@100"]
    # 527 test negatives: a random scorer gets Hits@100 ~ 0; one short epoch of SEG gets ~0.6.
    self.assertGreater(hits, 0.4)


if __name__ == "__main__":
  absltest.main()
