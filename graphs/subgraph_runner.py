"""Training and scoring of the subgraph models (SEG, SEAL) on a `LinkSplit`.

The runner owns everything between the split and the jitted step:

- the message-passing graph: the training edges, both directions, as a CSR (`training_csr`);
- structural labels: SEG path labels (`enclosing.path_counts` -> one-hots) or SEAL's DRNL;
- two modes for the subgraphs. *Cached*: the subgraphs and labels of every training positive, one
  fixed set of as many random negatives, and the validation/test pairs are extracted once (the
  preprocessing cost, timed) and batches are sliced out of them (`select`). *Dynamic*: each batch
  is extracted and labelled when it is needed and training negatives are drawn afresh every
  epoch; nothing is kept, for graphs whose subgraphs do not fit in memory (SEAL's dynamic mode).
  `mode="auto"` estimates the cache's size from a sample of 256 subgraphs and caches below
  `cache_max_edges` edges in total;
- data parallelism: a batch of B graphs is cut into `data_shards` shards of B / shards graphs,
  each padded (`jraph.pad_with_graphs`) to the same power-of-two sizes and stacked on a leading
  axis that is sharded over the mesh's `data` axis (`NamedSharding`); the step `vmap`s the model
  over it, so XLA runs one shard per device and averages the gradients;
- one `jax.jit`ted train step (forward, BCE, AdamW) and one jitted scoring function; padded sizes
  are powers of two, so each compiles once per size bucket (`compiles` counts the buckets seen).

The interface shared with `graphs.gae.GAERunner` (the loop is `graphs/link_train.py`):
`init() -> state`, `train_epoch(state, epoch) -> (state, {"loss", "pairs"})`,
`score(state, pairs [P, 2]) -> [P] logits`, `params(state)`.
"""

import dataclasses
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from graphs import dgcnn
from graphs import enclosing
from graphs import seg
from graphs.errors import GraphError
from graphs.link_data import LinkSplit

MODES = ("auto", "cached", "dynamic")


@dataclasses.dataclass(frozen=True)
class SubgraphConfig:
  """Settings of a SEG / SEAL run.

  Attributes:
    model: "seg" or "seal".
    num_hops: k of the enclosing subgraphs.
    max_nodes_per_hop: cap per hop (None: no cap).
    lam: SEG's path length bound (2..4).
    per_length: SEG labels one-hot each c_w^(l) instead of the total c_w.
    embedding_dim: learnable node embedding width (0: none).
    use_features: feed the split's node features (when it has them).
    hidden: SEG structure / projection width, SEAL DRNL embedding width.
    gnn_hidden: DGCNN convolution width.
    gnn_layers: DGCNN convolutions of width `gnn_hidden`.
    sortpool_k: SortPool k; 0 picks SEAL's 60% quantile of training subgraph sizes.
    dropout: DGCNN dropout.
    pair_readout: SEG's target-pair readout (`seg.SubgraphModelConfig.pair_readout`).
    pair_counts: SEG reads the pair's exact common-neighbour count (`seg.SubgraphModelConfig`).
    batch_size: graphs per step (positives + negatives), a multiple of `data_shards`.
    lr: AdamW learning rate.
    weight_decay: AdamW decoupled weight decay.
    train_pairs_per_epoch: positives per epoch (a seeded sample); 0: all training edges.
    mode: "auto", "cached" or "dynamic" (module docstring).
    cache_max_edges: the "auto" threshold, in subgraph edges summed over the cache.
    data_shards: size of the mesh's `data` axis (devices used).
    eval_batch_size: graphs per scoring call.
  """
  model: str = "seg"
  num_hops: int = 1
  max_nodes_per_hop: Optional[int] = None
  lam: int = 3
  per_length: bool = False
  embedding_dim: int = 32
  use_features: bool = True
  hidden: int = 32
  gnn_hidden: int = 32
  gnn_layers: int = 3
  sortpool_k: int = 0
  dropout: float = 0.5
  pair_readout: bool = True
  pair_counts: bool = False
  batch_size: int = 64
  lr: float = 1e-3
  weight_decay: float = 0.0
  train_pairs_per_epoch: int = 0
  mode: str = "auto"
  cache_max_edges: int = 50_000_000
  data_shards: int = 1
  eval_batch_size: int = 256

  def __post_init__(self):
    if self.model not in seg.MODELS:
      raise GraphError(f"unknown subgraph model {self.model!r}; choose one of "
                       f"{', '.join(seg.MODELS)}")
    if self.mode not in MODES:
      raise GraphError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
    if self.batch_size < 2 or self.data_shards < 1 or self.batch_size % self.data_shards:
      raise GraphError(f"batch_size ({self.batch_size}) must be >= 2 and a multiple of "
                       f"data_shards ({self.data_shards})")
    if self.eval_batch_size < 1 or self.eval_batch_size % self.data_shards:
      raise GraphError(f"eval_batch_size ({self.eval_batch_size}) must be a positive multiple of "
                       f"data_shards ({self.data_shards})")
    if not 2 <= self.lam <= 4:
      raise GraphError(f"lam must be in 2..4, got {self.lam}")
    if self.train_pairs_per_epoch < 0:
      raise GraphError(f"train_pairs_per_epoch must be >= 0, got {self.train_pairs_per_epoch}")

  @property
  def label_dim(self) -> int:
    return self.lam * (self.lam + 1) if self.per_length else self.lam + 1


