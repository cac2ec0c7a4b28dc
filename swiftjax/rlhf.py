"""Preference training on the SFT loop: DPO (sigmoid / IPO / hinge), ORPO, SimPO, CPO, KTO and a
reward model, as `trainer.Job`s that `trainer.fit` runs.

    summary = rlhf.train_preference(rlhf.RlhfConfig(model=..., dataset=[...], rlhf_type="dpo",
                                                    beta=0.1), workdir)

Chosen and rejected answers run as one `[2B, L]` forward pass; `swiftjax.preference` turns
their per-sequence log-probabilities into the loss `rlhf_type` names. With a LoRA-family tuner
the reference model is the same base params with the adapters left off (no second copy of the
weights); full fine-tuning keeps the initial params as the reference. Reference-free losses
(ORPO, SimPO, CPO, reward model) skip the reference pass. The reward model (`rm`) scores the
last token of each sequence with a scalar value head that replaces the LM head.
"""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import infer
from swiftjax import preference
from swiftjax import run_dir
from swiftjax import train_data
from swiftjax import trainer
from swiftjax.data import packing
from swiftjax.data import pairs
from swiftjax.lora import lora
from swiftjax.models import decoder
from swiftjax.train_config import TrainConfig


@dataclasses.dataclass
class RlhfConfig(TrainConfig):
  """Preference-training settings: `TrainConfig`'s plus the loss (see
  `preference.PreferenceConfig`; `beta=None` picks ms-swift's default). `packing` is unused:
  preference rows are padded, one sequence per row."""
  rlhf_type: str = "dpo"
  beta: float | None = None
  loss_type: str = "sigmoid"
  label_smoothing: float = 0.0
  simpo_gamma: float = 1.0
  cpo_alpha: float = 1.0
  desirable_weight: float = 1.0
  undesirable_weight: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    try:
      self.preference = preference.PreferenceConfig(
          rlhf_type=self.rlhf_type, beta=self.beta, loss_type=self.loss_type,
          label_smoothing=self.label_smoothing, simpo_gamma=self.simpo_gamma,
          cpo_alpha=self.cpo_alpha, desirable_weight=self.desirable_weight,
          undesirable_weight=self.undesirable_weight)
    except ValueError as e:
      raise errors.ConfigError(str(e)) from None
    if self.merge_lora and self.rlhf_type == "rm":
      raise errors.ConfigError("merge_lora writes a causal LM; a reward model's value head has "
                               "no place in it (keep the adapters and value_head.safetensors)")


def build_preference_splits(cfg: RlhfConfig, tokenizer
                            ) -> tuple[tuple[packing.Batch, np.ndarray],
                                       tuple[packing.Batch, np.ndarray] | None, dict]:
  """Reads and renders every dataset for `cfg.rlhf_type`: `((batch, desirable), validation
  (batch, desirable) or None, stats)`, each batch `[N, 2, L]` rows (see `pairs.build`) with
  `desirable [N]`; the validation rows are `cfg.val_dataset`'s or `cfg.split_dataset_ratio`
  of the training rows (`train_data.read_splits`)."""
  kind = "kto" if cfg.rlhf_type == "kto" else "pair"
  rows, val_rows, stats = train_data.read_splits(
      cfg, lambda path, **kw: pairs.read(path, kind, **kw))
  data, desirable, more = pairs.build(rows, tokenizer, cfg.max_length, cfg.truncation_strategy,
                                      cfg.seed)
  stats.update(more)
  val = None
  if val_rows:
    val_data, val_desirable, val_more = pairs.build(val_rows, tokenizer, cfg.max_length,
                                                    cfg.truncation_strategy, cfg.seed)
    val = (val_data, val_desirable)
    stats.update({f"val_{k}": v for k, v in val_more.items()})
  return (data, desirable), val, stats


def build_preference_data(cfg: RlhfConfig, tokenizer) -> tuple[packing.Batch, np.ndarray, dict]:
  """Reads and renders every dataset for `cfg.rlhf_type`: `[N, 2, L]` rows (see `pairs.build`),
  `desirable [N]` and statistics (the training split of `build_preference_splits`)."""
  (data, desirable), _, stats = build_preference_splits(cfg, tokenizer)
  return data, desirable, stats


def _forward(params, model_cfg, batch, value_head=None) -> jax.Array:
  """Logits `[2B, L, V]`, or with `value_head` `[D, 1]` the scalar scores `[2B, L, 1]`: the head
  replaces the LM head on the final normalised hidden states (as Hugging Face's
  `*ForSequenceClassification` scores them)."""
  if value_head is not None:
    params = dict(params, lm_head={"kernel": value_head})
    model_cfg = dataclasses.replace(model_cfg, tie_word_embeddings=False,
                                    final_logit_softcap=None)
  logits, _ = decoder.apply(params, batch["tokens"], model_cfg,
                            segment_ids=batch["segment_ids"], positions=batch["positions"])
  return logits


