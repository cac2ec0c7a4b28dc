"""The link-prediction training loop shared by every model (`python -m launch.seg` calls it).

`train_and_evaluate(cfg, output_dir)`:

1. loads the split (`load_split`: ogbl-* from an OGB root, cora/citeseer with a seeded 85/5/10
   split, or an edge-list path);
2. builds the runner (`make_runner`): `graphs.seg_full.FullSEGRunner` for seg (`gnn="full"`, the
   default), `graphs.subgraph_runner.SubgraphRunner` for seal and seg with `gnn="subgraph"`,
   `graphs.gae.GAERunner` for gcn/sage; all have `init`, `train_epoch`, `score`, `params`;
3. trains `epochs` epochs; every `eval_every` epochs (and after the last) scores the validation
   and test positives and negatives with `ogb.linkproppred.Evaluator` (`link_data.evaluate`) and
   keeps the test metrics of the epoch with the best validation metric (OGB's protocol: model
   selection on validation only; the test numbers are never looked at to choose);
4. writes, into `output_dir`: `tensorboard/` (tensorboardX event files: train/loss, train/
   pairs_per_second, valid/hits_20 style metrics ('@' is not allowed in a tag), test/...,
   time/epoch_seconds; Hits@10/20/50/100 for every Hits dataset, whatever K selects),
   `checkpoint/` (Orbax,
   the selected epoch's params) and `results.json` (written last, atomically: `test/hits@20`
   style keys, the selected epoch, preprocessing seconds, mean epoch seconds, peak resident
   memory, parameter count, the full config).
"""

import dataclasses
import json
import os
import pathlib
import resource
import shutil
import sys
import time
from typing import Any, Optional

from absl import logging
import jax
import numpy as np

from graphs import link_data
from graphs import planetoid
from graphs.errors import GraphError

MODELS = ("seg", "seal", "gcn", "sage")
# SEG's GNN: DGCNN on each pair's enclosing subgraph (`graphs/seg.py`) or a GCN over the whole
# graph fused with exact path labels (`graphs/seg_full.py`).
# Full is the default: it scored higher on Cora, CiteSeer and ogbl-ddi (README table) at a
# fraction of the cost.
GNNS = ("subgraph", "full")
DEFAULT_GNN = "full"
PLANETOID = ("cora", "citeseer")


@dataclasses.dataclass(frozen=True)
class LinkTrainConfig:
  """One run (every field is a flag of `launch/seg.py`).

  Attributes:
    dataset: "ogbl-ddi" (or another ogbl-* name), "cora", "citeseer", or an edge-list path.
    data_root: OGB root (ogbl-*) or Planetoid folder (cora/citeseer); unused for edge lists.
    model: "seg", "seal", "gcn" or "sage".
    epochs: training epochs.
    seed: seeds the model, the negatives and the Planetoid / edge-list split.
    split_seed: seed of the random split (Planetoid / edge list); None: `seed`.
    eval_every: evaluate every this many epochs (and after the last).
    model_options: the runner config's fields to override (`SubgraphConfig` or `GAEConfig`).
    overwrite: replace a finished run in the output directory (refused otherwise).
  """
  dataset: str = "cora"
  data_root: str = ""
  model: str = "seg"
  epochs: int = 10
  seed: int = 0
  split_seed: Optional[int] = None
  eval_every: int = 1
  model_options: dict = dataclasses.field(default_factory=dict)
  overwrite: bool = False

  def __post_init__(self):
    if self.model not in MODELS:
      raise GraphError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
    if self.epochs < 1 or self.eval_every < 1:
      raise GraphError(f"epochs and eval_every must be >= 1, got {self.epochs}, "
                       f"{self.eval_every}")


