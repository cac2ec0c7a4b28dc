"""Full-graph link prediction: a GCN or GraphSAGE encoder and a pair decoder (OGB's baselines).

An encoder runs over the whole message-passing graph, the split's `train_pos` edges in both
directions, and gives every node an embedding z [N, H]; a decoder scores a pair (u, v) from z_u and
z_v. This is OGB's ogbl-ddi "GCN" / "GraphSAGE" example (leaderboard GCN: 37.07 Hits@20 with a
learnable 256-wide node embedding, 2 layers of width 256, dropout 0.5, a Hadamard MLP predictor
of 2 layers there (`num_layers` serves both; collab and ppa use 3, our default), Adam at lr
0.005 after clipping the embedding's, GNN's and predictor's gradients each to norm 1, 64 * 1024
positive edges per step with as many negatives from PyG's `negative_sampling` (node pairs that
are not edges), binary cross-entropy, 200 epochs). `GAEConfig.neg_sampler="non_edge"` and
`grad_clip=1.0` give those negatives and that clipping; the defaults (uniform pairs, no
clipping) are what the results tables used.

Encoder input: the split's node features [N, F] when it has them; a learnable embedding
[N, embedding_dim] when it has none (ddi), or concatenated to the features if `use_embedding`.
Each of the L layers maps to width H; ReLU and dropout follow every layer but the last:

  GCN (Kipf & Welling 2017):   H' = D^-1/2 (A + I) D^-1/2 H W + b,   D = diag of (A + I)'s row sums
  SAGE (Hamilton et al. 2017): h'_v = W_self h_v + b + W_neigh mean_{u -> v} h_u   (mean of none: 0)

A counts directed edges u -> v, so an undirected train edge contributes to both A[u, v] and A[v, u].
Both layers are linear before the bias, so the product with W is taken first when it narrows the
rows (F = 1433 on Cora -> H) and after otherwise: the propagation then moves min(F, H) columns.

Decoders: "mlp" is OGB's LinkPredictor, an MLP (ReLU and dropout between layers) on z_u * z_v
ending in one logit; "dot" is z_u . z_v. The loss is OGB's: mean BCE over the positives plus mean
BCE over the negatives.

Dense or sparse propagation. The sparse path is Jraph over a `GraphsTuple` (GCN:
`jraph.GraphConvolution` with self edges and symmetric normalisation; SAGE: segment-sum mean,
`graphs.sage.mean_aggregate`): a gather of E rows and a scatter back. The dense path multiplies
by the [N, N] float32 propagation matrix, D^-1/2 (A + I) D^-1/2 for GCN or D_in^-1 A for SAGE,
built once in numpy and passed to the jitted functions as an argument (never baked in as a
constant). On ogbl-ddi (4,267 nodes, 2.1M directed edges, H = 256) a 2-layer forward + backward
took 0.26 s dense against 1.74 s gather + segment_sum on a 2-core CPU: dense graphs with few
nodes favour the matmul. `adjacency="auto"` therefore picks dense when N <= 16,384 (a 1 GiB
matrix) and sparse above. Both paths compute the same embeddings (up to float32 rounding).

The pure-function face, as elsewhere in the repository: `init(cfg, num_nodes, num_features, rng)
-> params`, `encode(params, graph, cfg, *, train, rng) -> z`, `decode(params, z, pairs, cfg) ->
logits`; params are nested dicts (`{"embedding": [N, D], "encoder": {"conv_0": {"kernel",
"bias"}, ...}, "decoder": {"lin_0": {"kernel", "bias"}, ...}}`). `GAERunner` wraps them in a jitted
training step and chunked scoring for a `LinkSplit`.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from graphs import negatives
from graphs.errors import GraphError
from graphs.link_data import LinkSplit
from graphs.sage import mean_aggregate

ENCODERS = ("gcn", "sage")
DECODERS = ("mlp", "dot")
ADJACENCIES = ("auto", "dense", "sparse")
DENSE_MAX_NODES = 16384  # "auto" goes dense up to here: the [N, N] float32 matrix is 1 GiB.
SCORE_CHUNK = 65536  # Pairs per decoder call in `GAERunner.score`.


@dataclasses.dataclass(frozen=True)
class GAEConfig:
  """Model and optimiser hyperparameters (defaults: OGB's ogbl-ddi GCN example).

  Attributes:
    encoder: "gcn" or "sage".
    hidden: H, the width of every encoder layer (and of z).
    num_layers: L >= 1 encoder layers.
    dropout: rate after every encoder layer but the last, and between decoder layers, in training.
    decoder: "mlp" (Hadamard product, then an MLP) or "dot" (inner product).
    decoder_layers: Linear layers of the "mlp" decoder (H -> H -> ... -> 1).
    embedding_dim: width of the learnable node embedding.
    use_embedding: concatenate a learnable embedding to the node features. A split without
      features always uses one.
    lr: Adam learning rate.
    batch_size: positive edges per training step (as many random negatives are added).
    adjacency: "dense" [N, N] matmul, "sparse" Jraph gather/scatter, or "auto" (dense for
      N <= DENSE_MAX_NODES).
    neg_sampler: training negatives, "uniform" node pairs or "non_edge" pairs (absent from the
      message-passing graph, as PyG's `negative_sampling` in OGB's examples; `graphs.negatives`).
    grad_clip: if > 0, each parameter group's gradient (the embedding, the encoder, the
      decoder) is scaled to global norm <= grad_clip before Adam (OGB's ddi example: 1.0).
  """
  encoder: str = "gcn"
  hidden: int = 256
  num_layers: int = 2
  dropout: float = 0.5
  decoder: str = "mlp"
  decoder_layers: int = 3
  embedding_dim: int = 256
  use_embedding: bool = False
  lr: float = 0.005
  batch_size: int = 65536
  adjacency: str = "auto"
  neg_sampler: str = "uniform"
  grad_clip: float = 0.0

  def __post_init__(self):
    for name, allowed in (("encoder", ENCODERS), ("decoder", DECODERS),
                          ("adjacency", ADJACENCIES), ("neg_sampler", negatives.MODES)):
      if getattr(self, name) not in allowed:
        raise GraphError(f"GAEConfig.{name} must be one of {', '.join(allowed)}, got "
                         f"{getattr(self, name)!r}")
    for name in ("hidden", "num_layers", "decoder_layers", "embedding_dim", "batch_size"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise GraphError(f"GAEConfig.{name} must be an integer >= 1, got {value!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise GraphError(f"GAEConfig.dropout must lie in [0, 1), got {self.dropout!r}")
    if not self.lr > 0:
      raise GraphError(f"GAEConfig.lr must be > 0, got {self.lr!r}")
    if not self.grad_clip >= 0:
      raise GraphError(f"GAEConfig.grad_clip must be >= 0, got {self.grad_clip!r}")


def clip_by_group(max_norm: float) -> optax.GradientTransformation:
  """Scales each parameter group's updates to global norm <= max_norm (OGB's examples clip the
  embedding, the GNN and the predictor separately). A group is a top-level entry of the params
  dict, except that an `embedding` one level down is a group of its own (`{"gnn": {"embedding",
  "encoder"}, ...}`: the embedding, then the rest of "gnn")."""

  def group(path) -> tuple[str, ...]:
    names = tuple(str(getattr(k, "key", k)) for k in path[:2])
    return names if len(names) == 2 and names[1] == "embedding" else names[:1]

  def update_fn(updates, state, params=None):
    del params
    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    sq: dict[tuple[str, ...], jax.Array] = {}
    for path, g in flat:
      sq[group(path)] = sq.get(group(path), 0.0) + jnp.sum(jnp.square(g))
    scale = {k: jnp.minimum(1.0, max_norm / jnp.maximum(jnp.sqrt(v), 1e-12))
             for k, v in sq.items()}
    out = [g * scale[group(path)].astype(g.dtype) for path, g in flat]
    return jax.tree_util.tree_unflatten(treedef, out), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(lr: float, grad_clip: float = 0.0) -> optax.GradientTransformation:
  """Adam at `lr`, after `clip_by_group(grad_clip)` when grad_clip > 0."""
  adam = optax.adam(lr)
  return optax.chain(clip_by_group(grad_clip), adam) if grad_clip > 0 else adam


def use_dense(cfg: GAEConfig, num_nodes: int) -> bool:
  """Whether `cfg` propagates with an [N, N] matrix on a graph of `num_nodes` nodes."""
  if cfg.adjacency == "auto":
    return num_nodes <= DENSE_MAX_NODES
  return cfg.adjacency == "dense"


# ---------------------------------------------------------------------------------------------
# The message-passing graph.


class GraphArrays(NamedTuple):
  """The message-passing graph as `encode` reads it: a pytree, passed to jitted code as an argument.

  Exactly one of the propagation fields is set: `gcn_adj` or `mean_adj` on the dense path (the one
  the encoder uses), `graph` on the sparse path.

  Attributes:
    features: [N, F] float32 node features, or None (a learnable embedding stands in).
    gcn_adj: [N, N] float32 D^-1/2 (A + I) D^-1/2, with A[v, u] the number of edges u -> v.
    mean_adj: [N, N] float32 D_in^-1 A (row v averages v's in-neighbours; zero if it has none).
    graph: a one-graph `jraph.GraphsTuple`: `nodes` None, `senders`/`receivers` [E] int32 directed
      edges, `n_node` [1] = N, `n_edge` [1] = E.
    degree: [N] float32 in-degree (edges into each node, no self loop; the edge set is symmetric),
      what `RemovedEdges` needs to take an edge's message back out.
  """
  features: jax.Array | None
  gcn_adj: jax.Array | None = None
  mean_adj: jax.Array | None = None
  graph: jraph.GraphsTuple | None = None
  degree: jax.Array | None = None


class RemovedEdges(NamedTuple):
  """Directed edges whose messages one `encode` call leaves out (target-edge masking).

  Training on an edge that is also in the message-passing graph lets the encoder see the answer:
  z_u already holds h_v. Leaving the batch's positive edges out of the propagation for that step
  (NCN's `maskinput`) trains on pairs as they look at test time. Each removed edge s -> r
  subtracts its term A_hat[r, s] h_s from row r; the degrees in the normalisation are not
  recomputed (a step of 16k ddi positives removes ~8 edges per node, ~1.5% of a mean degree of
  ~500).

  Attributes:
    senders, receivers: [K] int32 node ids (give both directions of an undirected edge).
    mask: [K] bool, False on padding.
  """
  senders: jax.Array
  receivers: jax.Array
  mask: jax.Array


def _removed_messages(h: jax.Array, graph: GraphArrays, removed: RemovedEdges,
                      kind: str) -> jax.Array:
  """[N, D] the part of the propagation of h [N, D] carried by `removed` ("gcn" or "mean")."""
  if graph.degree is None:
    raise GraphError("RemovedEdges need GraphArrays.degree (make_graph sets it)")
  deg = graph.degree
  if kind == "gcn":
    w = jax.lax.rsqrt((deg[removed.receivers] + 1.0) * (deg[removed.senders] + 1.0))
  else:
    w = 1.0 / jnp.maximum(deg[removed.receivers], 1.0)
  w = jnp.where(removed.mask, w, 0.0)
  return jax.ops.segment_sum(w[:, None] * h[removed.senders], removed.receivers,
                             num_segments=h.shape[0])


def _dense_counts(num_nodes: int, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
  a = np.zeros((num_nodes, num_nodes), np.float32)
  np.add.at(a, (receivers, senders), np.float32(1))
  return a


def dense_gcn_adjacency(num_nodes: int, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
  """[N, N] float32 D_r^-1/2 (A + I) D_s^-1/2 (the symmetric Kipf & Welling operator for a
  symmetric edge set; receiver/sender degrees otherwise, as `jraph.GraphConvolution`)."""
  a = _dense_counts(num_nodes, senders, receivers)
  a[np.arange(num_nodes), np.arange(num_nodes)] += 1
  # In place: at N = 16384 each copy is another GiB.
  a *= (1 / np.sqrt(a.sum(axis=1, dtype=np.float64))).astype(np.float32)[:, None]
  deg_s = np.bincount(senders, minlength=num_nodes) + 1.0
  a *= (1 / np.sqrt(deg_s)).astype(np.float32)[None, :]
  return a


def dense_mean_adjacency(num_nodes: int, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
  """[N, N] float32 D_in^-1 A: row v averages v's in-neighbours (all zero if there are none)."""
  a = _dense_counts(num_nodes, senders, receivers)
  a /= np.maximum(a.sum(axis=1, keepdims=True), 1)
  return a


def make_graph(num_nodes: int, edges: np.ndarray, cfg: GAEConfig,
               features: np.ndarray | None = None) -> GraphArrays:
  """The message-passing graph of undirected `edges`, dense or sparse as `cfg` says.

  Args:
    num_nodes: N.
    edges: [E, 2] node pairs, each undirected edge once (a `LinkSplit.train_pos`); both directions
      are used.
    cfg: picks the encoder's operator and the dense or sparse path.
    features: [N, F] node features, or None.

  Returns:
    `GraphArrays` on the default device.

  Raises:
    GraphError: node ids outside [0, N) or features with the wrong number of rows.
  """
  edges = np.asarray(edges, np.int64).reshape(-1, 2)
  if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
    raise GraphError(f"edge node ids must lie in [0, {num_nodes}), got "
                     f"[{edges.min()}, {edges.max()}]")
  senders = np.concatenate([edges[:, 0], edges[:, 1]]).astype(np.int32)
  receivers = np.concatenate([edges[:, 1], edges[:, 0]]).astype(np.int32)
  if features is not None:
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or features.shape[0] != num_nodes:
      raise GraphError(f"features must have shape [{num_nodes}, F], got {features.shape}")
    features = jnp.asarray(features)
  degree = jnp.asarray(np.bincount(receivers, minlength=num_nodes).astype(np.float32))
  if use_dense(cfg, num_nodes):
    if cfg.encoder == "gcn":
      return GraphArrays(features, gcn_adj=jnp.asarray(
          dense_gcn_adjacency(num_nodes, senders, receivers)), degree=degree)
    return GraphArrays(features, mean_adj=jnp.asarray(
        dense_mean_adjacency(num_nodes, senders, receivers)), degree=degree)
  graph = jraph.GraphsTuple(nodes=None, edges=None, senders=jnp.asarray(senders),
                            receivers=jnp.asarray(receivers),
                            n_node=jnp.array([num_nodes], jnp.int32),
                            n_edge=jnp.array([senders.size], jnp.int32), globals=None)
  return GraphArrays(features, graph=graph, degree=degree)


# ---------------------------------------------------------------------------------------------
# Layers.


def gcn_conv(p: dict[str, jax.Array], h: jax.Array, graph: GraphArrays,
             removed: RemovedEdges | None = None) -> jax.Array:
  """One GCN layer, D^-1/2 (A + I) D^-1/2 h W + b.

  Args:
    p: {"kernel": [D_in, D_out], "bias": [D_out]}.
    h: [N, D_in] node rows.
    graph: with `gcn_adj` (dense) or `graph` (sparse) set.
    removed: edges left out of this propagation, or None.

  Returns:
    [N, D_out].
  """
  kernel = p["kernel"]
  project_first = h.shape[-1] >= kernel.shape[-1]
  if project_first:
    h = h @ kernel
  h_in = h
  if graph.gcn_adj is not None:
    h = graph.gcn_adj @ h
  elif graph.graph is not None:
    conv = jraph.GraphConvolution(update_node_fn=lambda x: x, add_self_edges=True,
                                  symmetric_normalization=True)
    h = conv(graph.graph._replace(nodes=h)).nodes
  else:
    raise GraphError("gcn_conv needs GraphArrays with gcn_adj or graph (make_graph with "
                     "encoder='gcn')")
  if removed is not None:
    h = h - _removed_messages(h_in, graph, removed, "gcn")
  if not project_first:
    h = h @ kernel
  return h + p["bias"]


def sage_conv(p: dict[str, Any], h: jax.Array, graph: GraphArrays,
              removed: RemovedEdges | None = None) -> jax.Array:
  """One mean-aggregator SAGE layer, h W_self + b + mean_{u -> v}(h_u) W_neigh.

  Args:
    p: {"lin_self": {"kernel": [D_in, D_out], "bias": [D_out]}, "lin_neigh": {"kernel": ...}}.
    h: [N, D_in] node rows.
    graph: with `mean_adj` (dense) or `graph` (sparse) set.
    removed: edges left out of this propagation, or None.

  Returns:
    [N, D_out].
  """
  kernel = p["lin_neigh"]["kernel"]
  project_first = h.shape[-1] >= kernel.shape[-1]
  m = h @ kernel if project_first else h
  m_in = m
  if graph.mean_adj is not None:
    m = graph.mean_adj @ m
  elif graph.graph is not None:
    m = mean_aggregate(m, graph.graph.senders, graph.graph.receivers, None)
  else:
    raise GraphError("sage_conv needs GraphArrays with mean_adj or graph (make_graph with "
                     "encoder='sage')")
  if removed is not None:
    m = m - _removed_messages(m_in, graph, removed, "mean")
  if not project_first:
    m = m @ kernel
  return h @ p["lin_self"]["kernel"] + p["lin_self"]["bias"] + m


def _dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0)


# ---------------------------------------------------------------------------------------------
# The model.


def _torch_linear(rng: jax.Array, d_in: int, d_out: int, bias: bool = True) -> dict[str, Any]:
  """torch.nn.Linear's default init, U(+-1/sqrt(d_in)) for kernel and bias (OGB's predictor)."""
  k1, k2 = jax.random.split(rng)
  bound = 1.0 / np.sqrt(d_in)
  p = {"kernel": jax.random.uniform(k1, (d_in, d_out), jnp.float32, -bound, bound)}
  if bias:
    p["bias"] = jax.random.uniform(k2, (d_out,), jnp.float32, -bound, bound)
  return p


def init(cfg: GAEConfig, num_nodes: int, num_features: int, rng: jax.Array) -> dict[str, Any]:
  """Fresh parameters for a graph of `num_nodes` nodes with `num_features` feature columns.

  Args:
    cfg: the hyperparameters.
    num_nodes: N (the embedding's rows).
    num_features: F, 0 when the graph has no features (then an embedding is always made).
    rng: a PRNG key.

  Returns:
    {"embedding": [N, embedding_dim] (if used), "encoder": {"conv_i": ...}, "decoder":
    {"lin_i": ...} (empty for "dot")}: GCN layers glorot-uniform kernels and zero biases (PyG's
    GCNConv), SAGE and decoder layers torch.nn.Linear's init, the embedding glorot-uniform (OGB).
  """
  if num_nodes < 1 or num_features < 0:
    raise GraphError(f"need num_nodes >= 1 and num_features >= 0, got {num_nodes}, "
                     f"{num_features}")
  k_emb, k_enc, k_dec = jax.random.split(rng, 3)
  params: dict[str, Any] = {}
  width = num_features
  if num_features == 0 or cfg.use_embedding:
    params["embedding"] = jax.nn.initializers.glorot_uniform()(
        k_emb, (num_nodes, cfg.embedding_dim), jnp.float32)
    width += cfg.embedding_dim
  encoder = {}
  for i, k in enumerate(jax.random.split(k_enc, cfg.num_layers)):
    if cfg.encoder == "gcn":
      encoder[f"conv_{i}"] = {
          "kernel": jax.nn.initializers.glorot_uniform()(k, (width, cfg.hidden), jnp.float32),
          "bias": jnp.zeros((cfg.hidden,), jnp.float32)}
    else:
      k_self, k_neigh = jax.random.split(k)
      encoder[f"conv_{i}"] = {"lin_self": _torch_linear(k_self, width, cfg.hidden),
                              "lin_neigh": _torch_linear(k_neigh, width, cfg.hidden, bias=False)}
    width = cfg.hidden
  params["encoder"] = encoder
  decoder = {}
  if cfg.decoder == "mlp":
    for i, k in enumerate(jax.random.split(k_dec, cfg.decoder_layers)):
      out = 1 if i == cfg.decoder_layers - 1 else cfg.hidden
      decoder[f"lin_{i}"] = _torch_linear(k, cfg.hidden, out)
  params["decoder"] = decoder
  return params


def encode(params: dict[str, Any], graph: GraphArrays, cfg: GAEConfig, *, train: bool = False,
           rng: jax.Array | None = None, removed: RemovedEdges | None = None) -> jax.Array:
  """Node embeddings from the whole graph.

  Args:
    params: from `init`.
    graph: from `make_graph` with the same `cfg.encoder`.
    cfg: the hyperparameters the params were made with.
    train: apply dropout (needs `rng`).
    rng: dropout key.
    removed: edges left out of every layer's propagation (e.g. the step's positives), or None.

  Returns:
    z [N, hidden].
  """
  if train and cfg.dropout > 0 and rng is None:
    raise ValueError("encode(train=True) needs an rng for dropout")
  inputs = [x for x in (graph.features, params.get("embedding")) if x is not None]
  if not inputs:
    raise GraphError("encode: the graph has no features and the params no embedding")
  h = inputs[0] if len(inputs) == 1 else jnp.concatenate(inputs, axis=-1)
  conv = gcn_conv if cfg.encoder == "gcn" else sage_conv
  for i in range(cfg.num_layers):
    h = conv(params["encoder"][f"conv_{i}"], h, graph, removed)
    if i < cfg.num_layers - 1:
      h = jax.nn.relu(h)
      if train and cfg.dropout > 0:
        h = _dropout(h, cfg.dropout, jax.random.fold_in(rng, i))
  return h


def decode(params: dict[str, Any], z: jax.Array, pairs: jax.Array, cfg: GAEConfig, *,
           train: bool = False, rng: jax.Array | None = None) -> jax.Array:
  """Link logits of node pairs.

  Args:
    params: from `init`.
    z: [N, H] node embeddings from `encode`.
    pairs: [P, 2] int node ids (u, v).
    cfg: the hyperparameters the params were made with.
    train: apply dropout between "mlp" layers (needs `rng`).
    rng: dropout key.

  Returns:
    [P] float32 logits: the MLP's output on z_u * z_v, or z_u . z_v for "dot".
  """
  x = z[pairs[:, 0]] * z[pairs[:, 1]]
  if cfg.decoder == "dot":
    return jnp.sum(x, axis=-1)
  if train and cfg.dropout > 0 and rng is None:
    raise ValueError("decode(train=True) needs an rng for dropout")
  for i in range(cfg.decoder_layers):
    p = params["decoder"][f"lin_{i}"]
    x = x @ p["kernel"] + p["bias"]
    if i < cfg.decoder_layers - 1:
      x = jax.nn.relu(x)
      if train and cfg.dropout > 0:
        x = _dropout(x, cfg.dropout, jax.random.fold_in(rng, i))
  return x[:, 0]


# ---------------------------------------------------------------------------------------------
# Training and scoring a LinkSplit.


def pair_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """OGB's link loss: mean BCE over the positives + mean BCE over their negatives.

  Args:
    logits: [(1 + K) B] positives' logits, then K blocks of B negatives (block k, row i: the
      k-th negative drawn with positive i); K = 1 in OGB's examples.
    mask: [B] False on padded positives (their negatives are dropped with them).

  Returns:
    [] the loss.
  """
  b = mask.shape[0]
  weight = mask.astype(jnp.float32)
  pos = optax.sigmoid_binary_cross_entropy(logits[:b], jnp.ones((b,)))
  neg = optax.sigmoid_binary_cross_entropy(logits[b:].reshape(-1, b), 0.0).mean(axis=0)
  return jnp.sum(weight * (pos + neg)) / jnp.maximum(weight.sum(), 1.0)


LOSSES = ("bce", "auc")


def ranking_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """PLNLP's square AUC surrogate: mean of (1 - (s_pos - s_neg))^2 over each positive and the
  negative drawn with it (a pairwise ranking loss; Hits@K ranks positives among negatives).

  Args:
    logits: [(1 + K) B] positives' logits, then K blocks of B negatives (as `pair_loss`).
    mask: [B] False on padded positives.

  Returns:
    [] the loss.
  """
  b = mask.shape[0]
  weight = mask.astype(jnp.float32)
  margin = logits[:b] - logits[b:].reshape(-1, b)
  return jnp.sum(weight * jnp.square(1.0 - margin).mean(axis=0)) / jnp.maximum(weight.sum(), 1.0)


def link_loss(name: str, logits: jax.Array, mask: jax.Array) -> jax.Array:
  """`pair_loss` ("bce") or `ranking_loss` ("auc") of [(1 + K) B] logits with a [B] mask."""
  if name == "bce":
    return pair_loss(logits, mask)
  if name == "auc":
    return ranking_loss(logits, mask)
  raise GraphError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")


class GAEState(NamedTuple):
  """Training state: `params` from `init` and the optax state of `GAERunner`'s Adam."""
  params: dict[str, Any]
  opt_state: Any


def _train_step(state: GAEState, graph: GraphArrays, pos: jax.Array, neg: jax.Array,
                mask: jax.Array, key: jax.Array, *, cfg: GAEConfig,
                optimizer: optax.GradientTransformation) -> tuple[GAEState, jax.Array]:
  """One Adam step on [B, 2] positives (`mask` [B] False on padding) and [B, 2] negatives."""
  k_enc, k_dec = jax.random.split(key)

  def loss_fn(params):
    z = encode(params, graph, cfg, train=True, rng=k_enc)
    logits = decode(params, z, jnp.concatenate([pos, neg]), cfg, train=True, rng=k_dec)
    return pair_loss(logits, mask)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return GAEState(optax.apply_updates(state.params, updates), opt_state), loss


def _next_pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


class GAERunner:
  """Trains and scores a `GAEConfig` model on one `LinkSplit` (the graph is its `train_pos`).

  Every training step is one jitted function (full-graph encoder with dropout, decoder, loss, Adam
  update) with a fixed [batch, 2] positive shape: the last partial batch is padded and masked, so
  an epoch compiles once. Scoring runs the encoder once per params and the decoder in chunks of a
  fixed power-of-two size (SCORE_CHUNK, or the next power of two >= 1024 above a smaller request),
  so compiles stay bounded.
  """

  def __init__(self, split: LinkSplit, cfg: GAEConfig, seed: int):
    """Builds the message-passing graph (dense or sparse, see `use_dense`) and the jitted steps.

    Raises:
      GraphError: a split without training edges, a negative seed, bad node ids or features.
    """
    if split.train_pos.shape[0] == 0:
      raise GraphError(f"{split.name}: no training edges")
    if int(seed) < 0:
      raise GraphError(f"seed must be >= 0, got {seed}")
    self.split, self.cfg, self.seed = split, cfg, int(seed)
    self.num_nodes = int(split.num_nodes)
    self.num_features = 0 if split.features is None else int(split.features.shape[1])
    self.dense = use_dense(cfg, self.num_nodes)
    self.graph = make_graph(self.num_nodes, split.train_pos, cfg, split.features)
    self._train_pos = np.asarray(split.train_pos, np.int32)
    self.batch = min(cfg.batch_size, self._train_pos.shape[0])
    self._negatives = negatives.NegativeSampler(self.num_nodes, split.train_pos, cfg.neg_sampler)
    self._optimizer = make_optimizer(cfg.lr, cfg.grad_clip)
    self._step = jax.jit(functools.partial(_train_step, cfg=cfg, optimizer=self._optimizer))
    self._encode = jax.jit(functools.partial(encode, cfg=cfg, train=False))
    self._decode = jax.jit(functools.partial(decode, cfg=cfg, train=False))
    self._z_cache: tuple[list[Any], jax.Array] | None = None

  def init(self) -> GAEState:
    """Fresh params (from `seed`) and Adam state."""
    params = jax.jit(functools.partial(init, self.cfg, self.num_nodes, self.num_features))(
        jax.random.key(self.seed))
    return GAEState(params, self._optimizer.init(params))

  def train_epoch(self, state: GAEState, epoch: int) -> tuple[GAEState, dict[str, float]]:
    """One pass over a (seed, epoch)-seeded permutation of `train_pos`, with as many negatives
    (`cfg.neg_sampler`) drawn from the same generator.

    Returns:
      The new state and {"loss": the mean over positives of pos + neg BCE, "pairs": positive +
      negative pairs seen}.
    """
    num_edges, b = self._train_pos.shape[0], self.batch
    rng = np.random.default_rng((self.seed, int(epoch)))
    perm = rng.permutation(num_edges)
    key = jax.random.fold_in(jax.random.key(self.seed), int(epoch))
    losses, counts = [], []
    for step, start in enumerate(range(0, num_edges, b)):
      idx = perm[start:start + b]
      pos = np.zeros((b, 2), np.int32)
      pos[:idx.size] = self._train_pos[idx]
      mask = np.arange(b) < idx.size
      neg = self._negatives.sample(rng, b)
      state, loss = self._step(state, self.graph, pos, neg, mask, jax.random.fold_in(key, step))
      losses.append(loss)
      counts.append(idx.size)
    loss = float(np.average(np.asarray(jax.device_get(losses)), weights=counts))
    return state, {"loss": loss, "pairs": 2 * num_edges}

  def embed(self, state: GAEState) -> jax.Array:
    """z [N, H] without dropout; cached while the same params arrays are passed."""
    leaves = jax.tree.leaves(state.params)
    if self._z_cache is not None and len(leaves) == len(self._z_cache[0]) and all(
        a is b for a, b in zip(leaves, self._z_cache[0])):
      return self._z_cache[1]
    z = self._encode(state.params, self.graph)
    self._z_cache = (leaves, z)  # Holding the leaves keeps their ids from being reused.
    return z

  def score(self, state: GAEState, pairs: np.ndarray, name: str | None = None) -> np.ndarray:
    """Logits of node pairs.

    Args:
      state: from `init` / `train_epoch`.
      pairs: [P, 2] (or [..., 2], e.g. citation2's [E, K, 2] negatives) node ids.
      name: the split's name (the subgraph runner caches per name; unused here: the encoder output
        is already reused across calls with the same params).

    Returns:
      [P] (or [...]) float32 logits.

    Raises:
      GraphError: pairs not of shape [..., 2], or node ids outside [0, N).
    """
    del name
    pairs = np.asarray(pairs)
    if pairs.ndim < 1 or pairs.shape[-1] != 2:
      raise GraphError(f"pairs must have shape [..., 2], got {pairs.shape}")
    flat = pairs.reshape(-1, 2).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= self.num_nodes):
      raise GraphError(f"pair node ids must lie in [0, {self.num_nodes}), got "
                       f"[{flat.min()}, {flat.max()}]")
    out = np.zeros(flat.shape[0], np.float32)
    if flat.shape[0]:
      z = self.embed(state)
      chunk = min(SCORE_CHUNK, max(1024, _next_pow2(flat.shape[0])))
      for start in range(0, flat.shape[0], chunk):
        part = flat[start:start + chunk]
        padded = np.zeros((chunk, 2), np.int32)
        padded[:part.shape[0]] = part
        out[start:start + part.shape[0]] = np.asarray(
            self._decode(state.params, z, padded))[:part.shape[0]]
    return out.reshape(pairs.shape[:-1])

  def params(self, state: GAEState) -> dict[str, Any]:
    """What gets checkpointed: the model params of `state`."""
    return state.params
