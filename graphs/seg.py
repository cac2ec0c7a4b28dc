"""SEG and SEAL: link prediction from the enclosing subgraph of the target pair.

Both score a target pair (u, v) from its enclosing subgraph (`graphs/enclosing.py`), batched as a
padded `jraph.GraphsTuple` whose `nodes` is a dict:

  "label": [N, L] float32 structural label of every node (SEG: path-label one-hots,
           `enclosing.path_label_features`), or [N] int32 (SEAL: DRNL, embedded here);
  "id":    [N] int32 global node id, for the node input (learnable embedding and/or raw features).

Node input x_w = [E[id_w] | X[id_w]]: a learnable embedding of `embedding_dim` (0: none; ogbl-ddi
has no features, so its only node input is this) and/or the dataset's features X passed to
`apply` as `features` [num_nodes, F] (Planetoid's bag of words).

SEG (our reconstruction of Structure Enhanced GNN; the written-down choices are in
`graphs/README.md`):

  structure encoder   z = MLP_s(D^-1/2 (A+I) D^-1/2 P W_s)      P the path labels [N, L]
  structure score     s_struct = MLP_o(z_u * z_v [| log(1 + CN_uv)])   (optional exact count)
  semantic GNN        s_sem = DGCNN([Dense(x) | P])              node input fused with the labels
  pair readout        s_pair = MLP_p(h_u * h_v)                  h: the same GNN's node outputs
  score               s_struct + s_sem + s_pair                  one logit, trained with BCE.

The pair readout is our addition (`pair_readout=False` drops it): SortPool alone forgets which
nodes are u and v except through the labels, and on Planetoid the full-graph GCN baseline, whose
score is exactly such a Hadamard readout, beat the SortPool-only SEG (see graphs/README.md).

SEAL (Zhang & Chen 2018, the baseline): s = DGCNN([Embed(DRNL) | x]).

The pure-function face: `init(cfg, rng) -> params`, `apply(params, batch, cfg, features=...,
train=..., rng=...) -> logits [G]`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from graphs import dgcnn
from graphs.errors import GraphError

MODELS = ("seg", "seal")
MAX_DRNL = 1000  # DRNL labels above this share one embedding row (SEAL's max_z).


@dataclasses.dataclass(frozen=True)
class SubgraphModelConfig:
  """Hyperparameters of SEG / SEAL (stored in a run's results).

  Attributes:
    model: "seg" or "seal".
    label_dim: L, the width of SEG's path-label one-hots (ignored by SEAL).
    num_nodes: nodes of the whole graph (rows of the learnable embedding).
    feature_dim: F, width of the raw node features (0: none).
    embedding_dim: width of the learnable node embedding (0: none).
    hidden: width of SEG's structure encoder, of the node-input projection and of SEAL's DRNL
      embedding.
    readout: the DGCNN readout's settings.
    pair_readout: SEG also scores MLP(h_u * h_v) of the semantic GNN's concatenated node outputs
      (added to the SortPool score); False: SortPool readout only, as first described.
    pair_counts: SEG's structure score also reads `graph.globals` [G, 1], log(1 + the pair's
      exact common-neighbour count in the whole graph) (`enclosing.common_neighbours`).
  """
  model: str = "seg"
  label_dim: int = 4
  num_nodes: int = 1
  feature_dim: int = 0
  embedding_dim: int = 32
  hidden: int = 32
  readout: dgcnn.DGCNNConfig = dgcnn.DGCNNConfig()
  pair_readout: bool = True
  pair_counts: bool = False

  def __post_init__(self):
    if self.model not in MODELS:
      raise GraphError(f"unknown subgraph model {self.model!r}; choose one of {', '.join(MODELS)}")
    if min(self.label_dim, self.num_nodes, self.hidden) < 1:
      raise GraphError(f"label_dim, num_nodes and hidden must be >= 1: {self}")
    if self.feature_dim < 0 or self.embedding_dim < 0:
      raise GraphError(f"feature_dim and embedding_dim must be >= 0: {self}")


class _NodeInput(nn.Module):
  """x_w = [E[id_w] | X[id_w]], or None when the config has neither."""
  cfg: SubgraphModelConfig

  @nn.compact
  def __call__(self, ids, features):
    parts = []
    if self.cfg.embedding_dim:
      emb = nn.Embed(self.cfg.num_nodes, self.cfg.embedding_dim, name="node_embedding",
                     embedding_init=nn.initializers.glorot_uniform())
      parts.append(emb(ids))
    if self.cfg.feature_dim:
      if features is None:
        raise ValueError("this model was configured with node features: pass `features`")
      parts.append(features[ids])
    return jnp.concatenate(parts, axis=-1) if parts else None


class SEG(nn.Module):
  """Structure score + semantic (DGCNN) score of each graph's (u, v); returns logits [G]."""
  cfg: SubgraphModelConfig

  @nn.compact
  def __call__(self, graph, u_index, v_index, features, *, deterministic=True):
    cfg = self.cfg
    labels = graph.nodes["label"].astype(jnp.float32)  # [N, L]
    # Structure encoder: one normalised aggregation of the path labels, then an MLP.
    agg = jraph.GraphConvolution(update_node_fn=nn.Dense(cfg.hidden, name="struct_conv"),
                                 add_self_edges=True, symmetric_normalization=True)
    z = agg(graph._replace(nodes=labels)).nodes
    z = nn.Dense(cfg.hidden, name="struct_mlp_1")(nn.relu(z))
    z = nn.Dense(cfg.hidden, name="struct_mlp_2")(nn.relu(z))  # [N, H]
    pair = z[u_index] * z[v_index]  # [G, H]
    if cfg.pair_counts:
      pair = jnp.concatenate([pair, graph.globals.astype(jnp.float32)], axis=-1)  # [G, H + 1]
    s_struct = nn.Dense(1, name="struct_out_2")(
        nn.relu(nn.Dense(cfg.hidden, name="struct_out_1")(pair)))[:, 0]
    # Semantic GNN over the node input fused with the path labels.
    x = _NodeInput(cfg, name="node_input")(graph.nodes["id"], features)
    fused = labels if x is None else jnp.concatenate(
        [nn.Dense(cfg.hidden, name="input_proj")(x), labels], axis=-1)
    sem = dgcnn.DGCNN(cfg.readout, out_features=1, return_nodes=cfg.pair_readout, name="dgcnn")(
        graph._replace(nodes=fused), deterministic=deterministic)
    if not cfg.pair_readout:
      return s_struct + sem[:, 0]
    s_sem, h = sem
    # Target-pair readout of the same GNN (our addition; `pair_readout=False` is SortPool only).
    pair_h = h[u_index] * h[v_index]
    s_pair = nn.Dense(1, name="pair_out_2")(
        nn.relu(nn.Dense(cfg.hidden, name="pair_out_1")(pair_h)))[:, 0]
    return s_struct + s_sem[:, 0] + s_pair


