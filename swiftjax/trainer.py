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
trainable tree, the optimizer state and the step; keep-last-N, written atomically by Orbax.
Metrics go to TensorBoard event files (`workdir/tensorboard`), a tqdm progress bar and
`summary.json`.

SFT: packed rows, weighted next-token loss over segments. Preference training (DPO, ORPO,
SimPO, CPO, KTO, reward model) is `swiftjax/rlhf.py`, a `Job` for the same loop.
"""

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax

from swiftjax import errors
from swiftjax import infer
from swiftjax import losses
from swiftjax.agent import templates
from swiftjax.data import formats
from swiftjax.data import loss_scale as loss_scale_lib
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
  # Per-token loss weights (`swiftjax.data.loss_scale`): strategies joined by `+` or a JSON file.
  loss_scale: str = "default"
  # Render tools and tool calls with an agent template (`swiftjax.agent.templates`) instead of
  # passing `tools` to the chat template.
  agent_template: str | None = None

  def __post_init__(self):
    if self.tuner not in TUNERS:
      raise errors.ConfigError(f"tuner {self.tuner!r} is not one of {', '.join(TUNERS)}")
    if self.lr_scheduler_type not in ("cosine", "linear", "constant"):
      raise errors.ConfigError(f"lr_scheduler_type {self.lr_scheduler_type!r} is not cosine, "
                               "linear or constant")
    if not self.dataset:
      raise errors.ConfigError("no dataset given")
    loss_scale_lib.parse_spec(self.loss_scale)  # a bad name or file fails before any work
    if self.agent_template is not None:
      if self.agent_template not in templates.TEMPLATES:
        raise errors.ConfigError(f"agent_template {self.agent_template!r} is not one of "
                                 f"{', '.join(templates.TEMPLATES)}")


def read_datasets(cfg: TrainConfig, read: Callable[..., tuple[list, int]]
                   ) -> tuple[list, dict]:
  """Rows of every dataset (`path`, or `path#N` to take N rows), read with `read`."""
  rng = np.random.default_rng(cfg.seed)
  rows, stats = [], {"skipped_rows": 0}
  for spec in cfg.dataset:
    path, _, count = str(spec).partition("#")
    got, skipped = read(path, skip_bad_rows=cfg.skip_bad_rows)
    stats["skipped_rows"] += skipped
    if count:
      n = int(count)
      idx = rng.permutation(len(got))[:n] if n <= len(got) else rng.integers(0, len(got), n)
      got = [got[i] for i in idx]
    rows += got
  return rows, stats


def render_row(cfg: TrainConfig, tokenizer, row: dict) -> render.Example:
  """One normalised row rendered with the config's agent template and loss scale."""
  messages, tools = row["messages"], row["tools"]
  if cfg.agent_template is not None:
    messages, tools = templates.to_chat(messages, tools, cfg.agent_template), None
  return render.render(tokenizer, messages, tools, loss_scale=cfg.loss_scale)


def build_examples(cfg: TrainConfig, tokenizer) -> tuple[list[render.Example], dict]:
  """Reads every dataset (`path` or `path#N` to take N rows), renders and truncates."""
  rows, stats = read_datasets(cfg, formats.read_rows)
  examples = [render_row(cfg, tokenizer, r) for r in rows]
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
  """
  rows: int
  get_batch: Callable[[np.ndarray], dict]
  loss_fn: Callable[..., tuple[jax.Array, dict]]
  trainable: Any
  const: Any
  save: Callable[[pathlib.Path, Any], pathlib.Path]
  stats: dict
  make_optimizer: Callable[..., tuple[optax.GradientTransformation, Any]] | None = None


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


def save_adapters(model, tuner_cfg, workdir: pathlib.Path, adapters) -> pathlib.Path:
  """PEFT adapters under `workdir/adapter`; full fine-tuning leaves its checkpoints."""
  if tuner_cfg is None:
    return workdir / "checkpoints"
  out = workdir / "adapter"
  peft_io.save(out, adapters, tuner_cfg, model.cfg, base_model_name_or_path=str(model.path))
  return out


def sft_job(cfg: TrainConfig, model: infer.LoadedModel) -> Job:
  """SFT on packed rows: weighted next-token loss over segments."""
  examples, stats = build_examples(cfg, model.tokenizer)
  packed = (packing.pack(examples, cfg.max_length) if cfg.packing
            else packing.pad(examples, cfg.max_length))
  frozen, trainable, tuner_cfg = init_trainable(cfg, model)

  def loss_fn(trainable, frozen, batch):
    params = trainable if tuner_cfg is None else lora.apply(frozen, trainable, tuner_cfg)
    logits, _ = decoder.apply(params, batch["tokens"], model.cfg,
                              segment_ids=batch["segment_ids"], positions=batch["positions"])
    loss, _ = losses.next_token_loss(logits, batch["tokens"], batch["weights"],
                                     batch["segment_ids"])
    return loss, {}

  def get_batch(idx):
    return {"tokens": packed.tokens[idx], "weights": packed.weights[idx],
            "segment_ids": packed.segment_ids[idx], "positions": packed.positions[idx]}

  return Job(len(packed.tokens), get_batch, loss_fn, trainable, frozen,
             lambda workdir, t: save_adapters(model, tuner_cfg, workdir, t), stats)


def fit(cfg: TrainConfig, workdir: str | pathlib.Path, job: Job, *, resume: bool = False,
        stop_at_step: int | None = None) -> dict:
  """Runs a job: optimizer, checkpoints, metrics, the loop, then `job.save` and `summary.json`.

  Args:
    cfg: the training config (batch size, steps, optimizer, checkpointing).
    workdir: output directory.
    job: what to train.
    resume: continue from the latest checkpoint in `workdir`.
    stop_at_step: stop after this step as if interrupted (the schedule still spans the whole
      run); for tests of resumption.

  Returns:
    the summary dict (also written to `workdir/summary.json`).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir).absolute()
  if job.rows < cfg.batch_size:
    raise errors.ConfigError(f"{job.rows} rows are fewer than batch_size={cfg.batch_size}")
  steps_per_epoch = job.rows // cfg.batch_size
  total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs *
                                                             steps_per_epoch)
  optimizer, schedule = (job.make_optimizer or make_optimizer)(
      cfg, total // cfg.gradient_accumulation_steps or 1)
  trainable, const = job.trainable, job.const
  opt_state = optimizer.init(trainable)
  step_fn = jax.jit(make_step(job.loss_fn, optimizer), donate_argnums=(0, 1))

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
    for i, idx in enumerate(batch_indices(job.rows, cfg.batch_size, cfg.seed, epoch)):
      if i < skip:
        continue
      batch = job.get_batch(idx)
      trainable, opt_state, metrics = step_fn(trainable, opt_state, batch, const)
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

  out = job.save(workdir, trainable)
  summary = {"steps": step, "resumed_from": start, "first_loss": log[0]["loss"] if log else None,
             "final_loss": log[-1]["loss"] if log else None, "tokens_per_s": tokens_seen /
             max(elapsed, 1e-9), "train_seconds": elapsed, "output": str(out), **job.stats,
             "trainable_params": lora.count_params(trainable), "log": log}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


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
  return fit(cfg, workdir, sft_job(cfg, infer.load(cfg.model)), resume=resume,
             stop_at_step=stop_at_step)
