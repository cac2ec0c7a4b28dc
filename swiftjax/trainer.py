"""Fine-tuning: pure step functions plus one thin, resumable loop for SFT and preference training.

    summary = trainer.train(TrainConfig(model=..., dataset=[...], tuner="lora"), workdir)
    summary = rlhf.train_preference(rlhf.RlhfConfig(..., rlhf_type="dpo"), workdir)  # rlhf.py

A job (`Job`) is the data, a loss over `(trainable, const, batch)`, the initial trainable tree
and how to save it; `fit` runs any job. The step is `jax.jit`-compiled once for the job's
static batch shape: forward with the tuner's weight kinds, gradients for the trainable tree
only (the base, in `const`, stays frozen), optax AdamW with warmup + cosine/linear decay,
global-norm clipping and gradient accumulation (`optax.MultiSteps`). The data order is a
deterministic permutation per epoch from the seed, so a run resumed from a checkpoint sees
exactly the batches the uninterrupted run would have seen. Orbax checkpoints hold the
trainable tree, the optimizer state and the step; keep-last-N, written atomically by Orbax
(a process killed while saving leaves only a temporary directory, removed on resume).
Metrics go to TensorBoard event files (`workdir/tensorboard`), a tqdm progress bar,
`summary.json` and `loss_curve.png`: loss, grad norm, lr, tokens/s, memory and, with
validation rows (`val_dataset` or `split_dataset_ratio`), the eval loss every `eval_steps`.

With a mesh (`fit(..., mesh=sharding.make_mesh(data, fsdp, tensor))`) the same step runs SPMD:
base, trainable tree and optimizer state laid out by logical axes, the global batch
(`TrainConfig.batch_size`) split over `data` x `fsdp`; under `jax.distributed` every process
runs this loop on its own devices and the losses are the single-process run's.

SFT: packed rows, weighted next-token loss over segments. Preference training (DPO, ORPO,
SimPO, CPO, KTO, reward model) is `swiftjax/rlhf.py`, a `Job` for the same loop. Around the
loop: `train_config` (the settings), `train_data` (rows read, split, rendered), `train_metrics`
(eval loss, memory) and `run_dir` (the workdir: refusing or replacing an earlier run, the
merged model of `merge_lora`).
"""

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable

import jax
import numpy as np
import optax

from swiftjax import errors
from swiftjax import infer
from swiftjax import losses
from swiftjax import run_dir
from swiftjax import sharding
from swiftjax import train_config
from swiftjax import train_data
from swiftjax import train_metrics
from swiftjax.data import packing
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from swiftjax.models import decoder

# The settings live in `train_config`; `trainer.TrainConfig` is the name most callers use.
TrainConfig = train_config.TrainConfig


