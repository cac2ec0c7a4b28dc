"""graphs/sage.py: GraphSAGE-mean by hand and against numpy, padding, jit, sampled inference."""

import dataclasses
import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from graphs import sage
from graphs.errors import GraphError
from serving import graph as csr_graph
from serving import model as served
from serving import subgraph


# One compile per shape and config, instead of op-by-op dispatch (much slower on a busy CPU).
_apply = jax.jit(sage.apply, static_argnames=("cfg", "train"))


def _init(cfg, seed):
  """Random params (biases too) in `sage.init`'s tree, without compiling the initialisers."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(functools.partial(sage.init, cfg), jax.random.key(0))
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(scale=0.5, size=a.shape), a.dtype),
                      abstract)


def _graph(x, senders, receivers):
  return jraph.GraphsTuple(
      nodes=jnp.asarray(x, jnp.float32), edges=None, senders=jnp.asarray(senders, jnp.int32),
      receivers=jnp.asarray(receivers, jnp.int32), n_node=jnp.array([len(x)]),
      n_edge=jnp.array([len(senders)]), globals=None)


def _reference(params, x, senders, receivers, cfg):
  """Dense numpy GraphSAGE-mean: the model's equations, written out once more."""
  p = jax.tree.map(np.asarray, params)["params"]
  n = x.shape[0]
  adj = np.zeros((n, n))
  np.add.at(adj, (receivers, senders), 1.0)  # row v counts its in-neighbours (with multiplicity)
  mean_op = adj / np.maximum(adj.sum(1, keepdims=True), 1.0)
  h = np.asarray(x, np.float64)
  emb = h
  for i in range(cfg.num_layers):
    layer = p[f"conv_{i}"]
    if i == cfg.num_layers - 1:
      emb = h
    h = (h @ layer["lin_self"]["kernel"] + layer["lin_self"]["bias"]
         + mean_op @ h @ layer["lin_neigh"]["kernel"])
    if i < cfg.num_layers - 1:
      h = np.maximum(h, 0)
      if cfg.normalize:
        h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
  return h, emb


def _random_graph(rng, n, e, f):
  x = rng.normal(size=(n, f)).astype(np.float32)
  return x, rng.integers(0, n, e), rng.integers(0, n, e)


def full_khop_sample(csr, seeds, hops, max_nodes, max_edges) -> subgraph.SampledSubgraph:
  """Every neighbour of every node within `hops - 1` hops of the seeds, in the sampler layout
  (`serving/subgraph.py`): what a sampler returns when each fanout exceeds every degree.
  (Written here, not taken from serving/host_sampler.py, so the model test stands alone.)"""
  local = {int(s): i for i, s in enumerate(seeds)}
  nodes, senders, receivers = [int(s) for s in seeds], [], []
  frontier = list(range(len(seeds)))
  for _ in range(hops):
    reached = []
    for v in frontier:
      for u in csr.neighbors(nodes[v]).tolist():
        if u not in local:
          local[u] = len(nodes)
          nodes.append(u)
          reached.append(local[u])
        senders.append(local[u])
        receivers.append(v)
    frontier = reached  # a node is expanded once, at the hop after it is first reached
  n, e = len(nodes), len(senders)
  assert n < max_nodes and e <= max_edges, (n, e)
  pad_node = max_nodes - 1
  return subgraph.SampledSubgraph(
      nodes=np.array(nodes + [-1] * (max_nodes - n), np.int32),
      senders=np.array(senders + [pad_node] * (max_edges - e), np.int32),
      receivers=np.array(receivers + [pad_node] * (max_edges - e), np.int32),
      node_mask=np.arange(max_nodes) < n, edge_mask=np.arange(max_edges) < e,
      num_nodes=np.int32(n), num_edges=np.int32(e), num_seeds=np.int32(len(seeds)))


