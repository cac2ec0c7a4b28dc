"""graphs/gae.py: GCN/SAGE layers by hand, dense = sparse, decoders, a tiny overfit, real Cora."""

import dataclasses
import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from graphs import gae
from graphs import link_data
from graphs import planetoid
from graphs.errors import GraphError
from tests import testutil

# One compile per shape and config instead of op-by-op dispatch.
_encode = jax.jit(gae.encode, static_argnames=("cfg", "train"))
_decode = jax.jit(gae.decode, static_argnames=("cfg", "train"))
_gcn_conv = jax.jit(gae.gcn_conv)
_sage_conv = jax.jit(gae.sage_conv)


def _init(cfg, num_nodes, num_features, seed):
  """Random params (biases too) in `gae.init`'s tree, without compiling the initialisers."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(functools.partial(gae.init, cfg, num_nodes, num_features),
                            jax.random.key(0))
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(scale=0.5, size=a.shape), a.dtype),
                      abstract)


def _random_graph(n, p, seed):
  """[E, 2] undirected edges u < v of an Erdos-Renyi graph (some nodes may be isolated)."""
  rng = np.random.default_rng(seed)
  return np.argwhere(np.triu(rng.random((n, n)) < p, 1))


def _both(edges):
  return (np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]]))


def _auc(pos, neg):
  """P(a positive outscores a negative), ties half."""
  pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
  return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


class LayerTest(parameterized.TestCase):

  # A star 1 - {0, 2, 3}. With self loops the degrees are 2, 4, 2, 2, so the operator
  # D^-1/2 (A + I) D^-1/2 has 1/2 on the leaves' diagonal, 1/4 at (1, 1), 1/sqrt(8) on the edges.
  EDGES = np.array([[0, 1], [1, 2], [1, 3]])

  @parameterized.named_parameters(("dense", "dense"), ("sparse", "sparse"))
  def test_gcn_by_hand(self, adjacency):
    cfg = gae.GAEConfig(adjacency=adjacency)
    x = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    graph = gae.make_graph(4, self.EDGES, cfg, x)
    p = {"kernel": jnp.array([[2.0]]), "bias": jnp.array([0.5])}
    r8 = 1 / np.sqrt(8)
    # Row v: x_v W / deg_v + sum over neighbours u of x_u W / sqrt(deg_u deg_v), then + b.
    want = np.array([[2 * (1 / 2 + 2 * r8)],
                     [2 * (2 / 4 + (1 + 3 + 4) * r8)],
                     [2 * (3 / 2 + 2 * r8)],
                     [2 * (4 / 2 + 2 * r8)]]) + 0.5
    np.testing.assert_allclose(_gcn_conv(p, graph.features, graph), want, rtol=1e-6)

  @parameterized.named_parameters(("dense_narrowing", "dense", 7, 3),
                                  ("dense_widening", "dense", 3, 7),
                                  ("sparse_narrowing", "sparse", 7, 3),
                                  ("sparse_widening", "sparse", 3, 7))
  def test_gcn_matches_numpy(self, adjacency, d_in, d_out):
    n = 9  # node 8 has no edges: its row is its own x W + b
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2], [4, 5], [5, 6], [6, 7]])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    w, b = rng.normal(size=(d_in, d_out)), rng.normal(size=d_out)
    a = np.eye(n)
    for u, v in edges:
      a[u, v] = a[v, u] = 1
    d = a.sum(1)
    want = (a / np.sqrt(d[:, None] * d[None, :])) @ x @ w + b
    graph = gae.make_graph(n, edges, gae.GAEConfig(adjacency=adjacency), x)
    got = _gcn_conv({"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(b, jnp.float32)},
                    graph.features, graph)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[8], x[8] @ w + b, rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(("dense", "dense"), ("sparse", "sparse"))
  def test_sage_matches_numpy(self, adjacency):
    n = 5  # node 4 is isolated: its neighbour mean is 0
    edges = np.array([[0, 1], [0, 2], [0, 3], [2, 3]])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    ws, wn, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=3)
    a = np.zeros((n, n))
    for u, v in edges:
      a[u, v] = a[v, u] = 1
    mean = a / np.maximum(a.sum(1, keepdims=True), 1)
    want = x @ ws + b + mean @ x @ wn
    graph = gae.make_graph(n, edges, gae.GAEConfig(encoder="sage", adjacency=adjacency), x)
    p = {"lin_self": {"kernel": jnp.asarray(ws, jnp.float32), "bias": jnp.asarray(b, jnp.float32)},
         "lin_neigh": {"kernel": jnp.asarray(wn, jnp.float32)}}
    np.testing.assert_allclose(_sage_conv(p, graph.features, graph), want, rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(("gcn_dense", "gcn", "dense"), ("gcn_sparse", "gcn", "sparse"),
                                  ("sage_dense", "sage", "dense"),
                                  ("sage_sparse", "sage", "sparse"))
  def test_removed_edges_drop_their_messages(self, encoder, adjacency):
    # Leaving edges out == the layer's operator with those entries zeroed, normalisation kept.
    n = 12
    edges = _random_graph(n, 0.4, seed=5)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    cfg = gae.GAEConfig(encoder=encoder, adjacency=adjacency)
    graph = gae.make_graph(n, edges, cfg, x)
    op = (gae.dense_gcn_adjacency if encoder == "gcn" else gae.dense_mean_adjacency)(
        n, *_both(edges))
    take = edges[[0, 3, 5]]
    zeroed = op.copy()
    zeroed[take[:, 0], take[:, 1]] = zeroed[take[:, 1], take[:, 0]] = 0
    # both directions of three edges, then two padding rows pointing at a real edge
    senders = np.concatenate([take[:, 0], take[:, 1], edges[[1, 1], 0]])
    receivers = np.concatenate([take[:, 1], take[:, 0], edges[[1, 1], 1]])
    removed = gae.RemovedEdges(jnp.asarray(senders, jnp.int32), jnp.asarray(receivers, jnp.int32),
                               jnp.asarray(np.arange(8) < 6))
    w1, w2, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=3)
    if encoder == "gcn":
      p = {"kernel": jnp.asarray(w1, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}
      want = zeroed @ x @ w1 + b
      got = jax.jit(gae.gcn_conv)(p, graph.features, graph, removed)
    else:
      p = {"lin_self": {"kernel": jnp.asarray(w1, jnp.float32),
                        "bias": jnp.asarray(b, jnp.float32)},
           "lin_neigh": {"kernel": jnp.asarray(w2, jnp.float32)}}
      want = x @ w1 + b + zeroed @ x @ w2
      got = jax.jit(gae.sage_conv)(p, graph.features, graph, removed)
    self.assertGreater(np.abs(zeroed - op).max(), 0.05)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def test_wrong_graph_for_encoder(self):
    graph = gae.make_graph(4, self.EDGES, gae.GAEConfig(encoder="sage", adjacency="dense"),
                           np.ones((4, 1), np.float32))
    with self.assertRaisesRegex(GraphError, "gcn_adj"):
      gae.gcn_conv({"kernel": jnp.ones((1, 1)), "bias": jnp.zeros(1)}, graph.features, graph)


class DenseSparseTest(parameterized.TestCase):

  @parameterized.named_parameters(("gcn_embedding", "gcn", 0, False),
                                  ("gcn_features", "gcn", 6, False),
                                  ("sage_embedding", "sage", 0, False),
                                  ("sage_features_and_embedding", "sage", 6, True))
  def test_same_embeddings(self, encoder, num_features, use_embedding):
    n = 40
    edges = _random_graph(n, 0.15, seed=2)
    x = np.random.default_rng(3).normal(size=(n, num_features)).astype(np.float32)
    x = x if num_features else None
    cfg = gae.GAEConfig(encoder=encoder, hidden=16, num_layers=3, embedding_dim=8,
                        use_embedding=use_embedding, adjacency="dense")
    params = _init(cfg, n, num_features, seed=4)
    self.assertEqual("embedding" in params, use_embedding or not num_features)
    dense = gae.make_graph(n, edges, cfg, x)
    sparse_cfg = dataclasses.replace(cfg, adjacency="sparse")
    sparse = gae.make_graph(n, edges, sparse_cfg, x)
    self.assertIsNone(dense.graph)
    self.assertIsNotNone(sparse.graph)
    self.assertEqual(sparse.graph.senders.shape, (2 * edges.shape[0],))
    z_dense = np.asarray(_encode(params, dense, cfg))
    z_sparse = np.asarray(_encode(params, sparse, sparse_cfg))
    self.assertEqual(z_dense.shape, (n, 16))
    self.assertGreater(np.abs(z_dense).max(), 1.0)  # not trivially zero
    np.testing.assert_allclose(z_sparse, z_dense, rtol=1e-5, atol=1e-5 * np.abs(z_dense).max())
    # Dropout masks depend on the key and shapes only, so training mode agrees too.
    key = jax.random.key(5)
    zt_dense = _encode(params, dense, cfg, train=True, rng=key)
    zt_sparse = _encode(params, sparse, sparse_cfg, train=True, rng=key)
    self.assertFalse(np.allclose(zt_dense, z_dense))
    np.testing.assert_allclose(zt_sparse, zt_dense, rtol=1e-5,
                               atol=1e-5 * np.abs(zt_dense).max())

  def test_auto(self):
    self.assertTrue(gae.use_dense(gae.GAEConfig(), gae.DENSE_MAX_NODES))
    self.assertFalse(gae.use_dense(gae.GAEConfig(), gae.DENSE_MAX_NODES + 1))
    self.assertFalse(gae.use_dense(gae.GAEConfig(adjacency="sparse"), 10))
    self.assertTrue(gae.use_dense(gae.GAEConfig(adjacency="dense"), 10**6))
    g = gae.make_graph(3, np.array([[0, 1]]), gae.GAEConfig(), None)
    np.testing.assert_allclose(g.gcn_adj, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
    self.assertIsNone(g.mean_adj)


class DecodeTest(parameterized.TestCase):

  @parameterized.named_parameters(("one_layer", 1), ("three_layers", 3))
  def test_mlp_shapes(self, layers):
    cfg = gae.GAEConfig(hidden=8, decoder_layers=layers)
    params = _init(cfg, 6, 0, seed=0)
    self.assertLen(params["decoder"], layers)
    self.assertEqual(params["decoder"][f"lin_{layers - 1}"]["kernel"].shape, (8, 1))
    z = jnp.asarray(np.random.default_rng(0).normal(size=(6, 8)), jnp.float32)
    pairs = jnp.array([[0, 1], [2, 3], [5, 5], [4, 0], [1, 0]])
    logits = _decode(params, z, pairs, cfg)
    self.assertEqual((logits.shape, logits.dtype), ((5,), jnp.float32))
    # The Hadamard product is symmetric, so is the MLP's score.
    np.testing.assert_allclose(logits[0], logits[4], rtol=1e-6)
    dropped = _decode(params, z, pairs, dataclasses.replace(cfg, dropout=0.9), train=True,
                      rng=jax.random.key(0))
    self.assertEqual(dropped.shape, (5,))
    if layers > 1:
      self.assertFalse(np.allclose(dropped, logits))

  def test_dot(self):
    cfg = gae.GAEConfig(hidden=4, decoder="dot")
    params = _init(cfg, 5, 0, seed=0)
    self.assertEqual(params["decoder"], {})
    z = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    pairs = np.array([[0, 1], [3, 3], [4, 2]])
    np.testing.assert_allclose(_decode(params, jnp.asarray(z), jnp.asarray(pairs), cfg),
                               np.sum(z[pairs[:, 0]] * z[pairs[:, 1]], axis=1), rtol=1e-6)


  def test_losses(self):
    # positives 2.0, 0.5, -1.0 (the last padding), their negatives 1.0, 0.5, 3.0
    logits = jnp.array([2.0, 0.5, -1.0, 1.0, 0.5, 3.0])
    mask = jnp.array([True, True, False])
    self.assertAlmostEqual(float(gae.link_loss("auc", logits, mask)), (0.0 + 1.0) / 2, places=6)
    sp = lambda t: np.log1p(np.exp(-t))  # BCE of a positive logit t; a negative's is sp(-t)
    want = (sp(2.0) + sp(-1.0) + sp(0.5) + sp(-0.5)) / 2
    self.assertAlmostEqual(float(gae.link_loss("bce", logits, mask)), want, places=5)
    # K = 2 negatives per positive: a second block 0.0, 1.5, 9.0 averages in
    logits2 = jnp.concatenate([logits, jnp.array([0.0, 1.5, 9.0])])
    self.assertAlmostEqual(float(gae.link_loss("auc", logits2, mask)),
                           ((0.0 + 1.0) / 2 + (1.0 + 4.0) / 2) / 2, places=6)
    want2 = (sp(2.0) + (sp(-1.0) + sp(-0.0)) / 2 + sp(0.5) + (sp(-0.5) + sp(-1.5)) / 2) / 2
    self.assertAlmostEqual(float(gae.link_loss("bce", logits2, mask)), want2, places=5)
    with self.assertRaisesRegex(GraphError, "loss must be one of bce, auc"):
      gae.link_loss("hinge", logits, mask)


class ConfigTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("encoder", {"encoder": "gat"}, "encoder"),
      ("decoder", {"decoder": "bilinear"}, "decoder"),
      ("adjacency", {"adjacency": "csr"}, "adjacency"),
      ("hidden", {"hidden": 0}, "hidden"),
      ("num_layers", {"num_layers": 0}, "num_layers"),
      ("decoder_layers", {"decoder_layers": 0}, "decoder_layers"),
      ("embedding_dim", {"embedding_dim": -1}, "embedding_dim"),
      ("batch_size", {"batch_size": 2.5}, "batch_size"),
      ("dropout", {"dropout": 1.0}, "dropout"),
      ("lr", {"lr": 0.0}, "lr"))
  def test_bad_config(self, kwargs, field):
    with self.assertRaisesRegex(GraphError, f"GAEConfig.{field}"):
      gae.GAEConfig(**kwargs)

  def test_bad_inputs(self):
    cfg = gae.GAEConfig()
    with self.assertRaisesRegex(GraphError, r"\[0, 3\)"):
      gae.make_graph(3, np.array([[0, 3]]), cfg)
    with self.assertRaisesRegex(GraphError, "features"):
      gae.make_graph(3, np.array([[0, 1]]), cfg, np.zeros((2, 4)))


def _two_communities(n=60, seed=0):
  """Two dense halves (p = 0.4 inside, 0.01 across): links are predictable from membership."""
  rng = np.random.default_rng(seed)
  side = np.arange(n) // (n // 2)
  p = np.where(side[:, None] == side[None, :], 0.4, 0.01)
  return np.argwhere(np.triu(rng.random((n, n)) < p, 1))


class RunnerTest(absltest.TestCase):

  def test_overfit_two_communities(self):
    n = 60
    split = link_data.random_link_split(_two_communities(n), n, seed=0, name="two_communities")
    cfg = gae.GAEConfig(hidden=32, embedding_dim=32, batch_size=64, lr=0.01)
    runner = gae.GAERunner(split, cfg, seed=0)
    self.assertTrue(runner.dense)
    state = runner.init()
    self.assertEqual(runner.params(state)["embedding"].shape, (n, 32))
    before = _auc(runner.score(state, split.test_pos), runner.score(state, split.test_neg))
    losses = []
    for epoch in range(40):
      state, metrics = runner.train_epoch(state, epoch)
      losses.append(metrics["loss"])
    self.assertEqual(metrics["pairs"], 2 * split.train_pos.shape[0])
    # 315 train edges in batches of 64: the last is padded, yet the step compiled once.
    self.assertNotEqual(split.train_pos.shape[0] % 64, 0)
    self.assertEqual(runner._step._cache_size(), 1)  # pylint: disable=protected-access
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertAlmostEqual(losses[0], 2 * np.log(2), delta=0.05)  # BCE of near-zero logits
    self.assertLess(np.mean(losses[-5:]), losses[0] - 0.2)
    pos = runner.score(state, split.test_pos)
    neg = runner.score(state, split.test_neg)
    self.assertEqual((pos.shape, pos.dtype), ((split.test_pos.shape[0],), np.float32))
    auc = _auc(pos, neg)
    self.assertGreater(auc, 0.75)
    self.assertGreater(auc, before + 0.1)
    # Scoring in padded chunks: a subset's logits are the same rows of the whole set's.
    np.testing.assert_allclose(runner.score(state, split.test_pos[3:10]), pos[3:10], rtol=1e-6)
    self.assertEqual(runner.score(state, np.zeros((0, 2), np.int64)).shape, (0,))
    self.assertEqual(runner.score(state, split.test_neg[:6].reshape(2, 3, 2)).shape, (2, 3))
    with self.assertRaisesRegex(GraphError, "pair node ids"):
      runner.score(state, np.array([[0, n]]))
    # An epoch is a function of (seed, epoch) and the state.
    again, metrics_again = runner.train_epoch(state, 7)
    once_more, metrics_once_more = runner.train_epoch(state, 7)
    self.assertEqual(metrics_again["loss"], metrics_once_more["loss"])
    jax.tree.map(np.testing.assert_array_equal, runner.params(again), runner.params(once_more))

  def test_sparse_sage_dot_runs(self):
    n = 30
    split = link_data.random_link_split(_two_communities(n, seed=1), n, seed=1)
    features = np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32)
    split = dataclasses.replace(split, features=features)
    cfg = gae.GAEConfig(encoder="sage", decoder="dot", hidden=8, batch_size=1000,
                        adjacency="sparse", use_embedding=True, embedding_dim=4)
    runner = gae.GAERunner(split, cfg, seed=3)
    self.assertFalse(runner.dense)
    self.assertEqual(runner.batch, split.train_pos.shape[0])  # no padding to 1000
    state = runner.init()
    self.assertEqual(runner.params(state)["encoder"]["conv_0"]["lin_self"]["kernel"].shape,
                     (5 + 4, 8))
    state, metrics = runner.train_epoch(state, 0)
    self.assertTrue(np.isfinite(metrics["loss"]))
    self.assertTrue(np.all(np.isfinite(runner.score(state, split.valid_pos))))

  def test_no_train_edges(self):
    split = link_data.LinkSplit("empty", 3, np.zeros((0, 2), np.int64), np.zeros((0, 2)), None,
                                np.zeros((0, 2)), None)
    with self.assertRaisesRegex(GraphError, "no training edges"):
      gae.GAERunner(split, gae.GAEConfig(), seed=0)


class RealCoraTest(absltest.TestCase):

  def test_gcn_cora(self):
    root = str(testutil.require_shared("planetoid", "ind.cora.graph").parent)
    split = link_data.planetoid_link_split(planetoid.load_planetoid(root, "cora"), seed=0)
    cfg = gae.GAEConfig(hidden=64, num_layers=2)
    runner = gae.GAERunner(split, cfg, seed=0)
    self.assertTrue(runner.dense)
    self.assertNotIn("embedding", runner.params(runner.init()))  # Cora has features
    state = runner.init()
    losses = []
    for epoch in range(4):
      state, metrics = runner.train_epoch(state, epoch)
      losses.append(metrics["loss"])
    self.assertTrue(np.all(np.isfinite(losses)))
    pos = runner.score(state, split.test_pos)
    neg = runner.score(state, split.test_neg)
    self.assertEqual(pos.shape, (527,))
    self.assertTrue(np.all(np.isfinite(pos)) and np.all(np.isfinite(neg)))
    self.assertGreater(_auc(pos, neg), 0.5)


if __name__ == "__main__":
  absltest.main()
