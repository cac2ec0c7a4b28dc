"""Full-batch GraphSAGE training on a Planetoid graph, and loading the trained model back.

A run's workdir, as `load_model` (and the GNN server) reads it:

  checkpoint/   Orbax `StandardCheckpointer` directory of the params (written atomically: Orbax
                writes a temporary directory and renames it);
  metrics.json  accuracies at the selected epoch and the per-epoch history;
  config.json   written last, so its presence marks a complete run: the model hyperparameters
                (`model`: the `SageConfig` fields, incl. num_features and num_classes), the dataset,
                the feature preprocessing the inputs need (`normalize_features`), the fanouts to
                serve with, and the training settings.

A workdir that already holds a run (config.json or checkpoint/) is refused unless
`overwrite=True`, so a typo in --workdir cannot silently replace a trained model; with overwrite
the old config.json is removed first, then everything is rewritten.

The saved params are those of the epoch with the best validation accuracy (ties: lower validation
loss), the usual model selection for the Planetoid split; the reported test accuracy is theirs.
"""

import dataclasses
import functools
import json
import os
import pathlib
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from graphs import planetoid
from graphs import sage
from graphs.errors import GraphError

FORMAT = "swiftjax-graphsage"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoint"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What `train_and_evaluate` does (each field is a flag of `launch/train_gnn.py`).

  Attributes:
    dataset: Planetoid name ("cora", "citeseer"; PubMed's copy here lacks features).
    data_root: folder with the `ind.<dataset>.*` files.
    epochs: full-batch Adam steps at most.
    hidden: hidden width.
    num_layers: SAGE layers.
    lr: Adam learning rate.
    weight_decay: L2 penalty added to the gradient (coupled, like PyTorch Adam's weight_decay and
      the Kipf & Welling setup), on every parameter.
    dropout: dropout rate on every layer's input.
    normalize: L2-normalise hidden layers' outputs.
    normalize_features: row-normalise the input features (the server must do the same; recorded
      in config.json).
    patience: stop after this many epochs without a better validation accuracy (0: never).
    fanouts: neighbours to sample per hop when serving, one per layer (None: 25, 10 for two
      layers as in the GraphSAGE paper, else 10 per layer).
    seed: parameter init and dropout seed.
    overwrite: replace a run already in workdir.
  """
  dataset: str = "cora"
  data_root: str = "../shared/data/planetoid"
  epochs: int = 200
  hidden: int = 64
  num_layers: int = 2
  lr: float = 0.01
  weight_decay: float = 5e-4
  dropout: float = 0.5
  normalize: bool = False
  normalize_features: bool = True
  patience: int = 0
  fanouts: tuple[int, ...] | None = None
  seed: int = 0
  overwrite: bool = False

  def serve_fanouts(self) -> tuple[int, ...]:
    if self.fanouts is None:
      return (25, 10) if self.num_layers == 2 else (10,) * self.num_layers
    return tuple(int(k) for k in self.fanouts)


class LoadedModel(NamedTuple):
  """A trained model: `config` (config.json as a dict), `params`, and
  `apply_fn(params, graph, edge_mask=None) -> (logits [N, C], embeddings)` (jitted)."""
  config: dict[str, Any]
  params: Any
  apply_fn: Callable[..., tuple[jax.Array, jax.Array]]


def _check_config(cfg: TrainConfig) -> None:
  if cfg.epochs < 1:
    raise GraphError(f"epochs must be >= 1, got {cfg.epochs}")
  if cfg.lr <= 0 or cfg.weight_decay < 0:
    raise GraphError(f"lr must be > 0 and weight_decay >= 0, got {cfg.lr}, {cfg.weight_decay}")
  if cfg.patience < 0:
    raise GraphError(f"patience must be >= 0, got {cfg.patience}")
  fanouts = cfg.serve_fanouts()
  if len(fanouts) != cfg.num_layers or min(fanouts) < 1:
    raise GraphError(f"fanouts {list(fanouts)} must give one positive count per layer "
                     f"({cfg.num_layers} layers)")


def _held(workdir: pathlib.Path) -> list[pathlib.Path]:
  """The parts of an earlier run found in `workdir`."""
  return [p for p in (workdir / "config.json", workdir / CHECKPOINT_DIR) if p.exists()]


def _check_workdir(workdir: pathlib.Path, overwrite: bool) -> None:
  held = _held(workdir)
  if held and not overwrite:
    raise GraphError(f"{workdir} already holds a trained model ({held[0].name}); pass "
                     "--overwrite to replace it or choose another --workdir")
  if workdir.exists() and not workdir.is_dir():
    raise GraphError(f"workdir {workdir} exists and is not a directory")


def _write_json(path: pathlib.Path, obj) -> None:
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  os.replace(tmp, path)


def _accuracy(logits, labels, idx):
  return jnp.mean(jnp.argmax(logits[idx], axis=-1) == labels[idx])


def _xent(logits, labels, idx):
  return optax.softmax_cross_entropy_with_integer_labels(logits[idx], labels[idx]).mean()


def train_and_evaluate(cfg: TrainConfig, workdir) -> dict[str, Any]:
  """Trains GraphSAGE full-batch on `cfg.dataset`, saves the model to `workdir`.

  Returns:
    metrics (also in `workdir/metrics.json`): train/val/test accuracy and val loss at the selected
    epoch, `best_epoch`, `epochs_run`, `train_seconds`, and `history` (per epoch: loss, accuracies).

  Raises:
    GraphError: bad settings, missing or malformed data, a workdir holding another run.
  """
  _check_config(cfg)
  workdir = pathlib.Path(workdir).absolute()
  # Checked before the (long) training, but nothing is written until it has succeeded.
  _check_workdir(workdir, cfg.overwrite)
  data = planetoid.load_planetoid(cfg.data_root, cfg.dataset,
                                  normalize_features=cfg.normalize_features)
  model_cfg = sage.SageConfig(num_features=data.num_features, num_classes=data.num_classes,
                              hidden=cfg.hidden, num_layers=cfg.num_layers, dropout=cfg.dropout,
                              normalize=cfg.normalize)
  graph = sage.full_graph(data.features, data.src, data.dst)
  labels = jnp.asarray(data.labels)
  train_idx, val_idx, test_idx = (jnp.asarray(i) for i in (data.train_idx, data.val_idx,
                                                            data.test_idx))
  init_rng, dropout_rng = jax.random.split(jax.random.key(cfg.seed))
  params = sage.init(model_cfg, init_rng)
  optimizer = optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(cfg.lr))
  opt_state = optimizer.init(params)

  # The graph and labels are arguments, not closed-over constants: XLA would otherwise embed and
  # constant-fold the [N, F] feature matrix at compile time (seconds, for nothing).
  data_args = (graph, labels, train_idx, val_idx, test_idx)

  @jax.jit
  def train_step(params, opt_state, rng, graph, labels, train_idx, *_):
    def loss_fn(p):
      logits, _ = sage.apply(p, graph, model_cfg, train=True, rng=rng)
      return _xent(logits, labels, train_idx)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params, graph, labels, train_idx, val_idx, test_idx):
    logits, _ = sage.apply(params, graph, model_cfg)
    return {"train_acc": _accuracy(logits, labels, train_idx),
            "val_acc": _accuracy(logits, labels, val_idx),
            "test_acc": _accuracy(logits, labels, test_idx),
            "val_loss": _xent(logits, labels, val_idx)}

  history, best, best_params, since_best = [], None, params, 0
  t0 = time.perf_counter()
  for epoch in range(1, cfg.epochs + 1):
    params, opt_state, loss = train_step(params, opt_state, jax.random.fold_in(dropout_rng, epoch),
                                         *data_args)
    entry = {"epoch": epoch, "loss": float(loss),
             **{k: float(v) for k, v in evaluate(params, *data_args).items()}}
    history.append(entry)
    if best is None or (entry["val_acc"], -entry["val_loss"]) > (best["val_acc"],
                                                                  -best["val_loss"]):
      best, best_params, since_best = entry, params, 0
    else:
      since_best += 1
    if epoch % 10 == 0 or epoch == 1:
      logging.info("epoch %d loss %.4f train %.3f val %.3f test %.3f", epoch, entry["loss"],
                   entry["train_acc"], entry["val_acc"], entry["test_acc"])
    if cfg.patience and since_best >= cfg.patience:
      break
  seconds = time.perf_counter() - t0

  metrics = {"dataset": data.name, "train_acc": best["train_acc"], "val_acc": best["val_acc"],
             "test_acc": best["test_acc"], "val_loss": best["val_loss"],
             "best_epoch": best["epoch"], "epochs_run": len(history),
             "train_seconds": round(seconds, 3), "history": history}
  if _held(workdir):
    logging.warning("overwriting the model in %s", workdir)
    # Remove the completion marker first: an interrupted overwrite must not look complete.
    (workdir / "config.json").unlink(missing_ok=True)
  workdir.mkdir(parents=True, exist_ok=True)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(workdir / CHECKPOINT_DIR, best_params, force=True)
  checkpointer.wait_until_finished()
  _write_json(workdir / "metrics.json", metrics)
  _write_json(workdir / "config.json", {
      "format": FORMAT, "format_version": FORMAT_VERSION,
      "model": dataclasses.asdict(model_cfg),
      "dataset": data.name, "num_nodes": data.num_nodes,
      "num_features": data.num_features, "num_classes": data.num_classes,
      "normalize_features": cfg.normalize_features,
      "fanouts": list(cfg.serve_fanouts()),
      "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "overwrite"},
  })
  return metrics


def model_config(config: dict[str, Any]) -> sage.SageConfig:
  """The `SageConfig` recorded in a run's config.json."""
  try:
    return sage.SageConfig(**config["model"])
  except (KeyError, TypeError) as e:
    raise GraphError(f"config.json has no valid 'model' entry: {e}") from None


def load_model(workdir) -> LoadedModel:
  """Reads a run written by `train_and_evaluate`.

  Raises:
    GraphError: no complete run in `workdir`, or an unreadable config/checkpoint.
  """
  workdir = pathlib.Path(workdir).absolute()
  path = workdir / "config.json"
  if not path.is_file():
    raise GraphError(f"{workdir} holds no trained GraphSAGE model (no config.json)")
  try:
    config = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise GraphError(f"{path}: not readable JSON: {e}") from None
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    raise GraphError(f"{path}: not a {FORMAT} config")
  if config.get("format_version") != FORMAT_VERSION:
    raise GraphError(f"{path}: format_version {config.get('format_version')} is not "
                     f"{FORMAT_VERSION}")
  model_cfg = model_config(config)
  abstract = jax.eval_shape(functools.partial(sage.init, model_cfg), jax.random.key(0))
  # Restore into host numpy arrays: no device layout is asked for, so a serving replica in a
  # multi-process job reads the single-process checkpoint as it is (a sharded jax target would
  # make Orbax compare topologies and refuse).
  abstract = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  try:
    params = ocp.StandardCheckpointer().restore(workdir / CHECKPOINT_DIR, abstract)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise GraphError(f"{workdir / CHECKPOINT_DIR}: cannot restore the params: {e}") from None

  @jax.jit
  def apply_fn(params, graph, edge_mask=None):
    return sage.apply(params, graph, model_cfg, edge_mask=edge_mask)

  return LoadedModel(config=config, params=params, apply_fn=apply_fn)

