"""The output of every sampler: a k-hop neighbour sample of a batch of seeds, padded to static sizes.

Both samplers (host: `serving/host_sampler.py`, device: `serving/device_sampler.py`) return a
`SampledSubgraph`, so the gather, the model and the tests do not care which one ran.

Layout (PyG `NeighborLoader` style: one subgraph, every GNN layer runs over all its edges, outputs
are read at the seed rows):
  - local node 0..num_seeds-1 are the seeds, in request order (seeds must be distinct: callers
    deduplicate, the server maps repeated ids back);
  - every other node gets its local id at its first occurrence, scanning hop by hop, within a hop
    the expanded nodes in local-id order, and within a node its draws in draw order; each node is
    expanded once, at the hop after it is first reached (a node reached at the last hop is not
    expanded);
  - real nodes and real edges come first (contiguous), padding after;
  - edge e carries a message `senders[e] -> receivers[e]`: `receivers[e]` is the node that was
    expanded, `senders[e]` the neighbour sampled for it;
  - padding: `nodes` is -1 and `node_mask` False past `num_nodes`; padded edges have
    `edge_mask` False and point at the last node slot (always padding: the caps leave one spare).
"""

from typing import NamedTuple

import numpy as np


class SampledSubgraph(NamedTuple):
  """A padded sample (numpy or jax arrays; a pytree).

  Attributes:
    nodes: [max_nodes] int32 global node ids, -1 for padding.
    senders: [max_edges] int32 local index of each sampled neighbour.
    receivers: [max_edges] int32 local index of the node it was sampled for.
    node_mask: [max_nodes] bool.
    edge_mask: [max_edges] bool.
    num_nodes: [] int32 real nodes.
    num_edges: [] int32 real edges.
    num_seeds: [] int32 seeds (the first rows of `nodes`).
  """
  nodes: np.ndarray
  senders: np.ndarray
  receivers: np.ndarray
  node_mask: np.ndarray
  edge_mask: np.ndarray
  num_nodes: np.ndarray
  num_edges: np.ndarray
  num_seeds: np.ndarray


def caps(num_seeds: int, fanouts) -> tuple[int, int]:
  """Worst-case (max_nodes, max_edges) of a sample, plus the one spare padding node slot."""
  frontier, nodes, edges = num_seeds, num_seeds, 0
  for k in fanouts:
    frontier *= k
    nodes += frontier
    edges += frontier
  return nodes + 1, max(edges, 1)


def bucket(n: int, minimum: int = 8) -> int:
  """The power of two >= n (>= minimum): padded sizes come from a small set, bounding recompiles."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def edge_set(sample: SampledSubgraph) -> set[tuple[int, int]]:
  """The real edges as (global sender, global receiver) pairs (for tests and comparisons)."""
  nodes = np.asarray(sample.nodes)
  m = np.asarray(sample.edge_mask)
  s = nodes[np.asarray(sample.senders)[m]]
  r = nodes[np.asarray(sample.receivers)[m]]
  return set(zip(s.tolist(), r.tolist()))


def to_graphs_tuple(sample: SampledSubgraph, node_features=None):
  """A `jraph.GraphsTuple` of the sample: graph 0 holds the real nodes/edges, graph 1 the padding.

  Args:
    sample: a padded sample.
    node_features: optional [max_nodes, F] features gathered for `sample.nodes`.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import jraph  # pylint: disable=g-import-not-at-top
  xp = np if isinstance(sample.nodes, np.ndarray) else jnp
  max_nodes = sample.nodes.shape[0]
  max_edges = sample.senders.shape[0]
  n_node = xp.stack([sample.num_nodes, max_nodes - sample.num_nodes]).astype(xp.int32)
  n_edge = xp.stack([sample.num_edges, max_edges - sample.num_edges]).astype(xp.int32)
  return jraph.GraphsTuple(nodes=node_features, edges=None, senders=sample.senders,
                           receivers=sample.receivers, n_node=n_node, n_edge=n_edge, globals=None)
