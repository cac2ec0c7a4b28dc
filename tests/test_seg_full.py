"""Full-graph SEG (graphs/path_features.py, graphs/seg_full.py): path-label histograms by hand and
against brute-force path enumeration, no target-edge leak, order and padding invariance, a tiny
run that learns, and the launcher's errors."""

import pathlib

from absl.testing import absltest
import jax
import numpy as np

from graphs import link_data
from graphs import link_train
from graphs import path_features
from graphs import seg_full
from graphs import subgraph_runner
from graphs.errors import GraphError
from tests.test_launch_seg import write_cliques
from tests.test_seg import clique_split


def csr(num_nodes, edges):
  split = link_data.LinkSplit(name="x", num_nodes=num_nodes, train_pos=np.asarray(edges),
                              valid_pos=None, valid_neg=None, test_pos=None, test_neg=None,
                              features=None)
  return subgraph_runner.training_csr(split)


def brute_force(adj, u, v, num_buckets):
  """The features of (u, v) by enumerating paths on a dense boolean adjacency without u-v."""
  g = adj.copy()
  g[u, v] = g[v, u] = False
  hist = np.zeros((2, 2 * num_buckets))
  paths = [0, 0]
  for side, (s, t) in enumerate([(u, v), (v, u)]):
    for w in np.flatnonzero(g[s]):
      c2 = int(g[w, t])
      c3 = sum(1 for x in np.flatnonzero(g[w]) if g[x, t] and x not in (s, t))
      b = 0 if c3 == 0 else min(1 + int(np.floor(np.log2(c3))), num_buckets - 1)
      hist[side, c2 * num_buckets + b] += 1
      if side == 0:
        paths[0] += c2
        paths[1] += c3
  return hist, np.array(paths, np.float32)


class PathFeaturesTest(absltest.TestCase):

  def test_by_hand(self):
    # u=0, v=1 joined directly (the target edge), by 0-2-1 and by 0-3-4-1.
    indptr, indices = csr(5, [(0, 1), (0, 2), (2, 1), (0, 3), (3, 4), (4, 1)])
    b = 4
    for dense in (True, False):
      hist, paths = path_features.PathFeaturizer(indptr, indices, b, dense=dense)(
          np.array([[0, 1], [1, 0]]))
      want_u = np.zeros(2 * b)
      want_u[b + 0] = 1  # w=2: on the length-2 path, no length-3 path through it
      want_u[1] = 1      # w=3: not a common neighbour, one length-3 path (0-3-4-1)
      want_v = want_u.copy()  # v's side: w=2 (common), w=4 (on 1-4-3-0)
      np.testing.assert_array_equal(hist[0], [want_u, want_v])
      np.testing.assert_array_equal(paths[0], [1, 1])
      np.testing.assert_array_equal(hist[1], hist[0][::-1])  # swapping u and v swaps the sides
      np.testing.assert_array_equal(paths[1], paths[0])

  def test_against_path_enumeration_and_no_target_edge_leak(self):
    rng = np.random.default_rng(0)
    n, b = 30, 4
    adj = np.triu(rng.random((n, n)) < 0.2, 1)
    adj = adj | adj.T
    edges = np.argwhere(np.triu(adj, 1))
    indptr, indices = csr(n, edges)
    pairs = rng.integers(0, n, (120, 2))
    pairs = np.concatenate([pairs[pairs[:, 0] != pairs[:, 1]], edges[:60]])  # edges: positives
    for dense in (True, False):
      hist, paths = path_features.PathFeaturizer(indptr, indices, b, dense=dense)(pairs)
      for i, (u, v) in enumerate(pairs):
        want_hist, want_paths = brute_force(adj, u, v, b)
        np.testing.assert_array_equal(hist[i], want_hist, err_msg=f"{dense} {u} {v}")
        np.testing.assert_array_equal(paths[i], want_paths, err_msg=f"{dense} {u} {v}")
    # An existing edge is labelled as if it were absent: same features on the graph without it.
    u, v = edges[0]
    without = csr(n, edges[1:])
    f_with = path_features.PathFeaturizer(indptr, indices, b)(np.array([[u, v]]))
    f_without = path_features.PathFeaturizer(*without, b)(np.array([[u, v]]))
    for a, c in zip(f_with, f_without):
      np.testing.assert_array_equal(a, c)

  def test_errors(self):
    indptr, indices = csr(3, [(0, 1)])
    f = path_features.PathFeaturizer(indptr, indices)
    with self.assertRaisesRegex(GraphError, r"shape \[P, 2\]"):
      f(np.zeros((3,), np.int64))
    with self.assertRaisesRegex(GraphError, r"lie in \[0, 3\)"):
      f(np.array([[0, 3]]))
    with self.assertRaisesRegex(GraphError, "num_buckets"):
      path_features.PathFeaturizer(indptr, indices, num_buckets=1)
    with self.assertRaisesRegex(GraphError, "CSR"):
      path_features.PathFeaturizer(np.array([0, 5]), indices)


