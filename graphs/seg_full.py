"""Full-graph SEG: exact path labels of the target pair fused with a GNN over the whole graph.

The subgraph SEG (`graphs/seg.py`) runs its GNN on each pair's capped enclosing subgraph. On
dense graphs (ogbl-ddi: 4,267 nodes, mean degree ~500) the cap keeps a few percent of the
neighbourhood and every pair costs a subgraph. Here the two parts of SEG are split the other way
round, as the abstract describes them ("path labeling ... incorporated into an ordinary GNN",
"jointly training the structure encoder and deep GNN model"):

- the *ordinary GNN* is the full-graph GCN / GraphSAGE of `graphs/gae.py` over the training graph
  (a learnable node embedding when the graph has no features): z [N, H];
- the *path labels* of the pair's neighbours are computed exactly on the whole graph
  (`graphs/path_features.py`): for each side a histogram hist_s [2B] of its neighbours' labels, and
  the numbers of u-v paths of length 2 and 3;
- the *structure encoder* maps log(1 + hist_s) through a 2-layer MLP to s_u, s_v [S] and reads out
  s_u * s_v (order-free, as the subgraph SEG's structure score reads z_u * z_v);
- fusion: the decoder MLP (OGB's LinkPredictor shape, `decoder_layers` layers of width H) reads
  [z_u * z_v | s_u * s_v | log(1 + paths)] and gives one logit (`fusion="concat"`, the default);
  or, with `fusion="sum"`, the issue's "final score = structure score + semantic score": the
  decoder reads z_u * z_v alone (the GCN baseline's predictor) and a 2-layer structure head reads
  [s_u * s_v | log(1 + paths)], their logits added. Everything trains jointly with OGB's loss
  (BCE over positives + BCE over as many uniform random negatives).

Options beyond that reconstruction (all off by default, each a flag of `launch.seg`):
`path_pool` adds a label-grouped readout of the GNN: the mean of the projected embeddings of the
nodes with label c2 = 1 (the pair's common neighbours; NCN sums them), from the dense 0/1 training
adjacency (N <= `path_features.DENSE_MAX_NODES`); `mask_targets` leaves each step's positive edges
out of the GNN's propagation (`gae.RemovedEdges`); `loss="auc"` is PLNLP's pairwise ranking loss;
`num_neg` draws K negatives per positive; `ema` scores a moving average of the parameters.

Training negatives are drawn on the host per epoch (seeded by (seed, epoch)) so their path
features can be computed in numba before the jitted step; the positives' features are computed
once (the preprocessing time), the evaluation pairs' once per split name.

Pure functions: `init(cfg, num_nodes, num_features, hist_dim, rng) -> params` ({"gnn": gae
params without a decoder, "structure": {...}, "decoder": {...}, "pool"?: {...}}), `gae.encode`
for z, `decode(params, z, pairs, hist, paths, cfg, ..., adj=) -> logits`; `FullSEGRunner` has
the runner interface of `graphs/link_train.py` (`init`, `train_epoch`, `score`, `params`).
"""

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from graphs import gae
from graphs import negatives
from graphs import path_features
from graphs import subgraph_runner
from graphs.errors import GraphError
from graphs.link_data import LinkSplit