class SEAL(nn.Module):
  """DGCNN over [Embed(DRNL) | node input]; returns logits [G]."""
  cfg: SubgraphModelConfig

  @nn.compact
  def __call__(self, graph, u_index, v_index, features, *, deterministic=True):
    del u_index, v_index  # SEAL reads the pair only through its labels.
    cfg = self.cfg
    z = jnp.minimum(graph.nodes["label"].astype(jnp.int32), MAX_DRNL)
    h = nn.Embed(MAX_DRNL + 1, cfg.hidden, name="drnl_embedding")(z)
    x = _NodeInput(cfg, name="node_input")(graph.nodes["id"], features)
    if x is not None:
      h = jnp.concatenate([h, x], axis=-1)
    return dgcnn.DGCNN(cfg.readout, name="dgcnn")(graph._replace(nodes=h),
                                                deterministic=deterministic)[:, 0]


def _module(cfg: SubgraphModelConfig) -> nn.Module:
  return SEG(cfg) if cfg.model == "seg" else SEAL(cfg)


def example_graph(cfg: SubgraphModelConfig) -> tuple[jraph.GraphsTuple, jax.Array, jax.Array]:
  """A two-node, one-edge graph with the right node fields (for `init`; shapes are free)."""
  if cfg.model == "seg":
    label = jnp.zeros((2, cfg.label_dim), jnp.float32)
  else:
    label = jnp.ones((2,), jnp.int32)
  graph = jraph.GraphsTuple(nodes={"label": label, "id": jnp.zeros((2,), jnp.int32)}, edges=None,
                            senders=jnp.array([0, 1], jnp.int32),
                            receivers=jnp.array([1, 0], jnp.int32),
                            n_node=jnp.array([2], jnp.int32), n_edge=jnp.array([2], jnp.int32),
                            globals=(jnp.zeros((1, 1), jnp.float32) if cfg.pair_counts
                                     else None))
  idx = jnp.zeros((1,), jnp.int32)
  return graph, idx, idx + 1


def init(cfg: SubgraphModelConfig, rng: jax.Array) -> dict[str, Any]:
  """Fresh parameters for `cfg` (a nested dict of float32 arrays)."""
  graph, u, v = example_graph(cfg)
  features = jnp.zeros((cfg.num_nodes, cfg.feature_dim), jnp.float32) if cfg.feature_dim else None
  return _module(cfg).init(rng, graph, u, v, features)


def apply(params, graph: jraph.GraphsTuple, u_index, v_index, cfg: SubgraphModelConfig, *,
          features=None, train: bool = False, rng: jax.Array | None = None) -> jax.Array:
  """Scores a batch of subgraphs.

  Args:
    params: from `init`.
    graph: a (padded) batch; `nodes` is {"label": [N, L] or [N], "id": [N]} (module docstring);
      `globals` [G, 1] the pair counts when `cfg.pair_counts`.
    u_index: [G] int32 batch node id of each graph's u.
    v_index: [G] int32 likewise for v.
    cfg: the config the params were made with.
    features: [num_nodes, F] raw node features when `cfg.feature_dim` > 0.
    train: apply dropout (needs `rng`).
    rng: dropout key.

  Returns:
    [G] float32 logits; entries of padding graphs are meaningless.
  """
  rngs = None
  if train and cfg.readout.dropout > 0:
    if rng is None:
      raise ValueError("apply(train=True) needs an rng for dropout")
    rngs = {"dropout": rng}
  return _module(cfg).apply(params, graph, u_index, v_index, features,
                            deterministic=not train, rngs=rngs)