class SageTest(parameterized.TestCase):

  def test_hand_computed_one_layer(self):
    # Edges 0->2, 1->2, 2->0: node 2 averages x0 and x1, node 0 copies x2, node 1 hears nothing.
    cfg = sage.SageConfig(num_features=2, num_classes=2, num_layers=1, dropout=0.0)
    params = {"params": {"conv_0": {
        "lin_self": {"kernel": jnp.eye(2), "bias": jnp.array([0.1, -0.1])},
        "lin_neigh": {"kernel": 2 * jnp.eye(2)}}}}
    x = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    logits, emb = sage.apply(params, _graph(x, [0, 1, 2], [2, 2, 0]), cfg)
    # 0: [1,0] + 2*[1,1] + b;  1: [0,1] + 0 + b;  2: [1,1] + 2*[.5,.5] + b.
    np.testing.assert_allclose(logits, [[3.1, 1.9], [0.1, 0.9], [2.1, 1.9]], rtol=1e-6)
    np.testing.assert_allclose(emb, x)  # one layer: the embedding is the input

  def test_parameter_tree(self):
    cfg = sage.SageConfig(num_features=5, num_classes=3, hidden=4, num_layers=3)
    real = jax.tree.map(lambda a: (a.shape, a.dtype), sage.init(cfg, jax.random.key(0)))
    abstract = jax.eval_shape(functools.partial(sage.init, cfg), jax.random.key(0))
    self.assertEqual(real, jax.tree.map(lambda a: (a.shape, a.dtype), abstract))
    shapes = jax.tree.map(lambda a: a[0], real, is_leaf=lambda a: isinstance(a, tuple))["params"]
    self.assertEqual(shapes["conv_0"], {"lin_self": {"kernel": (5, 4), "bias": (4,)},
                                        "lin_neigh": {"kernel": (5, 4)}})
    self.assertEqual(shapes["conv_1"]["lin_neigh"]["kernel"], (4, 4))
    self.assertEqual(shapes["conv_2"]["lin_self"]["kernel"], (4, 3))
    with self.assertRaises(GraphError):
      sage.SageConfig(num_features=5, num_classes=3, num_layers=0)
    with self.assertRaises(GraphError):
      sage.SageConfig(num_features=5, num_classes=3, dropout=1.0)

  @parameterized.named_parameters(
      ("two_layers", 2, False, 6), ("three_layers_l2", 3, True, 6),
      ("wide_hidden", 2, False, 16))  # hidden > F: the aggregate-then-project branch
  def test_matches_numpy(self, layers, normalize, hidden):
    rng = np.random.default_rng(0)
    x, s, r = _random_graph(rng, 12, 40, 10)
    cfg = sage.SageConfig(num_features=10, num_classes=3, hidden=hidden, num_layers=layers,
                          normalize=normalize)
    params = _init(cfg, 1)
    logits, emb = _apply(params, _graph(x, s, r), cfg=cfg)
    want_logits, want_emb = _reference(params, x, s, r, cfg)
    np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(emb, want_emb, atol=1e-5, rtol=1e-5)
    self.assertEqual(emb.shape, (12, hidden))

  def test_padding_does_not_change_real_nodes(self):
    rng = np.random.default_rng(1)
    x, s, r = _random_graph(rng, 9, 30, 4)
    cfg = sage.SageConfig(num_features=4, num_classes=3, hidden=8)
    params = _init(cfg, 0)
    want, _ = _apply(params, _graph(x, s, r), cfg=cfg)

    # jraph's own padding (padding nodes, edges and a padding graph) with its edge mask.
    padded = jraph.pad_with_graphs(_graph(x, s, r), n_node=16, n_edge=64, n_graph=2)
    got, _ = _apply(params, padded, cfg=cfg, edge_mask=jraph.get_edge_padding_mask(padded))
    np.testing.assert_allclose(got[:9], want, atol=1e-6)

    # Padded edges aimed at real nodes (node 0 receives from a padding node with large
    # features): only the mask keeps them out of the mean and out of the degree.
    xp = np.concatenate([x, [[np.inf] * 4, [np.nan] * 4, [100.0] * 4]]).astype(np.float32)
    sp = np.concatenate([s, [9, 10, 11, 9]])
    rp = np.concatenate([r, [0, 0, 5, 1]])
    mask = np.arange(sp.size) < s.size
    got, _ = _apply(params, _graph(xp, sp, rp), cfg=cfg, edge_mask=jnp.asarray(mask))
    np.testing.assert_allclose(got[:9], want, atol=1e-6)
    unmasked, _ = _apply(params, _graph(xp, sp, rp), cfg=cfg)
    self.assertFalse(np.allclose(unmasked[0], want[0]))  # the mask is what keeps them out

  def test_normalize_gradient_finite_at_dead_rows(self):
    # Every hidden row is 0 (negative bias, zero features): the L2 step must not make NaN grads.
    cfg = sage.SageConfig(num_features=3, num_classes=2, hidden=4, normalize=True, dropout=0.0)
    params = _init(cfg, 0)
    params["params"]["conv_0"]["lin_self"]["bias"] = -jnp.ones(4)
    g = _graph(np.zeros((4, 3), np.float32), [0, 1, 2], [1, 2, 3])
    grads = jax.jit(jax.grad(lambda p: _apply(p, g, cfg=cfg)[0].sum()))(params)
    self.assertTrue(all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(grads)))

  def test_jit_and_dropout(self):
    rng = np.random.default_rng(2)
    x, s, r = _random_graph(rng, 10, 25, 6)
    cfg = sage.SageConfig(num_features=6, num_classes=2, hidden=8, dropout=0.5)
    params = _init(cfg, 0)
    g = _graph(x, s, r)
    eager, _ = sage.apply(params, g, cfg)
    jitted, _ = jax.jit(lambda p, g: sage.apply(p, g, cfg))(params, g)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    train_fn = jax.jit(lambda p, g, k: sage.apply(p, g, cfg, train=True, rng=k)[0])
    a, b = train_fn(params, g, jax.random.key(1)), train_fn(params, g, jax.random.key(2))
    self.assertFalse(np.allclose(a, b))
    np.testing.assert_allclose(train_fn(params, g, jax.random.key(1)), a)  # seeded
    with self.assertRaisesRegex(ValueError, "rng"):
      sage.apply(params, g, cfg, train=True)

  @parameterized.named_parameters(("two_hops", 2), ("three_hops", 3))
  def test_full_neighbourhood_sample_matches_full_graph(self, layers):
    # A skewed R-MAT graph; the sample holds every neighbour out to `layers` hops, so each seed's
    # receptive field is complete and its output must equal the full-graph output.
    csr = csr_graph.rmat(scale=7, num_edges=300, seed=3)
    num_nodes = csr.num_nodes
    rng = np.random.default_rng(3)
    features = rng.normal(size=(num_nodes, 5)).astype(np.float32)
    cfg = sage.SageConfig(num_features=5, num_classes=4, hidden=8, num_layers=layers,
                          normalize=True)
    params = _init(cfg, 4)
    receivers = np.repeat(np.arange(num_nodes), csr.degrees())
    full, _ = _apply(params, sage.full_graph(features, csr.indices, receivers), cfg=cfg)

    seeds = np.array([int(csr.degrees().argmax()), 5, 17, 64])  # includes the hub
    sample = full_khop_sample(csr, seeds, layers, max_nodes=num_nodes + 1,
                               max_edges=subgraph.bucket(csr.num_edges * layers))
    # The server's forward (serving/model.py), jitted as the engine does; padding rows get
    # garbage features to show they cannot leak in.
    x = np.where(sample.node_mask[:, None], features[np.maximum(sample.nodes, 0)], 1e3)
    forward = jax.jit(served.make_forward({"model": dataclasses.asdict(cfg)}))
    got, _ = forward(params, sample, x)
    np.testing.assert_allclose(got[:len(seeds)], full[seeds], atol=1e-5)
    # jraph's padding mask (graph 1 is padding in to_graphs_tuple) selects the same edges.
    graph = subgraph.to_graphs_tuple(sample, x)
    np.testing.assert_array_equal(jraph.get_edge_padding_mask(graph), sample.edge_mask)
    # A sample one hop short changes the seeds' outputs: the equality above is not vacuous.
    short = full_khop_sample(csr, seeds, layers - 1, max_nodes=num_nodes + 1,
                             max_edges=subgraph.bucket(csr.num_edges * layers))
    xs = features[np.maximum(short.nodes, 0)] * short.node_mask[:, None]
    got_short, _ = forward(params, short, xs)
    self.assertGreater(float(jnp.abs(got_short[:len(seeds)] - full[seeds]).max()), 1e-4)


if __name__ == "__main__":
  absltest.main()