def training_csr(split: LinkSplit) -> tuple[np.ndarray, np.ndarray]:
  """The message-passing graph: `split.train_pos` in both directions, deduplicated, as a CSR.

  Returns:
    (indptr [N + 1] int64, indices [2 * E_unique] int64), neighbours sorted per row.
  """
  n = split.num_nodes
  e = np.asarray(split.train_pos, np.int64)
  e = e[e[:, 0] != e[:, 1]]
  keys = np.concatenate([e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]])
  keys.sort()  # np.unique on int64 is hash-based and slow in numpy 2.4: sort, then drop repeats.
  keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys
  src, dst = keys // n, keys % n
  indptr = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
  return indptr, dst


def select(subgraphs: enclosing.EnclosingSubgraphs,
           idx: np.ndarray) -> tuple[enclosing.EnclosingSubgraphs, np.ndarray]:
  """The subgraphs `idx` (in that order) and the positions of their nodes in the input.

  Args:
    subgraphs: P extracted subgraphs.
    idx: [Q] int indices into them.

  Returns:
    (the Q subgraphs, [N_Q] int64 row indices into per-node arrays of `subgraphs`).
  """
  def ranges(offsets):
    starts, counts = offsets[idx], offsets[idx + 1] - offsets[idx]
    new = np.zeros(idx.size + 1, np.int64)
    np.cumsum(counts, out=new[1:])
    rows = np.repeat(starts - new[:-1], counts) + np.arange(new[-1])
    return rows, new
  node_rows, node_offsets = ranges(subgraphs.node_offsets)
  edge_rows, edge_offsets = ranges(subgraphs.edge_offsets)
  out = enclosing.EnclosingSubgraphs(
      subgraphs.pairs[idx], subgraphs.nodes[node_rows], subgraphs.hops[node_rows], node_offsets,
      subgraphs.senders[edge_rows], subgraphs.receivers[edge_rows], edge_offsets)
  return out, node_rows


class _Labelled(NamedTuple):
  """Subgraphs with their per-node structural labels ([N, L] float32 or [N] int32)."""
  subgraphs: enclosing.EnclosingSubgraphs
  labels: np.ndarray


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  rng: jax.Array