def load_split(dataset: str, data_root: str, seed: int) -> link_data.LinkSplit:
  """The split a run trains on (see `LinkTrainConfig.dataset`)."""
  name = dataset.lower()
  if name.startswith("ogbl"):
    return link_data.load_ogbl(data_root, name)
  if name in PLANETOID:
    return link_data.planetoid_link_split(planetoid.load_planetoid(data_root, name), seed=seed)
  if os.path.exists(dataset):
    return link_data.edge_list_split(dataset, seed=seed)
  raise GraphError(f"--dataset={dataset}: not an ogbl-* name, cora, citeseer, or an existing "
                   "edge-list file")


def make_runner(model: str, split: link_data.LinkSplit, seed: int, options: dict):
  """A runner for `model` with `options` overriding its config's defaults."""
  options = dict(options)
  gnn = options.pop("gnn", None)
  if gnn is not None and model != "seg":
    raise GraphError(f"gnn applies to model seg only, not {model}")
  gnn = gnn or DEFAULT_GNN
  if gnn not in GNNS:
    raise GraphError(f"gnn must be one of {', '.join(GNNS)}, got {gnn!r}")
  if model == "seg" and gnn == "full":
    from graphs import seg_full  # pylint: disable=g-import-not-at-top
    cls, cfg_cls = seg_full.FullSEGRunner, seg_full.FullSEGConfig
  elif model in ("seg", "seal"):
    from graphs import subgraph_runner  # pylint: disable=g-import-not-at-top
    cls, cfg_cls = subgraph_runner.SubgraphRunner, subgraph_runner.SubgraphConfig
    options = dict(options, model=model)
  else:
    from graphs import gae  # pylint: disable=g-import-not-at-top
    cls, cfg_cls = gae.GAERunner, gae.GAEConfig
    if "encoder" in options:
      raise GraphError(f"encoder applies to model seg (gnn=full) only; model {model} is "
                       "already the encoder")
    options = dict(options, encoder=model)
  known = {f.name for f in dataclasses.fields(cfg_cls)}
  unknown = sorted(set(options) - known)
  if unknown:
    raise GraphError(f"options {', '.join(unknown)} do not apply to model {model} (it takes "
                     f"{', '.join(sorted(known))})")
  return cls(split, cfg_cls(**options), seed)


def _peak_rss_mb() -> float:
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


EVAL_KS = (10, 20, 50, 100)  # Hits@K reported for every Hits dataset (selection: its own K)


def _score(runner, state, pairs, name):
  if pairs is None:
    raise GraphError(f"the split has no {name} pairs")
  pairs = np.asarray(pairs)
  # `name` lets a runner cache the split's inputs; per-positive negatives [E, K, 2] (citation2's
  # MRR) come back as [E, K].
  return np.asarray(runner.score(state, pairs.reshape(-1, 2), name=name)).reshape(pairs.shape[:-1])


def _evaluate(runner, state, split, metric_name):
  out = {}
  for part in ("valid", "test"):
    pos = _score(runner, state, getattr(split, f"{part}_pos"), f"{part}_pos")
    neg = _score(runner, state, getattr(split, f"{part}_neg"), f"{part}_neg")
    # Besides the dataset's own metric, Hits@10/20/50/100 (OGB's ddi example logs several K):
    # on ddi, Hits@20 hangs on the ~20 highest-scored of 100k negatives.
    ks = None if link_data.OGB_METRICS.get(split.name) == "mrr" else list(EVAL_KS)
    for key, value in link_data.evaluate(split.name, pos, neg, ks=ks).items():
      out[f"{part}/{key}"] = value
  if f"valid/{metric_name}" not in out:
    raise GraphError(f"metric {metric_name} missing from {sorted(out)}")
  return out


def main_metric(name: str) -> str:
  """The metric a dataset is selected and reported by (ddi: hits@20; Planetoid: hits@100)."""
  return link_data.OGB_METRICS.get(name, f"hits@{link_data.DEFAULT_K}")


