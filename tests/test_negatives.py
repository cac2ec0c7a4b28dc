"""Training negatives (`graphs.negatives`) and per-group gradient clipping (`gae.clip_by_group`)."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
import optax

from graphs import gae
from graphs import link_data
from graphs import negatives
from graphs.errors import GraphError


class NegativeSamplerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # 6 nodes; every pair among 0..3 is an edge (each given once), plus 4-5.
    self.edges = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3], [4, 5]])

  def test_is_edge_either_direction(self):
    s = negatives.NegativeSampler(6, self.edges, "non_edge")
    got = s.is_edge(np.array([[1, 0], [0, 1], [3, 2], [5, 4], [0, 4], [3, 5], [2, 2]]))
    np.testing.assert_array_equal(got, [True, True, True, True, False, False, False])
    self.assertEqual(s.is_edge(np.zeros((0, 2), np.int64)).shape, (0,))

  def test_non_edge_draws_no_edge_and_no_self_pair(self):
    s = negatives.NegativeSampler(6, self.edges, "non_edge")
    pairs = s.sample(np.random.default_rng(0), 5000)
    self.assertEqual((pairs.shape, pairs.dtype), ((5000, 2), np.int32))
    self.assertFalse(s.is_edge(pairs).any())
    self.assertFalse((pairs[:, 0] == pairs[:, 1]).any())
    # 36 ordered pairs - 14 edge directions - 6 self pairs = 16 possible, all of them drawn.
    self.assertLen({tuple(p) for p in pairs.tolist()}, 16)

  def test_uniform_keeps_edges_and_is_seeded(self):
    s = negatives.NegativeSampler(6, self.edges, "uniform")
    pairs = s.sample(np.random.default_rng(1), 5000)
    hits = s.is_edge(pairs).mean()
    self.assertAlmostEqual(hits, 14 / 36, delta=0.03)  # the graph's density, ordered pairs
    np.testing.assert_array_equal(pairs, s.sample(np.random.default_rng(1), 5000))
    self.assertTrue((pairs >= 0).all() and (pairs < 6).all())

  def test_errors(self):
    with self.assertRaisesRegex(GraphError, "must be one of uniform, non_edge"):
      negatives.NegativeSampler(6, self.edges, "hard")
    with self.assertRaisesRegex(GraphError, r"edge node ids must lie in \[0, 6\)"):
      negatives.NegativeSampler(6, np.array([[0, 6]]), "non_edge")
    clique = np.argwhere(np.triu(np.ones((4, 4)), 1))
    with self.assertRaisesRegex(GraphError, "too dense"):
      negatives.NegativeSampler(4, clique, "non_edge").sample(np.random.default_rng(0), 10)


class ClipByGroupTest(absltest.TestCase):

  def test_each_group_clipped_alone(self):
    grads = {"embedding": jnp.full((4, 3), 10.0),                      # norm 34.6 -> 1
             "encoder": {"w": jnp.array([0.3, 0.4])},                 # norm 0.5, kept
             "gnn": {"embedding": jnp.array([3.0, 4.0]),               # its own group: 5 -> 1
                     "encoder": {"w": jnp.array([0.6]), "b": jnp.array([0.8])}}}  # norm 1
    out, _ = gae.clip_by_group(1.0).update(grads, optax.EmptyState())
    norm = lambda t: float(optax.tree.norm(t))
    self.assertAlmostEqual(norm(out["embedding"]), 1.0, places=5)
    np.testing.assert_allclose(out["encoder"]["w"], [0.3, 0.4], rtol=1e-6)
    self.assertAlmostEqual(norm(out["gnn"]["embedding"]), 1.0, places=5)
    np.testing.assert_allclose(out["gnn"]["embedding"], [0.6, 0.8], rtol=1e-5)
    np.testing.assert_allclose(out["gnn"]["encoder"]["w"], [0.6], rtol=1e-6)

  def test_runner_with_non_edge_negatives_and_clipping_learns(self):
    rng = np.random.default_rng(0)
    n = 60
    side = np.arange(n) // (n // 2)
    p = np.where(side[:, None] == side[None, :], 0.4, 0.01)
    edges = np.argwhere(np.triu(rng.random((n, n)) < p, 1))
    split = link_data.random_link_split(edges, n, seed=0, name="two_communities")
    cfg = gae.GAEConfig(hidden=32, embedding_dim=32, batch_size=64, lr=0.01,
                        neg_sampler="non_edge", grad_clip=1.0)
    runner = gae.GAERunner(split, cfg, seed=0)
    state = runner.init()
    losses = []
    for epoch in range(30):
      state, metrics = runner.train_epoch(state, epoch)
      losses.append(metrics["loss"])
    self.assertLess(np.mean(losses[-3:]), losses[0] - 0.2)
    pos = runner.score(state, split.test_pos)
    neg = runner.score(state, split.test_neg)
    self.assertGreater((pos[:, None] > neg[None, :]).mean(), 0.75)
    with self.assertRaisesRegex(GraphError, "grad_clip must be >= 0"):
      gae.GAEConfig(grad_clip=-1.0)
    with self.assertRaisesRegex(GraphError, "neg_sampler must be one of"):
      gae.GAEConfig(neg_sampler="hard")


if __name__ == "__main__":
  absltest.main()
