"""Enclosing subgraphs and structural labels: hand-drawn graphs with hand-computed subgraphs, path
counts and DRNL labels; the target edge removed; per-hop caps respected and seeded; the parallel
code against a plain-Python reference on a random graph; power-of-two padding."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from graphs import enclosing
from graphs.errors import GraphError


def make_csr(num_nodes, edges):
  """Symmetric CSR (rows sorted) of an undirected edge list."""
  edges = np.asarray(edges, np.int64).reshape(-1, 2)
  src = np.concatenate([edges[:, 0], edges[:, 1]])
  dst = np.concatenate([edges[:, 1], edges[:, 0]])
  order = np.lexsort((dst, src))
  indptr = np.zeros(num_nodes + 1, np.int64)
  np.add.at(indptr, src + 1, 1)
  return np.cumsum(indptr), dst[order]


def edge_set(sub, p):
  """Edges of subgraph p as a set of (global sender, global receiver)."""
  nodes, senders, receivers = sub.subgraph(p)
  return {(int(nodes[s]), int(nodes[r])) for s, r in zip(senders, receivers)}


# --- plain-Python reference --------------------------------------------------------------------


def ref_extract(num_nodes, edges, u, v, num_hops, cap, seed, remove):
  adj = [set() for _ in range(num_nodes)]
  for a, b in edges:
    if a != b:
      adj[a].add(b)
      adj[b].add(a)
  nodes, taken, frontier = [u, v], {u, v}, [u, v]
  for h in range(1, num_hops + 1):
    cand = sorted({w for f in frontier for w in adj[f]} - taken)
    taken |= set(cand)  # visited even if the cap drops it (SEAL)
    if cap is not None and len(cand) > cap:
      for i in range(cap):
        j = i + int(enclosing.draw(seed, u, v, h, i)) % (len(cand) - i)
        cand[i], cand[j] = cand[j], cand[i]
      cand = sorted(cand[:cap])
    if not cand:
      break
    nodes += cand
    frontier = cand
  local = {g: i for i, g in enumerate(nodes)}
  sub_edges = set()
  for a in nodes:
    for b in adj[a]:
      if b in local and not (remove and {a, b} == {u, v}):
        sub_edges.add((local[a], local[b]))
  return nodes, sub_edges


def ref_paths(n, sub_edges, lam):
  """c_w^(l) by enumerating every simple u-v path (local 0 -> 1) of length <= lam."""
  adj = [[] for _ in range(n)]
  for a, b in sub_edges:
    adj[a].append(b)
  counts = np.zeros((n, lam), np.int64)

  def walk(path):
    x = path[-1]
    if x == 1:
      for w in path:
        counts[w, len(path) - 2] += 1
      return
    if len(path) - 1 == lam:
      return
    for y in adj[x]:
      if y not in path:
        walk(path + [y])

  walk([0])
  return counts


def ref_drnl(n, sub_edges):
  adj = [[] for _ in range(n)]
  for a, b in sub_edges:
    adj[a].append(b)

  def bfs(src, blocked):
    dist, queue = {src: 0}, [src]
    for x in queue:
      for y in adj[x]:
        if y != blocked and y not in dist:
          dist[y] = dist[x] + 1
          queue.append(y)
    return dist

  du, dv = bfs(0, 1), bfs(1, 0)
  labels = [1, 1]
  for w in range(2, n):
    if w in du and w in dv:
      d = du[w] + dv[w]
      labels.append(1 + min(du[w], dv[w]) + (d // 2) * ((d // 2) + (d % 2) - 1))
    else:
      labels.append(0)
  return np.array(labels)


# --- hand-drawn graphs -------------------------------------------------------------------------

CYCLE4 = [(0, 1), (1, 2), (2, 3), (3, 0)]
PATH5 = [(0, 1), (1, 2), (2, 3), (3, 4)]
TRIANGLE_TAIL = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4)]
# Hub 0 joined to leaves 1..10, plus a detour 1-3-2 between two leaves.
HUB = [(0, i) for i in range(1, 11)] + [(1, 3), (3, 2)]


class HandDrawnTest(parameterized.TestCase):

  def test_four_cycle(self):
    sub = enclosing.extract(*make_csr(4, CYCLE4), [[0, 1]], num_hops=1)
    np.testing.assert_array_equal(sub.nodes, [0, 1, 2, 3])
    np.testing.assert_array_equal(sub.hops, [0, 0, 1, 1])
    # The target edge 0-1 is gone in both directions; the other three edges stay, both ways.
    self.assertEqual(edge_set(sub, 0), {(1, 2), (2, 1), (2, 3), (3, 2), (3, 0), (0, 3)})
    # Only path: 0-3-2-1 (length 3), through every node.
    np.testing.assert_array_equal(enclosing.path_counts(sub, 3), [[0, 0, 1]] * 4)
    # Node 2: d_u = 2 (0-3-2 with 1 removed), d_v = 1 -> 1 + 1 + 1 * (1 + 1 - 1) = 3; node 3 alike.
    np.testing.assert_array_equal(enclosing.drnl_labels(sub), [1, 1, 3, 3])

  def test_four_cycle_keeping_target_edge(self):
    sub = enclosing.extract(*make_csr(4, CYCLE4), [[0, 1]], num_hops=1, remove_target_edge=False)
    self.assertIn((0, 1), edge_set(sub, 0))
    self.assertIn((1, 0), edge_set(sub, 0))
    np.testing.assert_array_equal(enclosing.path_counts(sub, 3),
                                  [[1, 0, 1], [1, 0, 1], [0, 0, 1], [0, 0, 1]])

  def test_path_graph(self):
    csr = make_csr(5, PATH5)
    sub = enclosing.extract(*csr, [[1, 3], [0, 4]], num_hops=2)
    nodes0, _, _ = sub.subgraph(0)
    np.testing.assert_array_equal(nodes0, [1, 3, 0, 2, 4])
    # Pair (0, 4): hop 1 = {1, 3}, hop 2 = {2}.
    nodes1, _, _ = sub.subgraph(1)
    np.testing.assert_array_equal(nodes1, [0, 4, 1, 3, 2])
    np.testing.assert_array_equal(sub.hops[sub.node_offsets[1]:], [0, 0, 1, 1, 2])
    counts = enclosing.path_counts(sub, 4)
    # (1, 3): the path 1-2-3 of length 2; nodes 0 and 4 lie on no path.
    np.testing.assert_array_equal(counts[:5], [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0],
                                               [0, 1, 0, 0], [0, 0, 0, 0]])
    # (0, 4): the whole path, length 4.
    np.testing.assert_array_equal(counts[5:], [[0, 0, 0, 1]] * 5)
    labels = enclosing.drnl_labels(sub)
    # (1, 3): node 2 has d_u = d_v = 1 -> 2; node 0 cannot reach 3 without passing 1 -> 0.
    np.testing.assert_array_equal(labels[:5], [1, 1, 0, 2, 0])
    # (0, 4): nodes 1, 3 at (1, 3) -> 4; node 2 at (2, 2) -> 5.
    np.testing.assert_array_equal(labels[5:], [1, 1, 4, 4, 5])

  def test_triangle_with_tail(self):
    csr = make_csr(5, TRIANGLE_TAIL)
    sub = enclosing.extract(*csr, [[0, 3], [0, 1]], num_hops=1)
    nodes0, _, _ = sub.subgraph(0)
    np.testing.assert_array_equal(nodes0, [0, 3, 1, 2, 4])
    counts = enclosing.path_counts(sub, 3)
    # (0, 3): paths 0-2-3 (length 2) and 0-1-2-3 (length 3).
    np.testing.assert_array_equal(counts[:5], [[0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1],
                                               [0, 0, 0]])
    feats = enclosing.path_label_features(counts, 3)
    self.assertEqual(feats.shape, (counts.shape[0], 4))
    np.testing.assert_array_equal(feats[:5].argmax(1), [2, 2, 1, 2, 0])
    per_length = enclosing.path_label_features(counts, 3, per_length=True)
    self.assertEqual(per_length.shape, (counts.shape[0], 12))
    np.testing.assert_array_equal(per_length[2].reshape(3, 4).argmax(1), [0, 0, 1])
    labels = enclosing.drnl_labels(sub)
    # Node 1: d_u = 1, d_v = 2 (1-2-3) -> 3; node 2: (1, 1) -> 2; node 4 only touches v -> 0.
    np.testing.assert_array_equal(labels[:5], [1, 1, 3, 2, 0])
    # (0, 1), 1 hop: nodes 0, 1, 2; path 0-2-1; (DRNL 2 for node 2).
    np.testing.assert_array_equal(sub.subgraph(1)[0], [0, 1, 2])
    np.testing.assert_array_equal(counts[5:], [[0, 1, 0]] * 3)
    np.testing.assert_array_equal(labels[5:], [1, 1, 2])

  def test_triangle_tail_two_hops_drnl(self):
    sub = enclosing.extract(*make_csr(5, TRIANGLE_TAIL), [[0, 1]], num_hops=2)
    np.testing.assert_array_equal(sub.nodes, [0, 1, 2, 3])
    # Node 3 at d_u = d_v = 2 -> 1 + 2 + 2 * (2 + 0 - 1) = 5, as in SEAL's table.
    np.testing.assert_array_equal(enclosing.drnl_labels(sub), [1, 1, 2, 5])

  def test_hub(self):
    sub = enclosing.extract(*make_csr(11, HUB), [[1, 2]], num_hops=1)
    np.testing.assert_array_equal(sub.nodes, [1, 2, 0, 3])
    counts = enclosing.path_counts(sub, 4)
    # 1-0-2, 1-3-2 (length 2); 1-0-3-2, 1-3-0-2 (length 3); leaves are not in the 1-hop subgraph.
    np.testing.assert_array_equal(counts, [[0, 2, 2, 0], [0, 2, 2, 0], [0, 1, 2, 0],
                                           [0, 1, 2, 0]])
    np.testing.assert_array_equal(enclosing.path_label_features(counts, 4).argmax(1),
                                  [4, 4, 3, 3])
    np.testing.assert_array_equal(enclosing.drnl_labels(sub), [1, 1, 2, 2])

  def test_drnl_formula_matches_seal_table(self):
    # (d_u, d_v) -> label from SEAL's definition: (1,1)=2, (1,2)=3, (1,3)=4, (2,2)=5, (1,4)=6,
    # (2,3)=7. A path graph u - a - b - c - v (pair at distance 4, other edges none) yields
    # (1,3), (2,2), (3,1); a pendant on a gives (2, 4) -> 1 + 2 + 3 * (3 + 0 - 1) = 9.
    sub = enclosing.extract(*make_csr(6, [(0, 2), (2, 3), (3, 4), (4, 1), (2, 5)]), [[0, 1]],
                            num_hops=3)
    labels = dict(zip(sub.nodes.tolist(), enclosing.drnl_labels(sub).tolist()))
    self.assertEqual(labels, {0: 1, 1: 1, 2: 4, 4: 4, 3: 5, 5: 9})


class CapTest(absltest.TestCase):

  def test_cap_respected_and_seeded(self):
    csr = make_csr(11, HUB)
    # Pair (1, 2): hop 1 = {0, 3}; hop 2 = leaves 4..10 (7 candidates), capped at 3.
    samples = []
    for seed in range(40):
      sub = enclosing.extract(*csr, [[1, 2]], num_hops=2, max_nodes_per_hop=3, seed=seed)
      again = enclosing.extract(*csr, [[1, 2]], num_hops=2, max_nodes_per_hop=3, seed=seed)
      np.testing.assert_array_equal(sub.nodes, again.nodes)
      np.testing.assert_array_equal(sub.senders, again.senders)
      np.testing.assert_array_equal(sub.nodes[:4], [1, 2, 0, 3])
      hop2 = sub.nodes[4:]
      self.assertLen(hop2, 3)
      self.assertTrue(set(hop2.tolist()) <= set(range(4, 11)))
      self.assertTrue(np.all(np.diff(hop2) > 0))
      samples.append(tuple(hop2))
    # Different seeds give different samples, and every candidate is drawn at some point.
    self.assertGreater(len(set(samples)), 10)
    self.assertEqual(set(np.concatenate(samples).tolist()), set(range(4, 11)))

  def test_capped_candidates_stay_visited(self):
    # Pair (0, 1) with 1 a leaf of 0; hop 1 candidates {2, 3}, joined by an edge. With a cap of 1
    # the dropped one is still visited (SEAL), so it does not come back at hop 2.
    csr = make_csr(4, [(0, 1), (0, 2), (0, 3), (2, 3)])
    for seed in range(6):
      sub = enclosing.extract(*csr, [[0, 1]], num_hops=2, max_nodes_per_hop=1, seed=seed)
      self.assertLen(sub.nodes, 3)
      np.testing.assert_array_equal(sub.hops, [0, 0, 1])

  def test_sample_independent_of_batch_position(self):
    csr = make_csr(11, HUB)
    alone = enclosing.extract(*csr, [[1, 2]], num_hops=2, max_nodes_per_hop=2, seed=7)
    batch = enclosing.extract(*csr, [[5, 6], [1, 2]], num_hops=2, max_nodes_per_hop=2, seed=7)
    np.testing.assert_array_equal(alone.nodes, batch.subgraph(1)[0])


class ReferenceTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("one_hop_no_cap", 1, None, True, 64),
      ("two_hops_capped", 2, 6, True, 64),
      ("two_hops_keep_edge", 2, 4, False, 64),
      ("binary_search_membership", 2, 6, True, 0),
  )
  def test_matches_reference_on_random_graph(self, num_hops, cap, remove, dense_ratio):
    # dense_ratio 0 forces the binary-search membership test that large sparse graphs take.
    self.enter_context(mock.patch.object(enclosing, "_DENSE_TABLE_RATIO", dense_ratio))
    rng = np.random.default_rng(0)
    n = 40
    mask = np.triu(rng.random((n, n)) < 0.12, 1)
    edges = np.argwhere(mask)
    csr = make_csr(n, edges)
    pairs = np.concatenate([edges[:15], rng.integers(0, n, (40, 2))])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    sub = enclosing.extract(*csr, pairs, num_hops=num_hops, max_nodes_per_hop=cap, seed=3,
                            remove_target_edge=remove)
    counts = {lam: enclosing.path_counts(sub, lam) for lam in (2, 3, 4)}
    drnl = enclosing.drnl_labels(sub)
    for p, (u, v) in enumerate(pairs.tolist()):
      nodes, ref_edges = ref_extract(n, edges.tolist(), u, v, num_hops, cap, 3, remove)
      got_nodes, senders, receivers = sub.subgraph(p)
      np.testing.assert_array_equal(got_nodes, nodes)
      self.assertEqual(set(zip(senders.tolist(), receivers.tolist())), ref_edges)
      self.assertLen(senders, len(ref_edges))
      self.assertTrue(np.all(np.diff(senders) >= 0))
      lo, hi = sub.node_offsets[p], sub.node_offsets[p + 1]
      for lam in (2, 3, 4):
        np.testing.assert_array_equal(counts[lam][lo:hi], ref_paths(len(nodes), ref_edges, lam))
      np.testing.assert_array_equal(drnl[lo:hi], ref_drnl(len(nodes), ref_edges))


class BatchTest(parameterized.TestCase):

  def test_padding_power_of_two(self):
    csr = make_csr(5, TRIANGLE_TAIL)
    pairs = [[0, 3], [0, 1], [1, 4]]
    sub = enclosing.extract(*csr, pairs, num_hops=1)
    feats = lambda s: enclosing.path_label_features(enclosing.path_counts(s, 3), 3)
    batch = enclosing.to_graphs_tuple(sub, feats)
    g = batch.graph
    total_nodes, total_edges = int(sub.node_offsets[-1]), int(sub.edge_offsets[-1])
    for size in (g.nodes.shape[0], g.senders.shape[0], g.n_node.shape[0]):
      self.assertEqual(size & (size - 1), 0)
    self.assertGreater(g.nodes.shape[0], total_nodes)
    self.assertEqual(g.nodes.shape[1], 4)
    self.assertEqual(g.n_node.shape[0], 4)
    self.assertEqual(int(batch.node_mask.sum()), total_nodes)
    self.assertEqual(int(batch.edge_mask.sum()), total_edges)
    np.testing.assert_array_equal(batch.graph_mask, [True, True, True, False])
    self.assertEqual(g.senders.dtype, np.int32)
    self.assertTrue(np.all(g.senders < g.nodes.shape[0]))
    # With the default features (global ids), u_index / v_index read back the pairs.
    ids = enclosing.to_graphs_tuple(sub).graph.nodes
    np.testing.assert_array_equal(ids[batch.u_index[:3]], [0, 0, 1])
    np.testing.assert_array_equal(ids[batch.v_index[:3]], [3, 1, 4])
    self.assertFalse(batch.node_mask[batch.u_index[3]])
    # Real edges stay inside their own graph.
    graph_of_node = np.repeat(np.arange(g.n_node.shape[0]), g.n_node)
    real = batch.edge_mask
    np.testing.assert_array_equal(graph_of_node[g.senders[real]], graph_of_node[g.receivers[real]])

  def test_no_padding(self):
    sub = enclosing.extract(*make_csr(4, CYCLE4), [[0, 1], [1, 3]], num_hops=1)
    batch = enclosing.to_graphs_tuple(sub, pad_to_power_of_two=False)
    self.assertEqual(batch.graph.nodes.shape[0], sub.node_offsets[-1])
    np.testing.assert_array_equal(batch.u_index, [0, 4])
    self.assertTrue(batch.node_mask.all())


class BadInputTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("same_node", [[1, 1]], {}),
      ("out_of_range", [[0, 9]], {}),
      ("bad_shape", [0, 1], {}),
      ("zero_hops", [[0, 1]], {"num_hops": 0}),
      ("zero_cap", [[0, 1]], {"max_nodes_per_hop": 0}),
  )
  def test_extract_errors(self, pairs, kwargs):
    with self.assertRaises(GraphError):
      enclosing.extract(*make_csr(4, CYCLE4), pairs, **kwargs)

  def test_lam_out_of_range(self):
    sub = enclosing.extract(*make_csr(4, CYCLE4), [[0, 1]])
    with self.assertRaises(GraphError):
      enclosing.path_counts(sub, 5)

  def test_bad_csr(self):
    with self.assertRaises(GraphError):
      enclosing.extract(np.array([0, 2, 3]), np.array([1, 5, 0]), [[0, 1]])


if __name__ == "__main__":
  absltest.main()
