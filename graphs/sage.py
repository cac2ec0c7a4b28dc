"""GraphSAGE with mean aggregation (Hamilton et al. 2017) over a `jraph.GraphsTuple`, in Flax linen.

One layer, for every node v with in-neighbours N(v) = {senders[e] : receivers[e] = v, e real}:

  h'_v = W_self h_v + W_neigh mean_{u in N(v)} h_u + b        (mean of nothing is 0)

Layers 1..L-1 are followed by ReLU and optional L2 normalisation (the paper's Algorithm 1, line 7);
layer L gives the class logits. While training, dropout hits every layer's input, the raw features
included (as Kipf & Welling do on these bag-of-words graphs). The penultimate representation (the
input of layer L) is returned as the node embedding.

Messages flow `senders -> receivers`, so the same model runs on a full symmetric graph (every
undirected edge in both directions) and on a sampled subgraph (`serving/subgraph.py`: receivers
are the expanded nodes). Padding never reaches a real node: masked edges carry zero messages and
do not count towards the degree; pass `edge_mask` whenever padded edges might point at real nodes
(`jraph.get_edge_padding_mask(graph)` for graphs padded by `jraph.pad_with_graphs`).

The pure-function face, as elsewhere in the repository: `init(cfg, rng) -> params` and
`apply(params, graph, cfg, ...) -> (logits, embeddings)`; params are nested dicts
(`{"params": {"conv_0": {"lin_self": {"kernel", "bias"}, "lin_neigh": {"kernel"}}, ...}}`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from graphs.errors import GraphError


@dataclasses.dataclass(frozen=True)
class SageConfig:
  """Model hyperparameters (everything `init`/`apply` need; stored in a run's config.json).

  Attributes:
    num_features: F, the input feature width.
    num_classes: C, the logit width.
    hidden: width of every hidden layer.
    num_layers: L >= 1 SAGE layers (L hops of neighbourhood).
    dropout: dropout rate on the input of every layer, while training.
    normalize: L2-normalise each hidden layer's output (after ReLU).
  """
  num_features: int
  num_classes: int
  hidden: int = 64
  num_layers: int = 2
  dropout: float = 0.5
  normalize: bool = False

  def __post_init__(self):
    if min(self.num_features, self.num_classes, self.hidden, self.num_layers) < 1:
      raise GraphError(f"num_features, num_classes, hidden and num_layers must be >= 1: {self}")
    if not 0.0 <= self.dropout < 1.0:
      raise GraphError(f"dropout must lie in [0, 1), got {self.dropout}")


def mean_aggregate(h: jax.Array, senders: jax.Array, receivers: jax.Array,
                   edge_mask: jax.Array | None) -> jax.Array:
  """Mean of the real in-neighbours' rows.

  Args:
    h: [N, D] node rows.
    senders, receivers: [E] int node indices (message senders[e] -> receivers[e]).
    edge_mask: [E] bool, False for padded edges; None: every edge is real.

  Returns:
    [N, D]: row v is the mean of h[senders[e]] over real edges e with receivers[e] = v, 0 if none.
  """
  n = h.shape[0]
  if edge_mask is None:
    weight = jnp.ones(senders.shape, h.dtype)
  else:
    weight = edge_mask.astype(h.dtype)
  # where, not a product: a padding row holding inf or NaN must not leak in as 0 * inf.
  messages = jnp.where(weight[:, None] > 0, h[senders], 0)
  summed = jax.ops.segment_sum(messages, receivers, num_segments=n)
  degree = jax.ops.segment_sum(weight, receivers, num_segments=n)
  return summed / jnp.maximum(degree, 1.0)[:, None]


class SAGEConv(nn.Module):
  """One mean-aggregator GraphSAGE layer: [N, D_in] -> [N, features]."""
  features: int

  @nn.compact
  def __call__(self, h, senders, receivers, edge_mask):
    lin_neigh = nn.Dense(self.features, use_bias=False, name="lin_neigh")
    if h.shape[-1] > self.features:
      # The mean is linear, so W mean(h_u) = mean(W h_u): projecting first moves the gather and
      # scatter over E edges from D_in columns (Cora: 1433) to `features` (64).
      neigh = mean_aggregate(lin_neigh(h), senders, receivers, edge_mask)
    else:
      neigh = lin_neigh(mean_aggregate(h, senders, receivers, edge_mask))
    return nn.Dense(self.features, name="lin_self")(h) + neigh


class GraphSAGE(nn.Module):
  """L SAGE layers; returns (logits [N, C], embeddings [N, hidden] or [N, F] when L = 1)."""
  cfg: SageConfig

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple, edge_mask=None, *, deterministic: bool = True):
    cfg = self.cfg
    h = graph.nodes
    embeddings = h
    for i in range(cfg.num_layers):
      last = i == cfg.num_layers - 1
      if last:
        embeddings = h
      h = nn.Dropout(cfg.dropout, deterministic=deterministic)(h)
      h = SAGEConv(cfg.num_classes if last else cfg.hidden, name=f"conv_{i}")(
          h, graph.senders, graph.receivers, edge_mask)
      if not last:
        h = nn.relu(h)
        if cfg.normalize:
          # Not h / max(norm(h), eps): the gradient of norm() at an all-zero row (dead ReLUs,
          # padding nodes) is NaN even where max() discards it; the squared sum's is 0.
          sq = jnp.sum(h * h, axis=-1, keepdims=True)
          h = h * jax.lax.rsqrt(jnp.maximum(sq, 1e-24))
    return h, embeddings


def _example_graph(num_features: int) -> jraph.GraphsTuple:
  """One node with a self edge: shapes for `init` (parameters do not depend on N or E)."""
  idx = jnp.zeros((1,), jnp.int32)
  return jraph.GraphsTuple(nodes=jnp.zeros((1, num_features), jnp.float32), edges=None,
                           senders=idx, receivers=idx, n_node=jnp.ones((1,), jnp.int32),
                           n_edge=jnp.ones((1,), jnp.int32), globals=None)


def init(cfg: SageConfig, rng: jax.Array) -> dict[str, Any]:
  """Fresh parameters (a nested dict of float32 arrays) for `cfg`."""
  return GraphSAGE(cfg).init(rng, _example_graph(cfg.num_features))


def apply(params, graph: jraph.GraphsTuple, cfg: SageConfig, *, edge_mask=None,
          train: bool = False, rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Runs the model.

  Args:
    params: from `init` (or a checkpoint).
    graph: `nodes` [N, F] float features, `senders`/`receivers` [E] int; `n_node`/`n_edge` unused.
    cfg: the hyperparameters the params were made with.
    edge_mask: [E] bool, False for padded edges (None: all real).
    train: apply dropout (needs `rng`).
    rng: dropout key.

  Returns:
    logits [N, C] and embeddings [N, hidden] (the penultimate layer's input; [N, F] if L = 1).
    Rows of padding nodes are meaningless.
  """
  rngs = None
  if train and cfg.dropout > 0:
    if rng is None:
      raise ValueError("apply(train=True) needs an rng for dropout")
    rngs = {"dropout": rng}
  return GraphSAGE(cfg).apply(params, graph, edge_mask, deterministic=not train, rngs=rngs)


def full_graph(features, src, dst) -> jraph.GraphsTuple:
  """A one-graph `GraphsTuple` (no padding) of features [N, F] and directed edges src -> dst [E]."""
  features = jnp.asarray(features, jnp.float32)
  src = jnp.asarray(src, jnp.int32)
  return jraph.GraphsTuple(nodes=features, edges=None, senders=src,
                           receivers=jnp.asarray(dst, jnp.int32),
                           n_node=jnp.array([features.shape[0]], jnp.int32),
                           n_edge=jnp.array([src.shape[0]], jnp.int32), globals=None)