def train_and_evaluate(cfg: LinkTrainConfig, output_dir: str) -> dict[str, Any]:
  """Trains and evaluates one run; returns the results also written to results.json."""
  out = pathlib.Path(output_dir)
  if (out / "results.json").exists() or (out / "tensorboard").exists():
    if not cfg.overwrite:
      raise GraphError(f"{out} already holds a run (results.json or tensorboard/); pass "
                       "--overwrite to replace it or choose another --output_dir")
    for name in ("results.json", "tensorboard", "checkpoint"):
      if (out / name).is_dir():
        shutil.rmtree(out / name)
      elif (out / name).exists():
        (out / name).unlink()
  out.mkdir(parents=True, exist_ok=True)
  split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
  split = load_split(cfg.dataset, cfg.data_root, split_seed)
  metric = main_metric(split.name)
  runner = make_runner(cfg.model, split, cfg.seed, cfg.model_options)
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(str(out / "tensorboard"))
  state = runner.init()
  best: dict[str, Any] = {}
  best_params = None
  history, epoch_seconds, eval_seconds = [], [], []
  try:
    for epoch in range(1, cfg.epochs + 1):
      start = time.perf_counter()
      state, stats = runner.train_epoch(state, epoch)
      seconds = time.perf_counter() - start
      epoch_seconds.append(seconds)
      if not np.isfinite(stats["loss"]):
        raise GraphError(f"epoch {epoch}: the training loss is {stats['loss']} (lower the lr)")
      writer.add_scalar("train/loss", stats["loss"], epoch)
      writer.add_scalar("train/pairs_per_second", stats["pairs"] / seconds, epoch)
      writer.add_scalar("time/epoch_seconds", seconds, epoch)
      row = {"epoch": epoch, "loss": stats["loss"], "seconds": seconds}
      if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        start = time.perf_counter()
        metrics = _evaluate(runner, state, split, metric)
        eval_seconds.append(time.perf_counter() - start)
        for key, value in metrics.items():
          # TensorBoard tag names allow no '@' (tensorboardX would rewrite it): hits@20 -> hits_20.
          writer.add_scalar(key.replace("@", "_"), value, epoch)
        row.update(metrics)
        if not best or metrics[f"valid/{metric}"] > best[f"valid/{metric}"]:
          best = dict(metrics, epoch=epoch)
          best_params = jax.tree.map(np.asarray, runner.params(state))
        logging.info("epoch %d loss %.4f valid %s %.4f test %.4f (%.1fs)", epoch, stats["loss"],
                     metric, metrics[f"valid/{metric}"], metrics[f"test/{metric}"], seconds)
      history.append(row)
    writer.flush()
  finally:
    writer.close()
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = (out / "checkpoint").resolve()
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(ckpt_dir, best_params, force=True)
  num_params = int(sum(np.size(x) for x in jax.tree.leaves(best_params)))
  runner_cfg = dataclasses.asdict(runner.cfg)
  results = {
      "dataset": split.name, "model": cfg.model, "seed": cfg.seed, "split_seed": split_seed,
      "metric": metric, "selected_epoch": best["epoch"],
      **{k: v for k, v in best.items() if "/" in k},
      "preprocess_seconds": float(getattr(runner, "preprocess_seconds", 0.0)),
      "epoch_seconds_mean": float(np.mean(epoch_seconds)),
      "epoch_seconds_after_first": float(np.mean(epoch_seconds[1:])) if len(epoch_seconds) > 1
                                   else float(epoch_seconds[0]),
      "eval_seconds_mean": float(np.mean(eval_seconds)),
      "peak_rss_mb": _peak_rss_mb(), "num_params": num_params,
      "mode": getattr(runner, "mode", "full-graph"),
      "config": dict(dataclasses.asdict(cfg), runner=runner_cfg),
      "history": history,
  }
  tmp = out / "results.json.tmp"
  tmp.write_text(json.dumps(results, indent=2, default=str))
  os.replace(tmp, out / "results.json")
  return results