def preference_logps(params, model_cfg, batch) -> preference.SequenceLogps:
  """Per-sequence log-probabilities `[2B]` of the batch's trained (answer) tokens."""
  logits = _forward(params, model_cfg, batch)
  return preference.SequenceLogps(*preference.sequence_logps(
      logits[:, :-1], batch["tokens"][:, 1:], batch["weights"][:, 1:]))


def last_token_scores(scores: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """`scores [N, L, 1]` at each right-padded sequence's last token -> `[N]`."""
  last = jnp.maximum(jnp.sum(segment_ids > 0, axis=1) - 1, 0)
  return jnp.take_along_axis(scores[..., 0], last[:, None], axis=1)[:, 0]


def make_preference_logps_fn(model_cfg, tuner_cfg, pref_cfg: preference.PreferenceConfig):
  """`logps_fn(trainable, const, batch) -> (policy logps, reference logps or None)`, each
  `SequenceLogps` of `[2B]`.

  The policy is `lora.apply(base, adapters)` (or the trained params); the reference is the
  base without adapters, `const["base"]` itself, so the weights are not copied; with full
  fine-tuning it is `const["reference"]`, the initial params. The reference pass is skipped
  for reference-free losses and carries no gradient.
  """

  def logps_fn(trainable, const, batch):
    model = trainable["model"]
    params = model if tuner_cfg is None else lora.apply(const["base"], model, tuner_cfg)
    policy = preference_logps(params, model_cfg, batch)
    if not pref_cfg.needs_reference:
      return policy, None
    ref_params = const["base"] if tuner_cfg is not None else const["reference"]
    ref = preference_logps(jax.lax.stop_gradient(ref_params), model_cfg, batch)
    return policy, jax.tree.map(jax.lax.stop_gradient, ref)

  return logps_fn


def _masked_mean(x, mask):
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_preference_loss_fn(model_cfg, tuner_cfg, pref_cfg: preference.PreferenceConfig):
  """`loss_fn(trainable, const, batch) -> (loss, metrics)` for `pref_cfg.rlhf_type`.

  `batch` is `pairs.take`'s: its `[2B, L]` rows alternate chosen answer (KTO: the labelled
  completion) and rejected one (KTO: the mismatched completion), pair by pair.
  Metrics: `rewards/{chosen,rejected,margins,accuracies}` (KTO: mean reward of desirable and
  undesirable completions, their margin, and `kl`), and `logps/{chosen,rejected}`.
  """
  logps_fn = make_preference_logps_fn(model_cfg, tuner_cfg, pref_cfg)
  kind = pref_cfg.rlhf_type

  def loss_fn(trainable, const, batch):
    if kind == "rm":
      model = trainable["model"]
      params = model if tuner_cfg is None else lora.apply(const["base"], model, tuner_cfg)
      scores = last_token_scores(_forward(params, model_cfg, batch, trainable["value_head"]),
                                 batch["segment_ids"])
      chosen, rejected = pairs.sides(scores)
      loss = preference.reward_model_loss(chosen, rejected)
      return jnp.mean(loss), preference.reward_metrics(jax.lax.stop_gradient(chosen),
                                                       jax.lax.stop_gradient(rejected))
    policy, ref = logps_fn(trainable, const, batch)
    pc, pr = (preference.SequenceLogps(*h) for h in zip(*(pairs.sides(x) for x in policy)))
    if kind == "kto":
      desirable = batch["desirable"]
      loss, rewards, kl = preference.kto_batch_loss(pref_cfg, pc.sum, pairs.sides(ref.sum)[0],
                                                    pr.sum, pairs.sides(ref.sum)[1], desirable)
      good, bad = _masked_mean(rewards, desirable), _masked_mean(rewards, ~desirable)
      metrics = {"rewards/chosen": good, "rewards/rejected": bad, "rewards/margins": good - bad,
                 "kl": kl, "logps/chosen": _masked_mean(pc.sum, desirable),
                 "logps/rejected": _masked_mean(pc.sum, ~desirable)}
      return jnp.mean(loss), metrics
    rc = rr = None
    if ref is not None:
      rc, rr = (preference.SequenceLogps(*h) for h in zip(*(pairs.sides(x) for x in ref)))
    loss, chosen_rewards, rejected_rewards = preference.pair_loss(pref_cfg, pc, pr, rc, rr)
    metrics = preference.reward_metrics(chosen_rewards, rejected_rewards)
    metrics.update({"logps/chosen": jnp.mean(pc.sum), "logps/rejected": jnp.mean(pr.sum)})
    return jnp.mean(loss), jax.lax.stop_gradient(metrics)

  return loss_fn


def _save_value_head(directory: pathlib.Path, value_head: jax.Array) -> None:
  """The reward model's head as `score.weight` `[1, D]`, Hugging Face's name for it."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)
  save_file({"score.weight": np.asarray(value_head, np.float32).T.copy()},
            str(directory / "value_head.safetensors"))


def preference_job(cfg: RlhfConfig, model: infer.LoadedModel) -> trainer.Job:
  """Preference training on `pairs.build`'s rows, with the loss `cfg.rlhf_type` names.

  The trainable tree is `{"model": adapters or params[, "value_head": [D, 1]]}`; `const` holds
  the frozen base (tuners) or the reference params (full fine-tuning with DPO/KTO).
  """
  (data, desirable), val, stats = build_preference_splits(cfg, model.tokenizer)
  frozen, model_tree, tuner_cfg = trainer.init_trainable(cfg, model)
  frozen_axes, model_axes = trainer.init_axes(model.cfg, model_tree, tuner_cfg)
  pref_cfg = cfg.preference
  const = {"base": frozen, "reference": None}
  const_axes = {"base": frozen_axes, "reference": None}
  if tuner_cfg is None and pref_cfg.needs_reference:
    # Full fine-tuning has no base to fall back to: the reference is the initial params, and
    # the trained copy must not share buffers with it (the step donates the trainable tree).
    const["reference"], const_axes["reference"] = model.params, model_axes
    model_tree = jax.tree.map(jnp.copy, model.params)
  trainable = {"model": model_tree}
  trainable_axes = {"model": model_axes}
  if pref_cfg.rlhf_type == "rm":
    trainable["value_head"] = 0.02 * jax.random.normal(
        jax.random.fold_in(jax.random.key(cfg.seed), 1), (model.cfg.hidden_size, 1), jnp.float32)
    trainable_axes["value_head"] = ("embed", None)

  def save(workdir, trainable):
    out = trainer.save_adapters(model, tuner_cfg, workdir, trainable["model"])
    if "value_head" in trainable:
      _save_value_head(out if tuner_cfg is not None else workdir, trainable["value_head"])
    return out

  return trainer.Job(len(desirable), lambda idx: pairs.take(data, desirable, idx),
             make_preference_loss_fn(trainer.training_model_config(cfg, model.cfg), tuner_cfg,
                                     pref_cfg), trainable, const, save,
             {"rlhf_type": pref_cfg.rlhf_type,
              "beta": None if pref_cfg.rlhf_type == "rm" else pref_cfg.beta, **stats},
             trainable_axes=trainable_axes, const_axes=const_axes,
             eval_rows=0 if val is None else len(val[1]),
             get_eval_batch=None if val is None else lambda idx: pairs.take(*val, idx))


def train_preference(cfg: RlhfConfig, workdir: str | pathlib.Path, *, resume: bool = False,
                     stop_at_step: int | None = None,
                     mesh: jax.sharding.Mesh | None = None, overwrite: bool = False) -> dict:
  """Runs preference training (DPO, ORPO, SimPO, CPO, KTO or a reward model).

  Writes what `train` writes (adapters in PEFT format, checkpoints, TensorBoard events,
  `summary.json`, eval loss with validation rows, `loss_curve.png`, the merged model with
  `cfg.merge_lora`); a reward model adds `value_head.safetensors` next to its adapters. The
  summary's `log` holds each step's reward metrics.

  Args:
    cfg: the training config, with the preference loss.
    workdir: output directory.
    resume: continue from the latest checkpoint in `workdir`.
    stop_at_step: stop after this step as if interrupted.
    mesh: the device mesh, or None for one device (see `trainer.fit`); the model is loaded
      straight into its layout on it.
    overwrite: replace another run's outputs in `workdir` (see `run_dir.prepare_workdir`).

  Returns:
    the summary dict (also written to `workdir/summary.json`).
  """
  run_dir.check_workdir(workdir, resume=resume, overwrite=overwrite)  # before loading
  summary = trainer.fit(cfg, workdir, preference_job(cfg, infer.load(cfg.model, mesh=mesh)),
                        resume=resume, stop_at_step=stop_at_step, mesh=mesh,
                        overwrite=overwrite)
  return run_dir.finish_merge(cfg, workdir, summary)