class FullSEGTest(absltest.TestCase):

  def _runner(self, **kw):
    cfg = seg_full.FullSEGConfig(**dict(dict(hidden=16, embedding_dim=16, structure_hidden=8,
                                             batch_size=64, lr=0.01, num_buckets=4), **kw))
    return seg_full.FullSEGRunner(clique_split(), cfg, seed=0)

  def test_order_padding_and_batch_invariance(self):
    runner = self._runner()
    state = runner.init()
    pairs = np.asarray(runner.split.test_pos)[:7]
    together = runner.score(state, pairs)
    one_by_one = np.concatenate([runner.score(state, p[None]) for p in pairs])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runner.score(state, pairs[:, ::-1]), together, rtol=1e-5,
                               atol=1e-6)

  def test_path_labels_enter_the_score(self):
    runner = self._runner()
    state = runner.init()
    pairs = np.asarray(runner.split.test_pos)[:4]
    hist, paths = runner.featurizer(pairs)
    z = runner._embed(state)  # pylint: disable=protected-access
    base = seg_full.decode(state.params, z, pairs, hist, paths, runner.cfg)
    moved = seg_full.decode(state.params, z, pairs, hist + 5.0, paths, runner.cfg)
    self.assertGreater(float(np.abs(np.asarray(base - moved)).max()), 1e-4)
    grads = jax.grad(lambda p: seg_full.decode(p, z, pairs, hist, paths, runner.cfg).sum())(
        state.params)
    self.assertGreater(float(np.abs(grads["structure"]["lin_0"]["kernel"]).max()), 0.0)

  def test_sum_fusion_adds_a_structure_logit(self):
    runner = self._runner(fusion="sum")
    state = runner.init()
    params = state.params
    self.assertEqual(params["decoder"]["lin_0"]["kernel"].shape[0], 16)  # z_u * z_v alone
    self.assertEqual(params["structure_head"]["lin_0"]["kernel"].shape, (8 + 2, 8))
    pairs = np.asarray(runner.split.test_pos)[:4]
    hist, paths = runner.featurizer(pairs)
    z = runner._embed(state)  # pylint: disable=protected-access
    got = np.asarray(seg_full.decode(params, z, pairs, hist, paths, runner.cfg))
    # the semantic logit: the decoder MLP on z_u * z_v (no dropout at evaluation)
    x = np.asarray(z)[pairs[:, 0]] * np.asarray(z)[pairs[:, 1]]
    for i in range(runner.cfg.decoder_layers):
      lin = params["decoder"][f"lin_{i}"]
      x = x @ np.asarray(lin["kernel"]) + np.asarray(lin["bias"])
      if i < runner.cfg.decoder_layers - 1:
        x = np.maximum(x, 0.0)
    # the structure logit: the head on [s_u * s_v | log(1 + paths)]
    code = np.asarray(seg_full.structure_code(params, hist))
    head = params["structure_head"]
    lin0, lin1 = jax.tree.map(np.asarray, (head["lin_0"], head["lin_1"]))
    h = np.maximum(np.concatenate([code, np.log1p(paths)], -1) @ lin0["kernel"] + lin0["bias"], 0)
    want = x[:, 0] + (h @ lin1["kernel"] + lin1["bias"])[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  def test_path_pool_averages_common_neighbours(self):
    runner = self._runner(path_pool=5)
    state = runner.init()
    adj = np.asarray(runner.adj)
    self.assertEqual(adj.diagonal().sum(), 0)
    train = np.asarray(runner.split.train_pos)
    np.testing.assert_array_equal(adj[train[:, 0], train[:, 1]], 1)
    z = runner._embed(state)  # pylint: disable=protected-access
    y = np.asarray(z) @ np.asarray(state.params["pool"]["kernel"])
    pairs = np.concatenate([train[:3], np.asarray(runner.split.test_pos)[:3], [[0, 0]]])
    got = np.asarray(seg_full.path_pool(state.params, z, pairs, runner.adj))
    for p, (u, v) in enumerate(pairs):
      common = [w for w in range(runner.num_nodes)
                if w not in (u, v) and adj[u, w] and adj[w, v]]
      self.assertTrue(common or u == v)
      want = y[common].mean(0) if common else np.zeros(y.shape[1])
      np.testing.assert_allclose(got[p], want, rtol=1e-5, atol=1e-5)

  def test_ema_is_what_is_scored(self):
    runner = self._runner(ema=0.9, batch_size=4096)  # one step per epoch
    state = runner.init()
    before = state.params
    state, _ = runner.train_epoch(state, 0)
    want = jax.tree.map(lambda a, b: 0.9 * np.asarray(a) + 0.1 * np.asarray(b), before,
                        state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 runner.params(state), want)
    self.assertIs(runner.params(state), state.ema)
    pairs = np.asarray(runner.split.test_pos)[:5]
    raw = runner.score(state._replace(ema=None), pairs)
    self.assertFalse(np.allclose(runner.score(state, pairs), raw))

  def test_num_neg_batches(self):
    runner = self._runner(num_neg=3, batch_size=16)
    seen = []
    step = runner._step  # pylint: disable=protected-access

    def spy(state, graph, adj, batch, key):
      seen.append(batch)
      return step(state, graph, adj, batch, key)

    runner._step = spy  # pylint: disable=protected-access
    _, stats = runner.train_epoch(runner.init(), 0)
    num = runner.split.train_pos.shape[0]
    self.assertEqual(stats["pairs"], 4 * num)
    for batch in seen:
      self.assertEqual(batch.pairs.shape, (4 * 16, 2))
      self.assertEqual(batch.hist.shape[0], 4 * 16)
    # the K negative blocks of a step are different pairs, labelled as their own
    negs = seen[0].pairs[16:].reshape(3, 16, 2)
    self.assertFalse(np.array_equal(negs[0], negs[1]))
    hist, paths = runner.featurizer(seen[0].pairs)
    np.testing.assert_array_equal(seen[0].hist, hist)
    np.testing.assert_array_equal(seen[0].paths, paths)

  def _tiny_run(self, **options):
    """30 epochs of the full-graph SEG on the clique edge list, through `link_train`."""
    tmp = pathlib.Path(self.create_tempdir().full_path)
    edges = tmp / "edges.txt"
    write_cliques(edges)
    cfg = link_train.LinkTrainConfig(
        dataset=str(edges), model="seg", epochs=30, eval_every=10, model_options=dict(
            gnn="full", hidden=16, embedding_dim=16, structure_hidden=8, batch_size=64, lr=0.01,
            num_buckets=4, **options))
    return link_train.train_and_evaluate(cfg, str(tmp / "run"))

  def test_options_run(self):
    # target masking, the pooled readout and the ranking loss together, through the launcher path
    results = self._tiny_run(path_pool=8, mask_targets=True, loss="auc", ema=0.5, num_neg=2,
                             neg_sampler="non_edge", grad_clip=1.0, fusion="sum")
    self.assertLess(results["history"][-1]["loss"], 0.6 * results["history"][0]["loss"])
    self.assertGreater(results["test/hits@20"], 0.5, results)
    self.assertEqual(results["config"]["runner"]["path_pool"], 8)

  def test_tiny_run_learns(self):
    results = self._tiny_run()
    first, last = results["history"][0]["loss"], results["history"][-1]["loss"]
    self.assertLess(last, 0.6 * first, results["history"])
    # Held-out clique edges have 4 common neighbours, random pairs about none.
    self.assertGreater(results["test/hits@20"], 0.5, results)
    self.assertEqual(results["mode"], "full-graph")

  def test_config_errors(self):
    with self.assertRaisesRegex(GraphError, "num_buckets must be >= 2"):
      seg_full.FullSEGConfig(num_buckets=1)
    with self.assertRaisesRegex(GraphError, "encoder"):
      seg_full.FullSEGConfig(encoder="gat")
    with self.assertRaisesRegex(GraphError, "ema must lie in"):
      seg_full.FullSEGConfig(ema=1.0)
    with self.assertRaisesRegex(GraphError, "loss must be one of"):
      seg_full.FullSEGConfig(loss="hinge")
    with self.assertRaisesRegex(GraphError, "fusion must be one of concat, sum"):
      seg_full.FullSEGConfig(fusion="product")
    with self.assertRaisesRegex(GraphError, "path_pool must be an integer >= 0"):
      seg_full.FullSEGConfig(path_pool=-1)
    split = clique_split()
    with self.assertRaisesRegex(GraphError, "gnn applies to model seg only"):
      link_train.make_runner("seal", split, 0, {"gnn": "full"})
    with self.assertRaisesRegex(GraphError, "gnn must be one of"):
      link_train.make_runner("seg", split, 0, {"gnn": "both"})
    self.assertIsInstance(link_train.make_runner("seg", split, 0, {"hidden": 8}),
                          seg_full.FullSEGRunner)  # the default
    with self.assertRaisesRegex(GraphError, "encoder applies to model seg"):
      link_train.make_runner("gcn", split, 0, {"encoder": "sage"})
    with self.assertRaisesRegex(GraphError, "options ema do not apply"):
      link_train.make_runner("gcn", split, 0, {"ema": 0.9})
    self.assertEqual(link_train.make_runner("seg", split, 0, {"encoder": "sage"}).cfg.encoder,
                     "sage")
    with self.assertRaisesRegex(GraphError, "options gnn_hidden do not apply"):
      link_train.make_runner("seg", split, 0, {"gnn": "full", "gnn_hidden": 8})


if __name__ == "__main__":
  absltest.main()
