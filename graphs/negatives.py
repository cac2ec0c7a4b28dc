"""Training negatives for link prediction: uniform node pairs, or pairs that are not edges.

OGB's link-prediction examples draw each step's negatives with PyG's `negative_sampling`, which
returns pairs absent from the message-passing graph. Drawing node pairs uniformly instead labels
some edges as negatives, a share equal to the graph's density: ~0.1% of pairs on Cora, but on
ogbl-ddi (4,267 nodes, 1.07M undirected training edges) 11.7% of uniform pairs are training
edges. `NegativeSampler` draws either way:

- "uniform": node pairs (u, v), u and v independently uniform over [0, N);
- "non_edge": the same, redrawing every pair that is an edge of the graph (in either direction)
  or a self pair, until none is; on ddi 11.7% are redrawn in the first round, ~1.4% in the second.

Edges are held as sorted int64 keys u * N + v of both directions, and membership is a binary
search (`np.searchsorted`), so memory is 16 bytes per undirected edge whatever N is.
"""

import numpy as np

from graphs.errors import GraphError

MODES = ("uniform", "non_edge")
_MAX_ROUNDS = 64


class NegativeSampler:
  """Draws `[n, 2]` int32 negative pairs on the host.

  Args:
    num_nodes: N.
    edges: `[E, 2]` undirected edges (each once or in both directions; the message-passing
      graph, e.g. a `LinkSplit.train_pos`).
    mode: "uniform" or "non_edge" (module docstring).

  Raises:
    GraphError: an unknown mode, node ids outside [0, N), or (on `sample`) a graph too dense to
      find non-edges by redrawing.
  """

  def __init__(self, num_nodes: int, edges: np.ndarray, mode: str = "uniform"):
    if mode not in MODES:
      raise GraphError(f"negative sampler must be one of {', '.join(MODES)}, got {mode!r}")
    self.num_nodes, self.mode = int(num_nodes), mode
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= self.num_nodes):
      raise GraphError(f"edge node ids must lie in [0, {self.num_nodes}), got "
                       f"[{edges.min()}, {edges.max()}]")
    keys = np.concatenate([edges[:, 0] * self.num_nodes + edges[:, 1],
                           edges[:, 1] * self.num_nodes + edges[:, 0]])
    self._keys = np.unique(keys)

  def is_edge(self, pairs: np.ndarray) -> np.ndarray:
    """`[...]` bool: whether each pair of `pairs` `[..., 2]` is an edge (either direction)."""
    pairs = np.asarray(pairs, np.int64)
    keys = pairs[..., 0] * self.num_nodes + pairs[..., 1]
    if not self._keys.size:
      return np.zeros(keys.shape, bool)
    at = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
    return self._keys[at] == keys

  def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
    """`[n, 2]` int32 negatives drawn with `rng`."""
    pairs = rng.integers(0, self.num_nodes, size=(n, 2), dtype=np.int64)
    if self.mode == "uniform":
      return pairs.astype(np.int32)
    for _ in range(_MAX_ROUNDS):
      bad = np.flatnonzero(self.is_edge(pairs) | (pairs[:, 0] == pairs[:, 1]))
      if not bad.size:
        return pairs.astype(np.int32)
      pairs[bad] = rng.integers(0, self.num_nodes, size=(bad.size, 2), dtype=np.int64)
    raise GraphError(f"non_edge negatives: {bad.size} of {n} pairs were still edges after "
                     f"{_MAX_ROUNDS} redraws; the graph is too dense for them (use uniform)")