FUSIONS = ("concat", "sum")
SCORE_CHUNK = gae.SCORE_CHUNK  # pairs per decoder call in `score`
_dropout = gae._dropout  # pylint: disable=protected-access
_next_pow2 = gae._next_pow2  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class FullSEGConfig:
  """Hyperparameters (GNN defaults: OGB's ogbl-ddi GCN example, as `gae.GAEConfig`).

  Attributes:
    encoder: the ordinary GNN, "gcn" or "sage".
    hidden: H, GNN width and decoder width.
    num_layers: GNN layers.
    dropout: after every GNN layer but the last and between decoder layers, in training.
    decoder_layers: Linear layers of the fusion decoder (-> 1).
    embedding_dim: learnable node embedding width.
    use_embedding: concatenate the embedding to node features (always used without features).
    num_buckets: B, log-scale buckets of the length-3 path counts (`path_features`).
    structure_hidden: S, width of the structure encoder.
    lr: Adam learning rate.
    batch_size: positive pairs per step (as many random negatives are added).
    adjacency: GNN propagation, "auto", "dense" or "sparse" (`gae.use_dense`).
    path_pool: C, width of the label-pooled readout: the mean of the GNN embeddings of the nodes
      on the pair's length-2 paths (its common neighbours), projected to C (0: off).
    mask_targets: leave each step's positive edges out of the GNN's propagation
      (`gae.RemovedEdges`), so a training pair's embeddings do not see its own edge.
    loss: "bce" (OGB's) or "auc" (`gae.ranking_loss`, PLNLP's pairwise square loss).
    fusion: "concat" (one decoder over [z_u * z_v | s_u * s_v | log(1 + paths)]) or "sum" (the
      decoder over z_u * z_v plus a structure head over [s_u * s_v | log(1 + paths)]: late
      fusion, the semantic logit plus the structure logit).
    num_neg: K, random negatives per positive in training (OGB: 1).
    neg_sampler, grad_clip: as `gae.GAEConfig`'s ("uniform" or "non_edge" negatives; per-group
      gradient clipping before Adam when > 0).
    ema: decay of an exponential moving average of the parameters, updated every step and used
      for scoring and the checkpoint (0: score the raw parameters).
  """
  encoder: str = "gcn"
  hidden: int = 256
  num_layers: int = 2
  dropout: float = 0.5
  decoder_layers: int = 3
  embedding_dim: int = 256
  use_embedding: bool = False
  num_buckets: int = 12
  structure_hidden: int = 64
  lr: float = 0.005
  batch_size: int = 65536
  adjacency: str = "auto"
  path_pool: int = 0
  mask_targets: bool = False
  loss: str = "bce"
  fusion: str = "concat"
  ema: float = 0.0
  num_neg: int = 1
  neg_sampler: str = "uniform"
  grad_clip: float = 0.0

  def __post_init__(self):
    self.gae_config()  # validates the shared fields
    for name in ("num_buckets", "structure_hidden", "path_pool", "num_neg"):
      value = getattr(self, name)
      low = 0 if name == "path_pool" else 1
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise GraphError(f"FullSEGConfig.{name} must be an integer >= {low}, got {value!r}")
    if not 0.0 <= self.ema < 1.0:
      raise GraphError(f"FullSEGConfig.ema must lie in [0, 1), got {self.ema!r}")
    if self.loss not in gae.LOSSES:
      raise GraphError(f"FullSEGConfig.loss must be one of {', '.join(gae.LOSSES)}, got "
                       f"{self.loss!r}")
    if self.fusion not in FUSIONS:
      raise GraphError(f"FullSEGConfig.fusion must be one of {', '.join(FUSIONS)}, got "
                       f"{self.fusion!r}")
    if self.num_buckets < 2:
      raise GraphError(f"FullSEGConfig.num_buckets must be >= 2, got {self.num_buckets}")

  def gae_config(self) -> gae.GAEConfig:
    """The GNN part as a `gae.GAEConfig` (its decoder unused)."""
    return gae.GAEConfig(encoder=self.encoder, hidden=self.hidden, num_layers=self.num_layers,
                         dropout=self.dropout, decoder="mlp", decoder_layers=self.decoder_layers,
                         embedding_dim=self.embedding_dim, use_embedding=self.use_embedding,
                         lr=self.lr, batch_size=self.batch_size, adjacency=self.adjacency,
                         neg_sampler=self.neg_sampler, grad_clip=self.grad_clip)


