"""Device sampler: Pallas kernel == jnp reference == a plain-Python statement of the sampling rule."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import functools

import numpy as np

from graphs.errors import GraphError
from serving import device_sampler as ds
from serving import graph as graph_lib
from serving import rng
from serving import subgraph as subgraph_lib

# chi2.ppf(0.999, df=19) (scipy.stats), for the 20-cell uniformity test.
_CHI2_19_P001 = 43.820
# On a GPU (JAX_PLATFORMS=cuda) the tests run the compiled Triton kernel; elsewhere the interpreter.
_INTERPRET = jax.default_backend() != "gpu"


def floyd_positions(key, v, hop, degree, fanout):
  """The rule, one row, in plain Python (slot order)."""
  if degree <= fanout:
    return list(range(degree))
  chosen = []
  for i in range(fanout):
    j = degree - fanout + i
    t = int(rng.hash_u32(np.uint32(key), np.uint32(v), np.uint32(hop * rng.STREAM_STRIDE + i)))
    t %= j + 1
    chosen.append(j if t in chosen else t)
  return chosen


def python_sample(graph, seeds, key, fanouts):
  """The k-hop rule in plain Python: (nodes, senders, receivers) as lists."""
  nodes = [int(s) for s in seeds]
  local = {v: i for i, v in enumerate(nodes)}
  frontier = list(range(len(nodes)))
  senders, receivers = [], []
  for hop, k in enumerate(fanouts):
    nxt = []
    for lv in frontier:
      v = nodes[lv]
      lo, hi = int(graph.indptr[v]), int(graph.indptr[v + 1])
      for pos in floyd_positions(key, v, hop, hi - lo, k):
        u = int(graph.indices[lo + pos])
        if u not in local:
          local[u] = len(nodes)
          nodes.append(u)
          nxt.append(local[u])
        senders.append(local[u])
        receivers.append(lv)
    frontier = nxt
  return nodes, senders, receivers


@functools.lru_cache(maxsize=None)
def jitted_sample(fanouts, use_pallas):
  """One compile per (fanouts, path) across tests; the graph is an argument, not a constant."""
  return jax.jit(lambda dcsr, seeds, key: ds.sample(dcsr, seeds, key, fanouts,
                                                    use_pallas=use_pallas,
                                                    interpret=_INTERPRET))


def small_graph(seed=0, n=60, m=150):
  r = np.random.default_rng(seed)
  src, dst = r.integers(0, n, m), r.integers(0, n, m)
  # A hub (degree >> fanouts) and an isolated node (degree 0) make every branch of the rule run.
  hub = np.arange(1, n)
  src = np.concatenate([src, np.zeros(n - 1, np.int64)])
  dst = np.concatenate([dst, hub])
  keep = (src != n - 1) & (dst != n - 1)
  return graph_lib.from_edges(src[keep], dst[keep], num_nodes=n, symmetric=True,
                              drop_self_loops=True)


class KernelTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("k1_hop0", 1, 0), ("k5_hop2", 5, 2), ("k15_hop1", 15, 1))
  def test_kernel_matches_reference_and_rule(self, fanout, hop):
    r = np.random.default_rng(fanout)
    special = [0, 1, fanout - 1, fanout, fanout + 1, 2 * fanout, 1000, 2**31 - 1]
    degree = np.concatenate([special, r.integers(0, 4 * fanout, 120),
                             r.integers(0, 10**7, 60)]).astype(np.int32)
    degree = np.maximum(degree, 0)
    nodes = r.integers(0, 2**31 - 1, degree.size).astype(np.int32)
    start = r.integers(0, 1000, degree.size).astype(np.int32)
    key = np.uint32(0xDEADBEEF)
    args = (jnp.asarray(start), jnp.asarray(degree), jnp.asarray(nodes), key, hop, fanout)
    got = np.asarray(ds.sample_rows(*args, block_rows=64, interpret=_INTERPRET))
    ref = np.asarray(jax.jit(ds.sample_rows_reference, static_argnums=(4, 5))(*args))
    self.assertEqual(got.shape, (degree.size, fanout))
    self.assertEqual(got.dtype, np.int32)
    np.testing.assert_array_equal(got, ref)
    for row in range(degree.size):
      want = floyd_positions(key, int(nodes[row]), hop, int(degree[row]), fanout)
      want = want + [-1] * (fanout - len(want))
      np.testing.assert_array_equal(ref[row], want, err_msg=f"row {row} degree {degree[row]}")
      real = ref[row][ref[row] >= 0]
      self.assertEqual(len(set(real.tolist())), real.size)  # without replacement
      self.assertTrue(np.all(real < degree[row]))

  def test_triton_lowering(self):
    """The kernel lowers to a Triton custom call for CUDA (no GPU needed to build the TTIR)."""
    if ds.pltriton is None:
      self.skipTest("this jax has no Pallas Triton backend")
    deg = jnp.arange(300, dtype=jnp.int32)
    f = jax.jit(lambda d, n, k: ds.sample_rows(d, d, n, k, 1, 5, interpret=False))
    try:
      lowered = f.trace(deg, deg, jnp.uint32(3)).lower(lowering_platforms=("cuda",))
    except Exception as e:  # pylint: disable=broad-except
      if "triton" in str(e).lower() and "not" in str(e).lower():
        self.skipTest(f"no Triton lowering in this jaxlib: {e}")
      raise
    self.assertIn("triton", lowered.as_text()[:20000])

  def test_uniform(self):
    """Over many keys, each of 20 neighbours is drawn with probability 5/20."""
    d, k, trials = 20, 5, 20000
    keys = jnp.arange(trials, dtype=jnp.uint32)
    one = lambda key: ds.sample_rows_reference(
        jnp.zeros(1, jnp.int32), jnp.full(1, d, jnp.int32), jnp.full(1, 12345, jnp.int32),
        key, 0, k)[0]
    pos = np.asarray(jax.jit(jax.vmap(one))(keys))
    self.assertTrue(np.all(np.sort(pos, 1)[:, 1:] != np.sort(pos, 1)[:, :-1]))
    counts = np.bincount(pos.ravel(), minlength=d)
    p = k / d
    # Draws without replacement: the counts' covariance is N p (1-p) d/(d-1) (I - 11^T/d), so
    # this Pearson-style statistic is chi-square with d-1 = 19 degrees of freedom.
    stat = np.sum((counts - trials * p) ** 2) / (trials * p * (1 - p) * d / (d - 1))
    self.assertLess(stat, _CHI2_19_P001, msg=f"counts {counts}")
    # The kernel draws the same: spot-check a few keys through it.
    for key in (0, 7, 19999):
      got = ds.sample_rows(jnp.zeros(1, jnp.int32), jnp.full(1, d, jnp.int32),
                           jnp.full(1, 12345, jnp.int32), np.uint32(key), 0, k,
                           interpret=_INTERPRET)
      np.testing.assert_array_equal(np.asarray(got)[0], pos[key])


class SampleTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.graph = small_graph()
    cls.dcsr = graph_lib.to_device(cls.graph)

  def test_graph_has_every_case(self):
    deg = self.graph.degrees()
    self.assertEqual(deg[59], 0)
    self.assertGreater(deg[0], 50)
    self.assertGreater(np.sum((deg > 0) & (deg < 4)), 5)  # degree < fanout: take all

  @parameterized.named_parameters(("pallas", True), ("jnp", False))
  def test_matches_python_rule(self, use_pallas):
    fanouts = (4, 3, 2)
    seeds = np.array([0, 5, 59, 17, 33, -1, -1, -1], np.int32)  # 59 is isolated, 0 is a hub
    f = jitted_sample(fanouts, use_pallas)
    for key in (12345, 0xFFFFFFFF):
      got = jax.tree.map(np.asarray, f(self.dcsr, jnp.asarray(seeds), np.uint32(key)))
      nodes, senders, receivers = python_sample(self.graph, seeds[:5], key, fanouts)
      max_nodes, max_edges = subgraph_lib.caps(seeds.size, fanouts)
      n, e = len(nodes), len(senders)
      self.assertEqual(got.nodes.shape, (max_nodes,))
      self.assertEqual(got.senders.shape, (max_edges,))
      self.assertEqual((int(got.num_nodes), int(got.num_edges), int(got.num_seeds)), (n, e, 5))
      np.testing.assert_array_equal(got.nodes, nodes + [-1] * (max_nodes - n))
      np.testing.assert_array_equal(got.senders, senders + [max_nodes - 1] * (max_edges - e))
      np.testing.assert_array_equal(got.receivers, receivers + [max_nodes - 1] * (max_edges - e))
      np.testing.assert_array_equal(got.node_mask, np.arange(max_nodes) < n)
      np.testing.assert_array_equal(got.edge_mask, np.arange(max_edges) < e)
      for dt in (got.nodes, got.senders, got.receivers, got.num_nodes, got.num_edges):
        self.assertEqual(dt.dtype, np.int32)
      # Every sampled edge is a real edge of the graph, and nodes are distinct.
      for s, r in subgraph_lib.edge_set(got):
        self.assertIn(s, self.graph.neighbors(r).tolist())
      self.assertEqual(len(set(nodes)), n)

  def test_different_keys_differ(self):
    seeds = jnp.array([0, 1, 2, 3, 4, -1, -1, -1], jnp.int32)
    f = functools.partial(jitted_sample((4, 3, 2), False), self.dcsr, seeds)
    a, b = f(np.uint32(1)), f(np.uint32(2))
    self.assertNotEqual(subgraph_lib.edge_set(a), subgraph_lib.edge_set(b))
    c = f(np.uint32(1))
    np.testing.assert_array_equal(np.asarray(a.nodes), np.asarray(c.nodes))

  def test_matches_host_sampler(self):
    """Same arrays as the numba host sampler (written independently from the same rule)."""
    try:
      from serving import host_sampler  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      self.skipTest(f"host sampler unavailable: {e}")
    g = graph_lib.rmat(9, 3000, seed=3)
    host = host_sampler.HostSampler(g, (4, 3, 2), warmup=False)
    f = jitted_sample((4, 3, 2), False)
    dcsr = graph_lib.to_device(g)
    r = np.random.default_rng(0)
    for _ in range(4):
      seeds = r.choice(g.num_nodes, int(r.integers(1, 9)), replace=False).astype(np.int32)
      key = int(r.integers(0, 2**32))
      nodes, senders, receivers = host.sample_arrays(seeds, key)
      padded = np.full(8, -1, np.int32)
      padded[:seeds.size] = seeds
      got = f(dcsr, jnp.asarray(padded), np.uint32(key))
      n, e = int(got.num_nodes), int(got.num_edges)
      self.assertEqual((n, e), (nodes.size, senders.size))
      np.testing.assert_array_equal(np.asarray(got.nodes)[:n], nodes)
      np.testing.assert_array_equal(np.asarray(got.senders)[:e], senders)
      np.testing.assert_array_equal(np.asarray(got.receivers)[:e], receivers)

  def test_caps_below_worst_case_rejected(self):
    with self.assertRaisesRegex(GraphError, "worst case"):
      ds.sample(self.dcsr, jnp.array([0, 1], jnp.int32), 0, (2, 2), max_nodes=5)

  def test_sampler_compiles_once_per_bucket(self):
    sampler = ds.DeviceSampler(self.graph, (3,), use_pallas=False)
    self.assertEqual(sampler.interpret, _INTERPRET)  # interpreted unless on a GPU
    for i, seeds in enumerate(([0], [1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11])):
      out = sampler.sample(seeds, key=i)
      self.assertEqual(out.nodes.shape[0], subgraph_lib.caps(8, (3,))[0])
      nodes, senders, _ = python_sample(self.graph, seeds, i, (3,))
      np.testing.assert_array_equal(np.asarray(out.nodes)[:len(nodes)], nodes)
      self.assertEqual(int(out.num_edges), len(senders))
    self.assertEqual(sampler.num_traces, 1)
    out = sampler.sample(np.arange(9), key=3)  # bucket 16
    self.assertEqual(out.nodes.shape[0], subgraph_lib.caps(16, (3,))[0])
    self.assertEqual(sampler.num_traces, 2)
    sampler.sample(np.arange(20, 30), key=4)
    self.assertEqual(sampler.num_traces, 2)

  def test_sampler_rejects_bad_seeds(self):
    sampler = ds.DeviceSampler(self.graph, (2,), use_pallas=False)
    with self.assertRaisesRegex(GraphError, "distinct"):
      sampler.sample([1, 1], key=0)
    with self.assertRaisesRegex(GraphError, "not a node id"):
      sampler.sample([1, 60], key=0)


if __name__ == "__main__":
  absltest.main()
