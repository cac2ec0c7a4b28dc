"""Supervised fine-tuning: pure step functions plus a thin, resumable loop.

    summary = trainer.train(TrainConfig(model=..., dataset=[...], tuner="lora"), workdir)

The step is `jax.jit`-compiled once for the packed `[batch, max_length]` shape: forward with
the tuner's weight kinds, weighted next-token loss over segments, gradients for the trainable
tree only (the base stays frozen), optax AdamW with warmup + cosine/linear decay, global-norm
clipping and gradient accumulation (`optax.MultiSteps`). The data order is a deterministic
permutation per epoch from the seed, so a run resumed from a checkpoint sees exactly the
batches the uninterrupted run would have seen. Orbax checkpoints hold the trainable tree, the
optimizer state and the step; keep-last-N, written atomically by Orbax. Metrics go to
TensorBoard event files (`workdir/tensorboard`), a tqdm progress bar and `summary.json`.
"""

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from swiftjax import errors
from swiftjax import infer
from swiftjax import losses
from swiftjax.data import formats
from swiftjax.data import packing
from swiftjax.data import render
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from swiftjax.models import decoder

TUNERS = ("lora", "dora", "rslora", "full")


@dataclasses.dataclass
class TrainConfig:
  """SFT settings, named as ms-swift names them where it has them."""
  model: str | None = None
  dataset: Sequence[str] = ()
  tuner: str = "lora"
  lora_rank: int = 8
  lora_alpha: float = 32.0
  target_modules: str | tuple[str, ...] = "all-linear"
  learning_rate: float = 1e-4
  weight_decay: float = 0.0
  warmup_ratio: float = 0.05
  lr_scheduler_type: str = "cosine"
  max_grad_norm: float = 1.0
  num_train_epochs: float = 1.0
  max_steps: int = -1
  batch_size: int = 1
  gradient_accumulation_steps: int = 1
  max_length: int = 512
  truncation_strategy: str = "delete"
  packing: bool = True
  save_steps: int = 0
  save_total_limit: int = 2
  logging_steps: int = 5
  seed: int = 42
  skip_bad_rows: bool = False

  def __post_init__(self):
    if self.tuner not in TUNERS:
      raise errors.ConfigError(f"tuner {self.tuner!r} is not one of {', '.join(TUNERS)}")
    if self.lr_scheduler_type not in ("cosine", "linear", "constant"):
      raise errors.ConfigError(f"lr_scheduler_type {self.lr_scheduler_type!r} is not cosine, "
                               "linear or constant")
    if not self.dataset:
      raise errors.ConfigError("no dataset given")


def build_examples(cfg: TrainConfig, tokenizer) -> tuple[list[render.Example], dict]:
  """Reads every dataset (`path` or `path#N` to take N rows), renders and truncates."""
  rng = np.random.default_rng(cfg.seed)
  rows, stats = [], {"skipped_rows": 0}
  for spec in cfg.dataset:
    path, _, count = str(spec).partition("#")
    got, skipped = formats.read_rows(path, skip_bad_rows=cfg.skip_bad_rows)
    stats["skipped_rows"] += skipped
    if count:
      n = int(count)
      idx = rng.permutation(len(got))[:n] if n <= len(got) else rng.integers(0, len(got), n)
      got = [got[i] for i in idx]
    rows += got
  examples = [render.render(tokenizer, r["messages"], r["tools"]) for r in rows]
  examples, stats["truncated"] = packing.truncate(examples, cfg.max_length,
                                                  cfg.truncation_strategy)
  examples = [e for e in examples if e.weights[1:].sum() > 0]
  if not examples:
    raise errors.ConfigError("after rendering and truncation no example has a trained token "
                             f"(max_length={cfg.max_length}, truncation="
                             f"{cfg.truncation_strategy})")
  stats["examples"] = len(examples)
  return examples, stats


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
  warmup = int(cfg.warmup_ratio * total_steps)
  if cfg.lr_scheduler_type == "constant":
    schedule = optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup),
                                     optax.constant_schedule(cfg.learning_rate)], [warmup])
  elif cfg.lr_scheduler_type == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, max(warmup, 0),
                                                  max(total_steps, warmup + 1))
  else:
    schedule = optax.join_schedules([
        optax.linear_schedule(0.0, cfg.learning_rate, warmup),
        optax.linear_schedule(cfg.learning_rate, 0.0, max(total_steps - warmup, 1))], [warmup])
  opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                    optax.adamw(schedule, weight_decay=cfg.weight_decay))
  if cfg.gradient_accumulation_steps > 1:
    opt = optax.MultiSteps(opt, cfg.gradient_accumulation_steps)
  return opt, schedule


def _tuner_config(cfg: TrainConfig) -> lora.LoraConfig:
  return lora.LoraConfig(r=cfg.lora_rank, alpha=cfg.lora_alpha,
                         target_modules=cfg.target_modules, use_dora=cfg.tuner == "dora",
                         use_rslora=cfg.tuner == "rslora")


def _global_norm(tree):
  # optax >= 0.2.5 has optax.tree.norm; older releases only optax.global_norm.
  tree_lib = getattr(optax, "tree", None)
  return tree_lib.norm(tree) if hasattr(tree_lib, "norm") else optax.global_norm(tree)


def make_step(model_cfg, tuner_cfg, frozen, optimizer):
  """`step(trainable, opt_state, batch) -> (trainable, opt_state, metrics)`, to be jitted."""

  def loss_fn(trainable, batch):
    params = trainable if tuner_cfg is None else lora.apply(frozen, trainable, tuner_cfg)
    logits, _ = decoder.apply(params, batch["tokens"], model_cfg,
                              segment_ids=batch["segment_ids"], positions=batch["positions"])
    return losses.next_token_loss(logits, batch["tokens"], batch["weights"],
                                  batch["segment_ids"])

  def step(trainable, opt_state, batch):
    (loss, weight), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, batch)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, {
        "loss": loss, "trained_tokens": weight, "grad_norm": _global_norm(grads)}

  return step


