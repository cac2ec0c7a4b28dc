"""DGCNN (Zhang, Cui, Neumann & Chen 2018) over padded batches of subgraphs: the readout of SEAL and
of SEG's semantic branch. SortPool is written here (Jraph has none).

For a batch of graphs flattened into one `jraph.GraphsTuple` (nodes [N, F], padded by
`jraph.pad_with_graphs`; the padding graph is the last one):

1. Graph convolutions, `num_layers` of width `hidden` and a last one of width 1:
   Z_{t+1} = tanh(D^-1/2 (A + I) D^-1/2 Z_t W_t)   (`jraph.GraphConvolution`, self edges added,
   symmetric normalisation; SEAL's PyG code uses the same GCNConv), and Z_{1:h} = [Z_1 | ... | Z_h]
   [N, hidden * num_layers + 1] is every layer's output side by side.
2. SortPool: per graph, nodes sorted by their last channel (the width-1 layer, a continuous
   WL colour) in descending order, ties by node order; the first `k` rows kept, graphs smaller
   than k padded with zero rows: [G, k, D].
3. Head: Conv1D over the flattened [k * D] sequence with kernel = stride = D (one node per step),
   16 channels, ReLU; max-pool 2; Conv1D kernel 5, 32 channels, ReLU; Dense 128, ReLU, dropout;
   Dense `out_features`. (SEAL's defaults.)

`sortpool_k` picks k as SEAL does: the smallest node count that at least `fraction` (0.6) of the
training subgraphs do not exceed, at least 10.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from graphs.errors import GraphError


@dataclasses.dataclass(frozen=True)
class DGCNNConfig:
  """DGCNN hyperparameters.

  Attributes:
    hidden: width of each graph convolution but the last (which has width 1).
    num_layers: convolutions of width `hidden` (SEAL: 3).
    k: nodes kept per graph by SortPool (>= 10 so the second conv has room: see `__post_init__`).
    dropout: dropout before the last Dense, while training.
  """
  hidden: int = 32
  num_layers: int = 3
  k: int = 30
  dropout: float = 0.5

  def __post_init__(self):
    if self.hidden < 1 or self.num_layers < 1:
      raise GraphError(f"DGCNN hidden and num_layers must be >= 1, got {self}")
    if self.k < 10:
      raise GraphError(f"SortPool k must be >= 10 (max-pool 2 then a kernel-5 conv), got {self.k}")
    if not 0.0 <= self.dropout < 1.0:
      raise GraphError(f"dropout must lie in [0, 1), got {self.dropout}")

  @property
  def total_dim(self) -> int:
    """D, the width of the concatenated convolution outputs."""
    return self.hidden * self.num_layers + 1


def sortpool_k(num_nodes: np.ndarray, fraction: float = 0.6, minimum: int = 10) -> int:
  """SEAL's choice of k: the `fraction` quantile of the subgraph sizes, at least `minimum`.

  Args:
    num_nodes: [P] nodes per (training) subgraph.
    fraction: share of subgraphs that should have at most k nodes.
    minimum: lower bound on k.
  """
  sizes = np.sort(np.asarray(num_nodes).reshape(-1))
  if sizes.size == 0:
    return minimum
  idx = min(sizes.size - 1, max(0, int(np.ceil(fraction * sizes.size)) - 1))
  return max(minimum, int(sizes[idx]))


def graph_ids(n_node: jax.Array, num_nodes: int) -> jax.Array:
  """[N] int32 index of the graph each node belongs to, from `n_node` [G] (sum = N)."""
  return jnp.repeat(jnp.arange(n_node.shape[0], dtype=jnp.int32), n_node,
                    total_repeat_length=num_nodes)


def sort_pool(h: jax.Array, n_node: jax.Array, k: int) -> jax.Array:
  """SortPool: the k rows of each graph with the largest last channel, in descending order.

  Args:
    h: [N, D] node rows of G graphs laid out one after another (as in a `GraphsTuple`).
    n_node: [G] int nodes per graph (sum = N).
    k: rows kept per graph.

  Returns:
    [G, k, D]; a graph with fewer than k nodes gets zero rows after its own.
  """
  n, d = h.shape
  g = n_node.shape[0]
  gid = graph_ids(n_node, n)
  # Sort by graph, then by the last channel descending; lexsort is stable, so ties keep node order.
  order = jnp.lexsort((-h[:, -1], gid))
  starts = jnp.cumsum(n_node) - n_node
  rank = jnp.arange(n, dtype=jnp.int32) - starts[gid[order]].astype(jnp.int32)
  # Rows ranked >= k go to an out-of-range slot and are dropped.
  slot = jnp.where(rank < k, rank, k)
  out = jnp.zeros((g, k, d), h.dtype)
  return out.at[gid[order], slot].set(h[order], mode="drop")


class GCNStack(nn.Module):
  """`num_layers` tanh graph convolutions of width `hidden` and one of width 1, concatenated."""
  hidden: int
  num_layers: int

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
    outputs = []
    widths = [self.hidden] * self.num_layers + [1]
    for i, width in enumerate(widths):
      conv = jraph.GraphConvolution(update_node_fn=nn.Dense(width, name=f"conv_{i}"),
                                    add_self_edges=True, symmetric_normalization=True)
      graph = conv(graph)
      graph = graph._replace(nodes=jnp.tanh(graph.nodes))
      outputs.append(graph.nodes)
    return jnp.concatenate(outputs, axis=-1)


class DGCNN(nn.Module):
  """Graph convolutions + SortPool + 1-D conv head: node features -> one score vector per graph.

  Input `graph.nodes` [N, F]; output [G, out_features] (rows of padding graphs are meaningless),
  and with `return_nodes` also the concatenated convolution outputs [N, D].
  """
  cfg: DGCNNConfig
  out_features: int = 1
  return_nodes: bool = False

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple, *, deterministic: bool = True):
    cfg = self.cfg
    z = GCNStack(cfg.hidden, cfg.num_layers, name="gcn")(graph)
    pooled = sort_pool(z, graph.n_node, cfg.k)  # [G, k, D]
    # Conv1D with kernel = stride = D over the flattened sequence is a Dense over each node row.
    x = nn.relu(nn.Dense(16, name="conv1d_1")(pooled))  # [G, k, 16]
    x = nn.max_pool(x, window_shape=(2,), strides=(2,))  # [G, k // 2, 16]
    x = nn.relu(nn.Conv(32, kernel_size=(5,), padding="VALID", name="conv1d_2")(x))
    x = x.reshape(x.shape[0], -1)  # [G, (k // 2 - 4) * 32]
    x = nn.relu(nn.Dense(128, name="dense")(x))
    x = nn.Dropout(cfg.dropout, deterministic=deterministic)(x)
    out = nn.Dense(self.out_features, name="out")(x)
    return (out, z) if self.return_nodes else out