def init(cfg: FullSEGConfig, num_nodes: int, num_features: int, hist_dim: int,
         rng: jax.Array) -> dict[str, Any]:
  """Fresh parameters.

  Args:
    cfg: hyperparameters.
    num_nodes: N.
    num_features: F (0: none).
    hist_dim: 2B, the label classes per side (`PathFeaturizer.hist_dim`).
    rng: PRNG key.

  Returns:
    {"gnn": {"embedding"?, "encoder"}, "structure": {"lin_0": [2B, S], "lin_1": [S, S]},
    "decoder": {"lin_0": [H + S + 2 + C, H], ..., "lin_{L-1}": [H, 1]}, and with C =
    `path_pool` > 0 "pool": {"kernel": [H, C]}} (torch.nn.Linear init). With `fusion="sum"` the
    decoder's first layer is [H + C, H] and "structure_head": {"lin_0": [S + 2, S], "lin_1":
    [S, 1]} scores the structure.
  """
  k_gnn, k_s0, k_s1, k_dec = jax.random.split(rng, 4)
  k_pool = jax.random.fold_in(rng, 1)
  gnn = gae.init(cfg.gae_config(), num_nodes, num_features, k_gnn)
  del gnn["decoder"]
  s = cfg.structure_hidden
  structure = {"lin_0": gae._torch_linear(k_s0, hist_dim, s),  # pylint: disable=protected-access
               "lin_1": gae._torch_linear(k_s1, s, s)}  # pylint: disable=protected-access
  decoder = {}
  width = cfg.hidden + cfg.path_pool + (s + 2 if cfg.fusion == "concat" else 0)
  for i, k in enumerate(jax.random.split(k_dec, cfg.decoder_layers)):
    out = 1 if i == cfg.decoder_layers - 1 else cfg.hidden
    decoder[f"lin_{i}"] = gae._torch_linear(k, width, out)  # pylint: disable=protected-access
    width = cfg.hidden
  params = {"gnn": gnn, "structure": structure, "decoder": decoder}
  if cfg.fusion == "sum":
    k_h0, k_h1 = jax.random.split(jax.random.fold_in(rng, 2))
    params["structure_head"] = {
        "lin_0": gae._torch_linear(k_h0, s + 2, s),  # pylint: disable=protected-access
        "lin_1": gae._torch_linear(k_h1, s, 1)}  # pylint: disable=protected-access
  if cfg.path_pool:
    params["pool"] = gae._torch_linear(  # pylint: disable=protected-access
        k_pool, cfg.hidden, cfg.path_pool, bias=False)
  return params


def structure_code(params: dict[str, Any], hist: jax.Array) -> jax.Array:
  """[P, S] s_u * s_v from hist [P, 2, 2B] (counts; log(1 + .) taken here)."""
  x = jnp.log1p(hist)
  p0, p1 = params["structure"]["lin_0"], params["structure"]["lin_1"]
  x = jax.nn.relu(x @ p0["kernel"] + p0["bias"])
  x = x @ p1["kernel"] + p1["bias"]
  return x[:, 0] * x[:, 1]


def path_pool(params: dict[str, Any], z: jax.Array, pairs: jax.Array,
              adj: jax.Array) -> jax.Array:
  """[P, C] mean of (z W_pool) over the nodes w with u-w-v paths (A[u, w] A[w, v] = 1; zero when
  there are none; their number is already a decoder input).

  adj is the [N, N] 0/1 training adjacency without self loops, so neither u nor v is counted
  and the target edge u-v does not change the set. (A sum, NCN's readout, trained worse on ddi:
  hundreds of common neighbours give inputs hundreds of times larger than z_u * z_v.)"""
  y = z @ params["pool"]["kernel"]
  m = adj[pairs[:, 0]] * adj[pairs[:, 1]]
  return (m @ y) / jnp.maximum(m.sum(axis=-1, keepdims=True), 1.0)


def decode(params: dict[str, Any], z: jax.Array, pairs: jax.Array, hist: jax.Array,
           paths: jax.Array, cfg: FullSEGConfig, *, train: bool = False,
           rng: jax.Array | None = None, adj: jax.Array | None = None) -> jax.Array:
  """Link logits.

  Args:
    params: from `init`.
    z: [N, H] from `gae.encode` of `params["gnn"]`.
    pairs: [P, 2] node ids.
    hist: [P, 2, 2B] label histograms; paths: [P, 2] path counts (`PathFeaturizer`).
    cfg: the hyperparameters.
    train: dropout between decoder layers (needs `rng`).
    rng: dropout key.
    adj: [N, N] 0/1 training adjacency without self loops, needed when `cfg.path_pool` > 0.

  Returns:
    [P] float32 logits.
  """
  if cfg.path_pool and adj is None:
    raise GraphError("decode: path_pool > 0 needs the [N, N] adjacency (adj=)")
  structure = [structure_code(params, hist), jnp.log1p(paths)]
  parts = [z[pairs[:, 0]] * z[pairs[:, 1]]]
  if cfg.fusion == "concat":
    parts += structure
  if cfg.path_pool:
    parts.append(path_pool(params, z, pairs, adj))
  x = jnp.concatenate(parts, axis=-1)
  for i in range(cfg.decoder_layers):
    p = params["decoder"][f"lin_{i}"]
    x = x @ p["kernel"] + p["bias"]
    if i < cfg.decoder_layers - 1:
      x = jax.nn.relu(x)
      if train and cfg.dropout > 0:
        x = _dropout(x, cfg.dropout, jax.random.fold_in(rng, i))
  logits = x[:, 0]
  if cfg.fusion == "sum":
    h0, h1 = params["structure_head"]["lin_0"], params["structure_head"]["lin_1"]
    h = jax.nn.relu(jnp.concatenate(structure, axis=-1) @ h0["kernel"] + h0["bias"])
    logits = logits + (h @ h1["kernel"] + h1["bias"])[:, 0]
  return logits