def batches(packed: packing.Batch, batch_size: int, seed: int, epoch: int):
  """Row batches in a deterministic order for this epoch (incomplete last batch dropped)."""
  order = np.random.default_rng([seed, epoch]).permutation(len(packed.tokens))
  for i in range(0, len(order) - batch_size + 1, batch_size):
    idx = order[i:i + batch_size]
    yield {"tokens": packed.tokens[idx], "weights": packed.weights[idx],
           "segment_ids": packed.segment_ids[idx], "positions": packed.positions[idx]}


def train(cfg: TrainConfig, workdir: str | pathlib.Path, *, resume: bool = False,
          stop_at_step: int | None = None) -> dict:
  """Runs SFT and writes adapters (PEFT format), checkpoints, and `summary.json`.

  Args:
    cfg: the training config.
    workdir: output directory.
    resume: continue from the latest checkpoint in `workdir`.
    stop_at_step: stop after this step as if interrupted (the schedule still spans the whole
      run); for tests of resumption.

  Returns:
    the summary dict (also written to `workdir/summary.json`).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  model = infer.load(cfg.model)
  examples, stats = build_examples(cfg, model.tokenizer)
  packed = (packing.pack(examples, cfg.max_length) if cfg.packing
            else packing.pad(examples, cfg.max_length))
  if len(packed.tokens) < cfg.batch_size:
    raise errors.ConfigError(f"{len(packed.tokens)} packed rows are fewer than batch_size="
                             f"{cfg.batch_size}")
  steps_per_epoch = len(packed.tokens) // cfg.batch_size
  total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs *
                                                             steps_per_epoch)
  optimizer, schedule = make_optimizer(cfg, total // cfg.gradient_accumulation_steps or 1)

  tuner_cfg = None if cfg.tuner == "full" else _tuner_config(cfg)
  if tuner_cfg is None:
    frozen, trainable = None, model.params
  else:
    frozen, trainable = lora.init(model.params, jax.random.key(cfg.seed), tuner_cfg)
  opt_state = optimizer.init(trainable)
  step_fn = jax.jit(make_step(model.cfg, tuner_cfg, frozen, optimizer), donate_argnums=(0, 1))

  manager = ocp.CheckpointManager(
      workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=cfg.save_total_limit, create=True))
  start = 0
  if resume and manager.latest_step() is not None:
    start = manager.latest_step()
    restored = manager.restore(start, args=ocp.args.StandardRestore(
        {"trainable": trainable, "opt_state": opt_state}))
    trainable, opt_state = restored["trainable"], restored["opt_state"]
  elif not resume and manager.latest_step() is not None:
    raise errors.ConfigError(f"{workdir} already holds checkpoints of a run; pass --resume to "
                             "continue it or choose another --output_dir")

  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(str(workdir / "tensorboard"))
  progress = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                  disable=None)  # None: off when stderr is not a terminal
  log = []
  step = start
  t0 = time.perf_counter()
  tokens_seen = 0
  epoch = start // steps_per_epoch
  skip = start % steps_per_epoch
  while step < total:
    for i, batch in enumerate(batches(packed, cfg.batch_size, cfg.seed, epoch)):
      if i < skip:
        continue
      trainable, opt_state, metrics = step_fn(trainable, opt_state, batch)
      step += 1
      loss = float(metrics["loss"])
      if not math.isfinite(loss):
        raise errors.SwiftJaxError(f"loss is {loss} at step {step}; the last good checkpoint "
                                   f"is step {manager.latest_step()}")
      if step == start + 1:
        # The first step includes compilation; throughput counts from its end.
        jax.block_until_ready(trainable)
        t0 = time.perf_counter()
      else:
        tokens_seen += int(np.asarray(batch["segment_ids"] > 0).sum())
      entry = {"step": step, "loss": loss, "grad_norm": float(metrics["grad_norm"]),
               "lr": float(schedule(step // cfg.gradient_accumulation_steps))}
      log.append(entry)
      for key in ("loss", "grad_norm", "lr"):
        writer.add_scalar(f"train/{key}", entry[key], step)
      if step > start + 1:
        writer.add_scalar("train/tokens_per_s", tokens_seen / (time.perf_counter() - t0), step)
      progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
      progress.update(1)
      if cfg.save_steps and step % cfg.save_steps == 0:
        manager.save(step, args=ocp.args.StandardSave({"trainable": trainable,
                                                       "opt_state": opt_state}))
      if step >= total or step == stop_at_step:
        break
    if step == stop_at_step:
      break
    skip = 0
    epoch += 1
  if manager.latest_step() != step:
    manager.save(step, args=ocp.args.StandardSave({"trainable": trainable,
                                                   "opt_state": opt_state}), force=True)
  manager.wait_until_finished()
  elapsed = time.perf_counter() - t0
  progress.close()
  writer.close()

  out = workdir / "checkpoints"
  if tuner_cfg is not None:
    out = workdir / "adapter"
    peft_io.save(out, trainable, tuner_cfg, model.cfg,
                 base_model_name_or_path=str(model.path))
  summary = {"steps": step, "resumed_from": start, "first_loss": log[0]["loss"] if log else None,
             "final_loss": log[-1]["loss"] if log else None, "tokens_per_s": tokens_seen /
             max(elapsed, 1e-9), "train_seconds": elapsed, "output": str(out), **stats,
             "trainable_params": lora.count_params(trainable), "log": log}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