class SubgraphRunner:
  """SEG / SEAL on one split (module docstring)."""

  def __init__(self, split: LinkSplit, cfg: SubgraphConfig, seed: int):
    self.split, self.cfg, self.seed = split, cfg, int(seed)
    if split.train_pos.shape[0] == 0:
      raise GraphError(f"{split.name}: no training edges")
    devices = jax.devices()
    if cfg.data_shards > len(devices):
      raise GraphError(f"data_shards={cfg.data_shards} but only {len(devices)} devices")
    self.mesh = jax.sharding.Mesh(np.array(devices[:cfg.data_shards]), ("data",))
    self.sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
    self.indptr, self.indices = training_csr(split)
    features = split.features if cfg.use_features else None
    self.features = None if features is None else jnp.asarray(features, jnp.float32)
    start = time.perf_counter()
    # Size estimate (auto mode, SortPool k) from a sample of training subgraphs.
    rng = np.random.default_rng(self.seed)
    sample = split.train_pos[rng.choice(split.train_pos.shape[0],
                                        min(256, split.train_pos.shape[0]), replace=False)]
    probe = self._extract(sample)
    k = cfg.sortpool_k or dgcnn.sortpool_k(np.diff(probe.node_offsets))
    self.model_cfg = seg.SubgraphModelConfig(
        model=cfg.model, label_dim=cfg.label_dim, num_nodes=split.num_nodes,
        feature_dim=0 if self.features is None else int(self.features.shape[1]),
        embedding_dim=cfg.embedding_dim, hidden=cfg.hidden,
        readout=dgcnn.DGCNNConfig(cfg.gnn_hidden, cfg.gnn_layers, k, cfg.dropout),
        pair_readout=cfg.pair_readout, pair_counts=cfg.pair_counts and cfg.model == "seg")
    num_cached = 2 * split.train_pos.shape[0] + sum(
        0 if a is None else a.shape[0]
        for a in (split.valid_pos, split.valid_neg, split.test_pos, split.test_neg))
    self.estimated_cache_edges = int(num_cached * np.diff(probe.edge_offsets).mean())
    mode = cfg.mode
    if mode == "auto":
      mode = "cached" if self.estimated_cache_edges <= cfg.cache_max_edges else "dynamic"
    self.mode = mode
    self._cache: dict[str, _Labelled] = {}
    if mode == "cached":
      neg = self._random_pairs(np.random.default_rng([self.seed, 1 << 20]),
                               split.train_pos.shape[0])
      self._cache["train_pos"] = self._labelled(split.train_pos)
      self._cache["train_neg"] = self._labelled(neg)
    self.preprocess_seconds = time.perf_counter() - start
    self.optimizer = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    self.shapes_seen: set[tuple[int, ...]] = set()
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._score_fn = jax.jit(self._scores)

  # -- data ------------------------------------------------------------------------------------

  def _extract(self, pairs: np.ndarray) -> enclosing.EnclosingSubgraphs:
    cfg = self.cfg
    return enclosing.extract(self.indptr, self.indices, pairs, cfg.num_hops, cfg.max_nodes_per_hop,
                             seed=self.seed, remove_target_edge=True)

  def _labels(self, subgraphs: enclosing.EnclosingSubgraphs) -> np.ndarray:
    if self.cfg.model == "seg":
      counts = enclosing.path_counts(subgraphs, self.cfg.lam)
      return enclosing.path_label_features(counts, self.cfg.lam, self.cfg.per_length)
    return enclosing.drnl_labels(subgraphs).astype(np.int32)

  def _labelled(self, pairs: np.ndarray) -> _Labelled:
    sub = self._extract(pairs)
    return _Labelled(sub, self._labels(sub))

  def _random_pairs(self, rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform node pairs u != v (SEAL's negatives; a rare true edge among them is noise)."""
    n = self.split.num_nodes
    u = rng.integers(0, n, count)
    v = (u + rng.integers(1, n, count)) % n
    return np.stack([u, v], axis=1)

  def cache_split(self, name: str, pairs: np.ndarray) -> None:
    """Extracts and labels `pairs` once for repeated scoring under `name` (cached mode only)."""
    if self.mode == "cached" and name not in self._cache:
      self._cache[name] = self._labelled(pairs)

  def _batch(self, parts: list[tuple[_Labelled, int]]):
    """Shards of one batch, padded alike and stacked: (graph, u, v, graph_mask), leading axis S.

    `parts` holds (subgraphs, real count): only the first `real` graphs of a shard are unmasked.
    """
    shards = []
    for part, _ in parts:
      labels = part.labels
      b = enclosing.to_graphs_tuple(
          part.subgraphs, lambda s, labels=labels: {"label": labels,
                                                    "id": s.nodes.astype(np.int32)},
          pad_to_power_of_two=False)
      if self.model_cfg.pair_counts:
        cn = enclosing.common_neighbours(self.indptr, self.indices, part.subgraphs.pairs)
        b = b._replace(graph=b.graph._replace(globals=np.log1p(cn).astype(np.float32)[:, None]))
      shards.append(b)
    n_pad = enclosing.next_pow2(max(int(b.graph.n_node.sum()) for b in shards) + 1)
    e_pad = enclosing.next_pow2(max(max(int(b.graph.n_edge.sum()) for b in shards), 1))
    g_pad = enclosing.next_pow2(max(b.graph.n_node.shape[0] for b in shards) + 1)
    padded = []
    for b, (_, real) in zip(shards, parts):
      p = b.graph.n_node.shape[0]
      graph = jraph.pad_with_graphs(b.graph, n_pad, e_pad, g_pad)
      graph = graph._replace(senders=graph.senders.astype(np.int32),
                             receivers=graph.receivers.astype(np.int32),
                             n_node=graph.n_node.astype(np.int32),
                             n_edge=graph.n_edge.astype(np.int32))
      total = int(b.graph.n_node.sum())
      pad = np.full(g_pad - p, total, np.int32)
      mask = np.arange(g_pad) < real
      padded.append((graph, np.concatenate([b.u_index, pad]), np.concatenate([b.v_index, pad]),
                     mask))
    self.shapes_seen.add((n_pad, e_pad, g_pad))
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *padded)
    return jax.device_put(stacked, self.sharding)

  def _split_parts(self, items: list[_Labelled]) -> list[tuple[_Labelled, int]]:
    """Concatenated rows cut into `data_shards` contiguous shards (as equal as possible).

    Returns (shard, real count) pairs; a shard left empty holds one repeated graph, count 0.
    """
    whole = items[0] if len(items) == 1 else self._concat(items)
    p = whole.subgraphs.num_pairs
    bounds = np.linspace(0, p, self.cfg.data_shards + 1).astype(np.int64)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
      idx = np.arange(a, b) if b > a else np.array([p - 1])
      sub, rows = select(whole.subgraphs, idx)
      out.append((_Labelled(sub, whole.labels[rows]), int(b - a)))
    return out

  @staticmethod
  def _concat(items: list[_Labelled]) -> _Labelled:
    subs = [it.subgraphs for it in items]
    node_base = np.cumsum([0] + [s.node_offsets[-1] for s in subs])
    edge_base = np.cumsum([0] + [s.edge_offsets[-1] for s in subs])
    sub = enclosing.EnclosingSubgraphs(
        np.concatenate([s.pairs for s in subs]), np.concatenate([s.nodes for s in subs]),
        np.concatenate([s.hops for s in subs]),
        np.concatenate([[0]] + [s.node_offsets[1:] + b for s, b in zip(subs, node_base)]),
        np.concatenate([s.senders for s in subs]), np.concatenate([s.receivers for s in subs]),
        np.concatenate([[0]] + [s.edge_offsets[1:] + b for s, b in zip(subs, edge_base)]))
    return _Labelled(sub, np.concatenate([it.labels for it in items]))

  # -- model -----------------------------------------------------------------------------------

  def _logits(self, params, features, batch, train, rng):
    graph, u, v, _ = batch
    keys = jax.random.split(rng, graph.n_node.shape[0])

    def one(graph, u, v, key):
      return seg.apply(params, graph, u, v, self.model_cfg, features=features, train=train,
                       rng=key)
    return jax.vmap(one)(graph, u, v, keys)  # [S, G_pad]

  def _step(self, state: TrainState, features, batch, targets):
    rng, key = jax.random.split(state.rng)
    mask = batch[3]

    def loss_fn(params):
      logits = self._logits(params, features, batch, True, key)
      losses = optax.sigmoid_binary_cross_entropy(logits, targets)
      return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, rng), loss

  def _scores(self, params, features, batch):
    return self._logits(params, features, batch, False, jax.random.key(0))

  # -- runner interface ------------------------------------------------------------------------

  def init(self) -> TrainState:
    key, rng = jax.random.split(jax.random.key(self.seed))
    params = seg.init(self.model_cfg, key)
    return TrainState(params, self.optimizer.init(params), rng)

  def params(self, state: TrainState):
    return state.params

  def _targets(self, parts, labels: np.ndarray, g_pad: int) -> jax.Array:
    out = np.zeros((len(parts), g_pad), np.float32)
    start = 0
    for i, (_, real) in enumerate(parts):
      out[i, :real] = labels[start:start + real]
      start += real
    return jax.device_put(out, self.sharding)

  def train_epoch(self, state: TrainState, epoch: int) -> tuple[TrainState, dict]:
    """One pass over the epoch's positives and as many negatives, in shuffled batches."""
    cfg, split = self.cfg, self.split
    rng = np.random.default_rng([self.seed, epoch])
    num_train = split.train_pos.shape[0]
    count = min(cfg.train_pairs_per_epoch or num_train, num_train)
    pos_idx = rng.permutation(num_train)[:count]
    if self.mode == "cached":
      neg_idx = rng.permutation(num_train)[:count]
    else:
      neg_pairs = self._random_pairs(rng, count)
    # One shuffled order over positives (ids < count) and negatives, so each batch mixes both;
    # within a batch the positives come first.
    order = rng.permutation(2 * count)
    losses, seen = [], 0
    for start in range(0, 2 * count, cfg.batch_size):
      chosen = order[start:start + cfg.batch_size]
      is_pos = chosen < count
      pos_sel, neg_sel = pos_idx[chosen[is_pos]], chosen[~is_pos] - count
      labels = np.concatenate([np.ones(pos_sel.size, np.float32),
                               np.zeros(neg_sel.size, np.float32)])
      if self.mode == "cached":
        items = []
        for name, sel in (("train_pos", pos_sel), ("train_neg", neg_idx[neg_sel])):
          if sel.size:
            sub, rows = select(self._cache[name].subgraphs, sel)
            items.append(_Labelled(sub, self._cache[name].labels[rows]))
      else:
        items = [self._labelled(np.concatenate([split.train_pos[pos_sel], neg_pairs[neg_sel]]))]
      parts = self._split_parts(items)
      batch = self._batch(parts)
      targets = self._targets(parts, labels, batch[3].shape[1])
      state, loss = self._train_step(state, self.features, batch, targets)
      losses.append(float(loss) * len(chosen))
      seen += len(chosen)
    return state, {"loss": sum(losses) / max(seen, 1), "pairs": seen}

  def score(self, state: TrainState, pairs: np.ndarray, name: Optional[str] = None) -> np.ndarray:
    """[P] float32 logits of `pairs`; with `name`, a cached split of that name is used/filled."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if name is not None:
      self.cache_split(name, pairs)
    cached = self._cache.get(name) if name is not None else None
    out = np.empty(pairs.shape[0], np.float32)
    step = self.cfg.eval_batch_size
    for start in range(0, pairs.shape[0], step):
      idx = np.arange(start, min(start + step, pairs.shape[0]))
      if cached is not None:
        sub, rows = select(cached.subgraphs, idx)
        item = _Labelled(sub, cached.labels[rows])
      else:
        item = self._labelled(pairs[idx])
      parts = self._split_parts([item])
      batch = self._batch(parts)
      logits = np.asarray(self._score_fn(state.params, self.features, batch))
      pos = 0
      for i, (_, real) in enumerate(parts):
        out[start + pos:start + pos + real] = logits[i, :real]
        pos += real
    return out

  @property
  def compiles(self) -> int:
    """Distinct padded shapes seen (an upper bound on compilations of each jitted function)."""
    return len(self.shapes_seen)