class FullSEGState(NamedTuple):
  """`params` trained by Adam (`opt_state`); `ema` their moving average (None without one)."""
  params: dict[str, Any]
  opt_state: Any
  ema: dict[str, Any] | None = None


class _Batch(NamedTuple):
  pairs: jax.Array  # [(1 + K) B, 2] positives, then K blocks of B negatives
  hist: jax.Array  # [(1 + K) B, 2, 2 * num_buckets]
  paths: jax.Array  # [(1 + K) B, 2]
  mask: jax.Array  # [B] False on padded positives (and their negatives)


def _train_step(state: FullSEGState, graph: gae.GraphArrays, adj: jax.Array | None,
                batch: _Batch, key: jax.Array, *, cfg: FullSEGConfig,
                optimizer: optax.GradientTransformation) -> tuple[FullSEGState, jax.Array]:
  k_enc, k_dec = jax.random.split(key)
  gcfg = cfg.gae_config()

  removed = None
  if cfg.mask_targets:
    pos = batch.pairs[:batch.mask.shape[0]]
    removed = gae.RemovedEdges(senders=jnp.concatenate([pos[:, 0], pos[:, 1]]),
                               receivers=jnp.concatenate([pos[:, 1], pos[:, 0]]),
                               mask=jnp.concatenate([batch.mask, batch.mask]))

  def loss_fn(params):
    z = gae.encode(params["gnn"], graph, gcfg, train=True, rng=k_enc, removed=removed)
    logits = decode(params, z, batch.pairs, batch.hist, batch.paths, cfg, train=True, rng=k_dec,
                    adj=adj)
    return gae.link_loss(cfg.loss, logits, batch.mask)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema
  if ema is not None:
    ema = jax.tree.map(lambda e, p: cfg.ema * e + (1.0 - cfg.ema) * p, ema, params)
  return FullSEGState(params, opt_state, ema), loss