def make_optimizer(cfg: TrainConfig, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`(optimizer, learning-rate schedule)` for `total_steps` optimizer updates: global-norm
  clipping, AdamW on the warmup + `cfg.lr_scheduler_type` schedule, and `optax.MultiSteps`
  with `cfg.gradient_accumulation_steps` > 1."""
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


@dataclasses.dataclass
class Job:
  """What `fit` trains: data, a loss, the trees it reads, and how to save the result.

  Attributes:
    rows: dataset rows; a step takes `batch_size` of them, an epoch is `rows // batch_size`
      steps.
    get_batch: `get_batch(indices [batch_size]) -> {name: numpy array}`, the step's batch;
      `batch["segment_ids"] > 0` counts its tokens for throughput.
    loss_fn: `loss_fn(trainable, const, batch) -> (loss [], metrics {name: []})`; the metrics
      are logged next to the loss.
    trainable: the initial trainable tree (adapters, or the params for full fine-tuning).
    const: frozen trees the loss reads (base params, a reference model): an argument of the
      jitted step rather than constants baked into it.
    save: `save(workdir, trainable) -> output path`, after training.
    stats: data statistics for the summary.
    make_optimizer: `make_optimizer(cfg, total_updates) -> (optimizer, schedule)` in place of
      this module's `make_optimizer` (per-group learning rates); None for the default.
    trainable_axes, const_axes: logical axis names of every leaf of `trainable` / `const`
      (trees mirroring them, as `decoder.param_axes` gives), for training on a mesh; None
      replicates the whole tree on every device.
    eval_rows: validation rows (0: none); `fit` reports the eval loss over them.
    get_eval_batch: `get_eval_batch(indices [batch_size]) -> {name: numpy array}`, a batch of
      validation rows shaped like `get_batch`'s, for the same `loss_fn`.
  """
  rows: int
  get_batch: Callable[[np.ndarray], dict]
  loss_fn: Callable[..., tuple[jax.Array, dict]]
  trainable: Any
  const: Any
  save: Callable[[pathlib.Path, Any], pathlib.Path]
  stats: dict
  make_optimizer: Callable[..., tuple[optax.GradientTransformation, Any]] | None = None
  trainable_axes: Any = None
  const_axes: Any = None
  eval_rows: int = 0
  get_eval_batch: Callable[[np.ndarray], dict] | None = None


def make_step(loss_fn, optimizer):
  """`step(trainable, opt_state, batch, const) -> (trainable, opt_state, metrics)`, to be jitted.

  `metrics` holds `loss`, `grad_norm` and the loss function's own metrics.
  """

  def step(trainable, opt_state, batch, const):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, const, batch)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, {
        "loss": loss, "grad_norm": _global_norm(grads), **aux}

  return step


def batch_indices(rows: int, batch_size: int, seed: int, epoch: int):
  """Row indices `[batch_size]` of each batch, in a deterministic order for this epoch
  (incomplete last batch dropped)."""
  order = np.random.default_rng([seed, epoch]).permutation(rows)
  for i in range(0, len(order) - batch_size + 1, batch_size):
    yield order[i:i + batch_size]


def init_trainable(cfg: TrainConfig, model) -> tuple[Any, Any, lora.LoraConfig | None]:
  """`(frozen base or None, trainable, tuner config or None)`."""
  if cfg.tuner == "full":
    return None, model.params, None
  tuner_cfg = _tuner_config(cfg)
  frozen, adapters = lora.init(model.params, jax.random.key(cfg.seed), tuner_cfg)
  return frozen, adapters, tuner_cfg


def init_axes(model_cfg: decoder.ModelConfig, trainable: Any,
              tuner_cfg: lora.LoraConfig | None) -> tuple[Any, Any]:
  """Logical axes `(frozen base or None, trainable)` of `init_trainable`'s trees.

  The base keeps the decoder's axes (`embed` over `fsdp`, heads / `mlp` over `tensor`). Each
  adapter inherits its kernel's (as qwix and levanter lay LoRA out): A `[in, r]` is split like
  the kernel's input axis, B `[r, out]` like its output axis, the rank axis is replicated; so
  the trainable tree and the optimizer state built on it are sharded like the base.
  """
  axes = decoder.param_axes(model_cfg)
  if tuner_cfg is None:
    return None, axes
  return axes, lora.adapter_axes(trainable, axes)


def save_adapters(model, tuner_cfg, workdir: pathlib.Path, adapters) -> pathlib.Path:
  """PEFT adapters under `workdir/adapter`; full fine-tuning leaves its checkpoints."""
  if tuner_cfg is None:
    return workdir / "checkpoints"
  out = workdir / "adapter"
  peft_io.save(out, adapters, tuner_cfg, model.cfg, base_model_name_or_path=str(model.path))
  return out


def training_model_config(cfg: TrainConfig, model_cfg: decoder.ModelConfig
                          ) -> decoder.ModelConfig:
  """`model_cfg` as the training forward pass runs it: with `cfg`'s gradient checkpointing
  (`ModelConfig.remat`). Saving and export keep the loaded config, so the written adapters
  and merged `config.json` do not depend on it."""
  return dataclasses.replace(model_cfg, remat=cfg.remat)


def sft_job(cfg: TrainConfig, model: infer.LoadedModel) -> Job:
  """SFT on packed rows: weighted next-token loss over segments; validation rows (if any)
  are packed the same way."""
  examples, val_examples, stats = train_data.build_splits(cfg, model.tokenizer)
  layout = packing.pack if cfg.packing else packing.pad
  packed = layout(examples, cfg.max_length)
  val_packed = layout(val_examples, cfg.max_length) if val_examples else None
  frozen, trainable, tuner_cfg = init_trainable(cfg, model)
  frozen_axes, trainable_axes = init_axes(model.cfg, trainable, tuner_cfg)
  model_cfg = training_model_config(cfg, model.cfg)

  def loss_fn(trainable, frozen, batch):
    params = trainable if tuner_cfg is None else lora.apply(frozen, trainable, tuner_cfg)
    logits, _ = decoder.apply(params, batch["tokens"], model_cfg,
                              segment_ids=batch["segment_ids"], positions=batch["positions"])
    loss, _ = losses.next_token_loss(logits, batch["tokens"], batch["weights"],
                                     batch["segment_ids"])
    return loss, {}

  def take(rows, idx):
    return {"tokens": rows.tokens[idx], "weights": rows.weights[idx],
            "segment_ids": rows.segment_ids[idx], "positions": rows.positions[idx]}

  return Job(len(packed.tokens), lambda idx: take(packed, idx), loss_fn, trainable, frozen,
             lambda workdir, t: save_adapters(model, tuner_cfg, workdir, t), stats,
             trainable_axes=trainable_axes, const_axes=frozen_axes,
             eval_rows=0 if val_packed is None else len(val_packed.tokens),
             get_eval_batch=None if val_packed is None else lambda idx: take(val_packed, idx))


def place_state(job: Job, optimizer: optax.GradientTransformation,
                mesh: jax.sharding.Mesh | None):
  """The job's trees on devices, the optimizer state, the compiled step and the batch placer.

  Returns:
    `(trainable, const, opt_state, step_fn, place_batch)`: without a mesh, the trees as they
    are and a plain `jax.jit` step; on a mesh, the trees in the layout their logical axes ask
    for, the optimizer state laid out like the trainable leaves it mirrors (counters
    replicated), a step whose outputs keep those layouts (metrics replicated), and
    `place_batch(host batch) -> global batch` split over `data` x `fsdp`.
  """
  step = make_step(job.loss_fn, optimizer)
  if mesh is None:
    return (job.trainable, job.const, optimizer.init(job.trainable),
            jax.jit(step, donate_argnums=(0, 1)), lambda batch: batch)
  trainable_sh = sharding.tree_shardings_or_replicated(job.trainable_axes, job.trainable, mesh)
  const_sh = sharding.tree_shardings_or_replicated(job.const_axes, job.const, mesh)
  trainable = jax.device_put(job.trainable, trainable_sh)
  const = jax.device_put(job.const, const_sh)
  replicated = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s,
                                 jax.eval_shape(optimizer.init, trainable), trainable_sh,
                                 transform_non_params=lambda _: replicated)
  opt_state = jax.jit(optimizer.init, out_shardings=opt_sh)(trainable)
  step_fn = jax.jit(step, out_shardings=(trainable_sh, opt_sh, replicated),
                    donate_argnums=(0, 1))
  return trainable, const, opt_state, step_fn, lambda batch: sharding.put_batch(batch, mesh)


def fit(cfg: TrainConfig, workdir: str | pathlib.Path, job: Job, *, resume: bool = False,
        stop_at_step: int | None = None, mesh: jax.sharding.Mesh | None = None,
        overwrite: bool = False) -> dict:
  """Runs a job: optimizer, checkpoints, metrics, the loop, then `job.save` and `summary.json`.

  Metrics (TensorBoard `train/*`, the summary's `log`): loss, grad norm, the job's metrics,
  lr, tokens/s and memory (`train_metrics.memory_gb`). With validation rows (`job.eval_rows`)
  the eval loss (`train_metrics.make_evaluate`) is computed every `cfg.eval_steps` steps
  (default: `cfg.save_steps`) and after the last step: TensorBoard `eval/loss`, `eval_loss` in
  that step's log entry, and the summary's `eval_loss` (last) and `eval_history`.
  `workdir/loss_curve.png` plots them, and `workdir/metrics.jsonl` keeps every entry, so
  after a resume the curve still starts at step 1.

  On a mesh (`sharding.make_mesh`) the trees are placed by their logical axes (`job.*_axes`),
  the optimizer state like the trainable tree, and each step's global batch `[batch_size, ...]`
  is split over `data` x `fsdp` along its leading axis. Several processes
  (`jax.distributed`) run the same loop: each builds the same global batch from the
  deterministic order and puts only its devices' rows; losses are global; Orbax checkpoints
  are written by all of them together; only process 0 writes TensorBoard events, the output
  (`job.save`) and `summary.json` (the others return the summary with `output` None).

  Args:
    cfg: the training config (batch size, steps, optimizer, checkpointing).
    workdir: output directory (the same shared path in every process).
    job: what to train.
    resume: continue from the latest checkpoint in `workdir`.
    stop_at_step: stop after this step as if interrupted (the schedule still spans the whole
      run); for tests of resumption.
    mesh: the device mesh (axes `data`, `fsdp`, `tensor`), or None for one device.
    overwrite: replace another run's outputs in `workdir` (see `run_dir.prepare_workdir`).

  Returns:
    the summary dict (also written to `workdir/summary.json`).

  Raises:
    ConfigError: `batch_size` (the global batch) not divisible by the mesh's `data` x `fsdp`
      or more than the job's rows; `workdir` holds another run and neither `resume` nor
      `overwrite` is given; among others.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  ways = 1 if mesh is None else sharding.batch_axes_size(mesh)
  if cfg.batch_size % ways:
    raise errors.ConfigError(
        f"batch_size={cfg.batch_size} (the global batch) is not divisible by the mesh's "
        f"data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']}")
  if job.rows < cfg.batch_size:
    per_device = (f" (the global batch: {cfg.batch_size // ways} per device x data x fsdp = "
                  f"{ways})" if ways > 1 else "")
    raise errors.ConfigError(f"{job.rows} rows are fewer than batch_size={cfg.batch_size}"
                             f"{per_device}")
  steps_per_epoch = job.rows // cfg.batch_size
  total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs *
                                                             steps_per_epoch)
  optimizer, schedule = (job.make_optimizer or make_optimizer)(
      cfg, total // cfg.gradient_accumulation_steps or 1)
  trainable, const, opt_state, step_fn, place_batch = place_state(job, optimizer, mesh)
  is_main = jax.process_index() == 0
  evaluate = train_metrics.make_evaluate(job, cfg.batch_size, place_batch, mesh)
  eval_every = cfg.save_steps if cfg.eval_steps is None else cfg.eval_steps
  eval_history = []

  run_dir.prepare_workdir(workdir, resume=resume, overwrite=overwrite)
  # Orbax writes each step into `<step>.orbax-checkpoint-tmp` and renames it when complete, so
  # a killed save never touches the finished steps; the leftover is removed here.
  manager = ocp.CheckpointManager(
      workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=cfg.save_total_limit, create=True,
                                           cleanup_tmp_directories=True))
  start = 0
  if resume and manager.latest_step() is not None:
    start = manager.latest_step()
    restored = manager.restore(start, args=ocp.args.StandardRestore(
        {"trainable": trainable, "opt_state": opt_state}))
    trainable, opt_state = restored["trainable"], restored["opt_state"]
  history = train_metrics.History(workdir, resume_from=start if resume else None,
                                  write=is_main)

  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(str(workdir / "tensorboard")) if is_main else train_metrics.NullWriter()
  progress = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                  disable=None if is_main else True)  # None: off when stderr is not a terminal
  log = []
  step = start
  t0 = time.perf_counter()
  tokens_seen = 0
  epoch = start // steps_per_epoch
  skip = start % steps_per_epoch
  while step < total:
    for i, idx in enumerate(batch_indices(job.rows, cfg.batch_size, cfg.seed, epoch)):
      if i < skip:
        continue
      batch = job.get_batch(idx)
      trainable, opt_state, metrics = step_fn(trainable, opt_state, place_batch(batch), const)
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
      entry = {"step": step, **{k: float(v) for k, v in metrics.items()},
               "lr": float(schedule(step // cfg.gradient_accumulation_steps))}
      log.append(entry)
      for key, value in entry.items():
        if key != "step":
          writer.add_scalar(f"train/{key}", value, step)
      if step > start + 1:
        writer.add_scalar("train/tokens_per_s", tokens_seen / (time.perf_counter() - t0), step)
      for key, value in train_metrics.memory_gb().items():
        writer.add_scalar(f"train/{key}", value, step)
      if evaluate is not None and eval_every and step % eval_every == 0:
        entry["eval_loss"], seconds = train_metrics.log_eval(evaluate, trainable, const, step,
                                                             eval_history, writer)
        t0 += seconds  # throughput and train_seconds leave evaluation out
      history.append(entry)
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
  if evaluate is not None and (not eval_history or eval_history[-1]["step"] != step):
    eval_loss, seconds = train_metrics.log_eval(evaluate, trainable, const, step,
                                                eval_history, writer)
    t0 += seconds
    if log and log[-1]["step"] == step:
      log[-1]["eval_loss"] = eval_loss
    history.append({"step": step, "eval_loss": eval_loss})
  if manager.latest_step() != step:
    manager.save(step, args=ocp.args.StandardSave({"trainable": trainable,
                                                   "opt_state": opt_state}), force=True)
  manager.wait_until_finished()
  elapsed = time.perf_counter() - t0
  progress.close()
  writer.close()

  if jax.process_count() > 1:
    # Every process takes part in the gather; one writes the result.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    trainable = multihost_utils.process_allgather(trainable, tiled=True)
  out = job.save(workdir, trainable) if is_main else None
  summary = {"steps": step, "resumed_from": start, "first_loss": log[0]["loss"] if log else None,
             "final_loss": log[-1]["loss"] if log else None, "tokens_per_s": tokens_seen /
             max(elapsed, 1e-9), "train_seconds": elapsed,
             "output": None if out is None else str(out), **job.stats,
             "trainable_params": lora.count_params(trainable), "log": log}
  summary.update(train_metrics.memory_gb(),
                 eval_loss=eval_history[-1]["eval_loss"] if eval_history else None,
                 eval_history=eval_history)
  train_points, eval_points = history.points(log, eval_history)
  if is_main and train_points:
    from swiftjax import plot  # pylint: disable=g-import-not-at-top
    summary["loss_curve"] = str(plot.loss_curve(workdir / "loss_curve.png", train_points,
                                                eval_points))
  if is_main:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def train(cfg: TrainConfig, workdir: str | pathlib.Path, *, resume: bool = False,
          stop_at_step: int | None = None, mesh: jax.sharding.Mesh | None = None,
          overwrite: bool = False) -> dict:
  """Runs SFT and writes adapters (PEFT format), checkpoints, and `summary.json`; with
  `cfg.merge_lora` also the merged model (`run_dir.merge_output`).

  Args:
    cfg: the training config.
    workdir: output directory.
    resume: continue from the latest checkpoint in `workdir`.
    stop_at_step: stop after this step as if interrupted (the schedule still spans the whole
      run); for tests of resumption.
    mesh: the device mesh, or None for one device; the model is loaded straight into its
      layout on it (see `fit`).
    overwrite: replace another run's outputs in `workdir` (see `run_dir.prepare_workdir`).

  Returns:
    the summary dict (also written to `workdir/summary.json`).
  """
  run_dir.check_workdir(workdir, resume=resume, overwrite=overwrite)  # before loading the model
  summary = fit(cfg, workdir, sft_job(cfg, infer.load(cfg.model, mesh=mesh)), resume=resume,
                stop_at_step=stop_at_step, mesh=mesh, overwrite=overwrite)
  return run_dir.finish_merge(cfg, workdir, summary)