class FullSEGRunner:
  """Trains and scores a `FullSEGConfig` model on a `LinkSplit` (runner interface of
  `graphs/link_train.py`). One jitted step per fixed [batch] shape (the last partial batch padded
  and masked); scoring encodes once per params and decodes fixed-size chunks."""

  def __init__(self, split: LinkSplit, cfg: FullSEGConfig, seed: int):
    if split.train_pos.shape[0] == 0:
      raise GraphError(f"{split.name}: no training edges")
    if int(seed) < 0:
      raise GraphError(f"seed must be >= 0, got {seed}")
    self.split, self.cfg, self.seed = split, cfg, int(seed)
    self.mode = "full-graph"
    self.num_nodes = int(split.num_nodes)
    self.num_features = 0 if split.features is None else int(split.features.shape[1])
    start = time.perf_counter()
    indptr, indices = subgraph_runner.training_csr(split)
    self.featurizer = path_features.PathFeaturizer(indptr, indices, cfg.num_buckets)
    self._pos = np.asarray(split.train_pos, np.int32)
    self._pos_hist, self._pos_paths = self.featurizer(self._pos)
    self.preprocess_seconds = time.perf_counter() - start
    self.graph = gae.make_graph(self.num_nodes, split.train_pos, cfg.gae_config(),
                                split.features)
    self.batch = min(cfg.batch_size, self._pos.shape[0])
    self.adj = None
    if cfg.path_pool:
      if self.num_nodes > path_features.DENSE_MAX_NODES:
        raise GraphError(f"path_pool needs a dense [N, N] adjacency: N = {self.num_nodes} > "
                         f"{path_features.DENSE_MAX_NODES}; pass path_pool=0")
      a = path_features.dense_adjacency(indptr, indices)
      np.fill_diagonal(a, 0.0)
      self.adj = jnp.asarray(a)
    self._negatives = negatives.NegativeSampler(self.num_nodes, split.train_pos, cfg.neg_sampler)
    self._optimizer = gae.make_optimizer(cfg.lr, cfg.grad_clip)
    self._step = jax.jit(functools.partial(_train_step, cfg=cfg, optimizer=self._optimizer))
    self._encode = jax.jit(functools.partial(gae.encode, cfg=cfg.gae_config(), train=False))
    self._decode = jax.jit(functools.partial(decode, cfg=cfg, train=False))
    self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    self._z_cache: tuple[list[Any], jax.Array] | None = None

  def init(self) -> FullSEGState:
    params = init(self.cfg, self.num_nodes, self.num_features, self.featurizer.hist_dim,
                  jax.random.key(self.seed))
    ema = jax.tree.map(jnp.copy, params) if self.cfg.ema else None
    return FullSEGState(params, self._optimizer.init(params), ema)

  def params(self, state: FullSEGState) -> dict[str, Any]:
    """The parameters scored and saved: the moving average when `cfg.ema` is set."""
    return state.params if state.ema is None else state.ema

  def train_epoch(self, state: FullSEGState, epoch: int) -> tuple[FullSEGState, dict]:
    """One pass over a (seed, epoch)-seeded permutation of the positives, each batch with
    `num_neg` times as many random negatives (`neg_sampler`; drawn and labelled on the host for the
    whole epoch first)."""
    num, b, k = self._pos.shape[0], self.batch, self.cfg.num_neg
    rng = np.random.default_rng((self.seed, int(epoch)))
    perm = rng.permutation(num)
    neg = self._negatives.sample(rng, num * k)
    neg_hist, neg_paths = self.featurizer(neg)
    key = jax.random.fold_in(jax.random.key(self.seed), int(epoch))
    losses, counts = [], []
    for step, start in enumerate(range(0, num, b)):
      idx = perm[start:start + b]
      rows = np.zeros(b, np.int64)
      rows[:idx.size] = idx
      mask = np.arange(b) < idx.size
      neg_rows = (rows[None, :] + num * np.arange(k)[:, None]).reshape(-1)  # K blocks of B
      batch = _Batch(
          pairs=np.concatenate([self._pos[rows], neg[neg_rows]]),
          hist=np.concatenate([self._pos_hist[rows], neg_hist[neg_rows]]),
          paths=np.concatenate([self._pos_paths[rows], neg_paths[neg_rows]]),
          mask=mask)
      state, loss = self._step(state, self.graph, self.adj, batch, jax.random.fold_in(key, step))
      losses.append(loss)
      counts.append(idx.size)
    loss = float(np.average(np.asarray(jax.device_get(losses)), weights=counts))
    return state, {"loss": loss, "pairs": (1 + k) * num}

  def _features(self, pairs: np.ndarray, name: str | None):
    if name is not None and name in self._cache and np.array_equal(self._cache[name][0], pairs):
      return self._cache[name][1:]
    hist, paths = self.featurizer(pairs)
    if name is not None:
      self._cache[name] = (pairs.copy(), hist, paths)
    return hist, paths

  def _embed(self, state: FullSEGState) -> jax.Array:
    leaves = jax.tree.leaves(self.params(state))
    if self._z_cache is not None and len(leaves) == len(self._z_cache[0]) and all(
        a is b for a, b in zip(leaves, self._z_cache[0])):
      return self._z_cache[1]
    z = self._encode(self.params(state)["gnn"], self.graph)
    self._z_cache = (leaves, z)
    return z

  def score(self, state: FullSEGState, pairs: np.ndarray, name: str | None = None) -> np.ndarray:
    """[P] logits of [P, 2] pairs (`name` caches the pairs' path features across calls)."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
      raise GraphError(f"pairs must have shape [P, 2], got {pairs.shape}")
    pairs = pairs.astype(np.int64)
    hist, paths = self._features(pairs, name)
    out = np.zeros(pairs.shape[0], np.float32)
    if not pairs.shape[0]:
      return out
    z = self._embed(state)
    chunk = min(SCORE_CHUNK, max(1024, _next_pow2(pairs.shape[0])))
    for start in range(0, pairs.shape[0], chunk):
      stop = min(start + chunk, pairs.shape[0])
      rows = np.zeros(chunk, np.int64)
      rows[:stop - start] = np.arange(start, stop)
      out[start:stop] = np.asarray(self._decode(
          self.params(state), z, pairs[rows].astype(np.int32), hist[rows], paths[rows],
          adj=self.adj))[:stop - start]
    return out
