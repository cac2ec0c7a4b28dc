"""Multimodal SFT: one `trainer.Job` for every MLLM family (LLaVA, Idefics3, Qwen2-VL).

    model = mllm.load("path/to/llava-dir")
    cfg = MllmTrainConfig(dataset=["vqa.jsonl"], freeze_vit=False)
    summary = trainer.fit(cfg, "runs/vqa", mllm_job(cfg, model))     # or train(cfg, workdir)

What is trained, as ms-swift does it: the tuner (LoRA/DoRA/rsLoRA adapters, or full fine-tuning)
acts on the language model (`params["language_model"]`); the vision tower (`vision/`) and the
aligner (`projector/`) are frozen by default (`freeze_vit`, `freeze_aligner`) and, when
unfrozen, trained in full next to the adapters, optionally at their own learning rates
(`vit_lr`, `aligner_lr`, by scaling their Adam updates; the schedule is shared).

Data: `swiftjax.data.multimodal` reads the rows (`<image>` placeholders + `images`), renders them
with the family's image text, and lays them out in rows with a fixed number of image slots per
batch. Unpacked rows run through `family.apply`; packed rows (several whole samples per row) need
attention confined to each sample, so they run through `family.apply(segment_ids=...)` when the
family takes it, else (families with plain RoPE) through the shared route every family's
`apply` follows: token embeddings, image features at the image tokens, `decoder.apply` with
`segment_ids` and per-sample positions.

Output (`save`): `adapter/` holds the language model's PEFT adapters (`peft_io`) and, when
anything else was trained, `modules_to_save.safetensors`: the trained `vision/` and
`projector/` weights in swiftjax's layout (tensor name = parameter path, layer-stacked).
Full fine-tuning writes every trained tree (`language_model/` included) to
`full/modules_to_save.safetensors`. `apply_trained` puts either back into a model's params.
"""

import dataclasses
import inspect
import json
import os
import pathlib
import tempfile
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from swiftjax import errors
from swiftjax import infer
from swiftjax import losses
from swiftjax import train_data
from swiftjax import trainer
from swiftjax.data import multimodal
from swiftjax.lora import lora
from swiftjax.lora import paths
from swiftjax.lora import peft_io
from swiftjax.mllm import inputs
from swiftjax.models import decoder

MODULES_FILE = "modules_to_save.safetensors"
PARTS = ("vision", "projector")  # trained in full when not frozen


@dataclasses.dataclass
class MllmTrainConfig(trainer.TrainConfig):
  """`TrainConfig` plus ms-swift's multimodal switches.

  Attributes:
    freeze_vit: keep the vision tower (`vision/`) frozen.
    freeze_aligner: keep the projector / connector (`projector/`) frozen.
    vit_lr: the vision tower's peak learning rate (default: `learning_rate`).
    aligner_lr: the projector's peak learning rate (default: `learning_rate`).
  """
  freeze_vit: bool = True
  freeze_aligner: bool = True
  vit_lr: float | None = None
  aligner_lr: float | None = None

  def __post_init__(self):
    super().__post_init__()
    for name in ("vit_lr", "aligner_lr"):
      value = getattr(self, name)
      if value is not None and value < 0:
        raise errors.ConfigError(f"{name} must be >= 0, got {value}")

  @property
  def trained_parts(self) -> tuple[str, ...]:
    """Which of `vision`, `projector` are trained in full."""
    return tuple(p for p, frozen in zip(PARTS, (self.freeze_vit, self.freeze_aligner))
                 if not frozen)

  def lr_multipliers(self) -> dict[str, float]:
    """Top-level param group -> its learning rate / `learning_rate`."""
    out = {}
    for part, lr in zip(PARTS, (self.vit_lr, self.aligner_lr)):
      if part in self.trained_parts and lr is not None and lr != self.learning_rate:
        if self.learning_rate == 0:
          raise errors.ConfigError("vit_lr / aligner_lr need learning_rate > 0 (the schedule "
                                   "is scaled from it)")
        out[part] = lr / self.learning_rate
    return out


def is_multimodal_dir(path: str | pathlib.Path | None) -> bool:
  """Whether `path` is a local model directory whose `config.json` describes a multimodal model:
  a `model_type` of a family here, or any `vision_config` (an unsupported family then gets a
  clear error from `mllm.load` rather than being read as a text model)."""
  from swiftjax import mllm  # pylint: disable=g-import-not-at-top
  if path is None or not (pathlib.Path(path) / "config.json").is_file():
    return False
  if mllm.is_multimodal(path):
    return True
  try:
    return "vision_config" in json.loads((pathlib.Path(path) / "config.json").read_text())
  except (OSError, ValueError):
    return False


def scale_groups(multipliers: dict[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of top-level groups (`{"vision": 10.0}`) by constants: per-group
  learning rates on top of a shared optimizer and schedule."""

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    return {k: (jax.tree.map(lambda u, m=multipliers[k]: u * m, v) if k in multipliers else v)
            for k, v in updates.items()}, state

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg: MllmTrainConfig, total_updates: int):
  """`trainer.make_optimizer`, then the per-group learning-rate multipliers."""
  optimizer, schedule = trainer.make_optimizer(cfg, total_updates)
  multipliers = cfg.lr_multipliers()
  if multipliers:
    optimizer = optax.chain(optimizer, scale_groups(multipliers))
  return optimizer, schedule


def split_params(cfg: MllmTrainConfig, params: dict) -> tuple[dict, dict, lora.LoraConfig | None]:
  """`(trainable, const, tuner config or None)`.

  `trainable` holds `language_model` (adapters, or the whole language model when
  `tuner == "full"`) and the unfrozen parts (copies, so donating them leaves `params` intact);
  `const` the frozen base and the frozen parts.
  """
  for key in ("language_model",) + PARTS:
    if key not in params:
      raise errors.ConfigError(f"multimodal params lack the top-level {key!r} tree (have "
                               f"{sorted(params)})")
  frozen, adapters, tuner_cfg = trainer.init_trainable(
      cfg, types.SimpleNamespace(params=params["language_model"]))
  trainable = {"language_model": adapters}
  const = {"language_model": frozen}
  for part in PARTS:
    if part in cfg.trained_parts:
      trainable[part] = jax.tree.map(jnp.array, params[part])
    else:
      const[part] = params[part]
  return trainable, const, tuner_cfg


def join_params(trainable: dict, const: dict, tuner_cfg: lora.LoraConfig | None) -> dict:
  """The model's params from `split_params`' halves (adapters as `LoraWeight`s)."""
  lm = (trainable["language_model"] if tuner_cfg is None else
        lora.apply(const["language_model"], trainable["language_model"], tuner_cfg))
  return {"language_model": lm, **{p: trainable[p] if p in trainable else const[p]
                                   for p in PARTS}}


def image_inputs_of(batch: dict) -> dict | None:
  """The `image/<name>` entries of a batch as the family's image inputs (None without)."""
  n = len(multimodal.IMAGE_KEY_PREFIX)
  found = {k[n:]: v for k, v in batch.items() if k.startswith(multimodal.IMAGE_KEY_PREFIX)}
  return found or None


def forward(family: Any, cfg: Any, params: dict, batch: dict, *, packed: bool,
            compute_dtype: Any = None) -> jax.Array:
  """Logits `[B, T, V]` of a training batch (`multimodal.Rows.batch`).

  Args:
    family, cfg, params: the model.
    batch: `tokens`, `segment_ids`, `positions` `[B, T]` and the `image/...` inputs.
    packed: rows may hold several samples (attention is then kept within each).
    compute_dtype: activation dtype.
  """
  tokens, segments = batch["tokens"], batch["segment_ids"]
  images = image_inputs_of(batch)
  if not packed:
    logits, _ = family.apply(params, tokens, cfg, image_inputs=images, mask=segments > 0,
                             compute_dtype=compute_dtype)
    return logits
  if "segment_ids" in inspect.signature(family.apply).parameters:
    logits, _ = family.apply(params, tokens, cfg, image_inputs=images, segment_ids=segments,
                             positions=batch["positions"], compute_dtype=compute_dtype)
    return logits
  lm = params["language_model"]
  is_image = tokens == cfg.image_token_id
  embeds = decoder.embed(lm, jnp.where(is_image, 0, tokens))
  if compute_dtype is not None:
    embeds = embeds.astype(compute_dtype)
  if images:
    extra = ({"compute_dtype": compute_dtype} if "compute_dtype" in
             inspect.signature(family.encode_images).parameters else {})
    features = family.encode_images(params, cfg, **images, **extra)
    embeds = inputs.merge_image_features(embeds, tokens, cfg.image_token_id, features)
  logits, _ = decoder.apply(lm, None, cfg.text, embeds=embeds, segment_ids=segments,
                            positions=batch["positions"], compute_dtype=compute_dtype)
  return logits


def build_splits(cfg: MllmTrainConfig, model: Any
                 ) -> tuple[multimodal.Rows, multimodal.Rows | None, dict]:
  """`(training rows, validation rows or None, stats)` for `model` (a `mllm.LoadedMLLM`): every
  dataset of `cfg` read, rendered and laid out; validation rows from `cfg.val_dataset` or the
  `cfg.split_dataset_ratio` held out of the training rows (`train_data.read_splits`), laid out
  the same way.

  Raises:
    ConfigError: a split with no example left that has a trained token.
  """
  rows, val_rows, stats = train_data.read_splits(cfg, multimodal.read_rows)
  builder = multimodal.Builder(model.tokenizer, model.family, model.processor,
                               model.cfg.image_token_id,
                               lambda r: train_data.render_row(cfg, model.tokenizer, r))
  pad_images = getattr(model.family, "PAD_IMAGE_INPUTS", None)

  def lay_out(split_rows, what):
    try:
      examples, built = multimodal.build_examples(
          split_rows, builder, max_length=cfg.max_length,
          truncation_strategy=cfg.truncation_strategy, skip_bad_rows=cfg.skip_bad_rows)
    except errors.ConfigError as e:
      raise errors.ConfigError(f"{what}: {e}") from None
    return multimodal.layout(examples, cfg.max_length, cfg.batch_size, packing=cfg.packing,
                             pad_images=pad_images), built

  laid, built = lay_out(rows, "training split")
  stats.update(built)
  stats["rows"] = len(laid.members)
  stats["image_slots"] = dict(laid.slots)
  val = None
  if val_rows:
    val, val_built = lay_out(val_rows, "validation split")
    stats["val_examples"] = val_built["examples"]
  return laid, val, stats


def build_rows(cfg: MllmTrainConfig, model: Any) -> tuple[multimodal.Rows, dict]:
  """`(training rows, stats)`: `build_splits` without the validation rows."""
  rows, _, stats = build_splits(cfg, model)
  return rows, stats


def mllm_job(cfg: MllmTrainConfig, model: Any, rows: multimodal.Rows | None = None,
             stats: dict | None = None, val_rows: multimodal.Rows | None = None
             ) -> trainer.Job:
  """Multimodal SFT of `model` (a `swiftjax.mllm.LoadedMLLM`: family, cfg, params, processor,
  tokenizer): weighted next-token loss over samples, image features at the image tokens.

  Args:
    cfg: the training config.
    model: the model.
    rows, stats, val_rows: data already laid out (`build_splits`); read from `cfg.dataset`
      (and `cfg.val_dataset` / `cfg.split_dataset_ratio`) when `rows` is None. With
      validation rows, `trainer.fit` reports their loss every `cfg.eval_steps` and at the end.

  Raises:
    ConfigError: packing for a family with multimodal RoPE whose `apply` takes no
      `segment_ids` (pass packing=False).
  """
  if rows is None:
    rows, val_rows, stats = build_splits(cfg, model)
  family, mcfg = model.family, model.cfg
  packed = max(r.max_segments for r in (rows, val_rows) if r is not None) > 1
  if (packed and getattr(mcfg.text, "mrope_section", None)
      and "segment_ids" not in inspect.signature(family.apply).parameters):
    raise errors.ConfigError(f"packing is not supported for {family.__name__} (multimodal "
                             "RoPE positions per sample); use packing=False (--packing=false)")
  trainable, const, tuner_cfg = split_params(cfg, model.params)
  # Gradient checkpointing reaches the language model's layer scan (the vision tower runs as is).
  train_cfg = dataclasses.replace(mcfg, text=trainer.training_model_config(cfg, mcfg.text))

  def loss_fn(trainable, const, batch):
    params = join_params(trainable, const, tuner_cfg)
    logits = forward(family, train_cfg, params, batch, packed=packed,
                     compute_dtype=model.compute_dtype)
    loss, targets = losses.next_token_loss(logits, batch["tokens"], batch["weights"],
                                           batch["segment_ids"])
    return loss, {"targets": targets}

  def save_fn(workdir, trained):
    return save(pathlib.Path(workdir), trained, tuner_cfg, mcfg,
                base_model_name_or_path=str(model.path))

  return trainer.Job(len(rows.members), rows.batch, loss_fn, trainable, const, save_fn,
                     dict(stats or {}, trained_parts=list(cfg.trained_parts)),
                     make_optimizer=make_optimizer,
                     eval_rows=0 if val_rows is None else len(val_rows.members),
                     # Fewer validation rows than a batch: `eval_batches` repeats rows to
                     # fill it, which could overflow the image slots; each row once instead.
                     get_eval_batch=None if val_rows is None else
                     lambda idx: val_rows.batch(np.unique(idx)))


# ----------------------------------------------------------------------------- saving

def _write_modules(path: pathlib.Path, tree: dict) -> None:
  """Flat `{param path: array}` safetensors, written to a temporary file and renamed."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  flat = {k: np.ascontiguousarray(np.asarray(v)) for k, v in paths.flatten(tree).items()}
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  os.close(fd)
  try:
    save_file(flat, tmp, metadata={"format": "swiftjax", "parts": ",".join(sorted(tree))})
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def save(workdir: pathlib.Path, trained: dict, tuner_cfg: lora.LoraConfig | None, cfg: Any, *,
         base_model_name_or_path: str | None = None) -> pathlib.Path:
  """Writes the trained trees (see the module docstring); returns the output directory."""
  if tuner_cfg is not None:
    out = workdir / "adapter"
    peft_io.save(out, trained["language_model"], tuner_cfg, cfg.text,
                 base_model_name_or_path=base_model_name_or_path)
    modules = {k: v for k, v in trained.items() if k != "language_model"}
  else:
    out = workdir / "full"
    out.mkdir(parents=True, exist_ok=True)
    modules = dict(trained)
  if modules:
    _write_modules(out / MODULES_FILE, modules)
  return out


def apply_trained(params: dict, cfg: Any, directory: str | pathlib.Path, *,
                  merge: bool = True) -> dict:
  """`params` with what `save` wrote into `directory` put back: the language model's adapters
  (merged, or kept as `LoraWeight`s) and the fully trained trees.

  Raises:
    CheckpointError: nothing to apply in `directory`, a tensor the model does not have, or a
      shape that differs (named).
  """
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  has_adapter = (directory / peft_io.CONFIG_FILE).is_file()
  modules_path = directory / MODULES_FILE
  if not has_adapter and not modules_path.is_file():
    raise errors.CheckpointError(f"{directory} holds neither a PEFT adapter nor {MODULES_FILE}")
  out = paths.copy_dicts(params)
  if modules_path.is_file():
    try:
      tensors = load_file(str(modules_path))
    except Exception as e:  # safetensors raises its own types on damaged files
      raise errors.CheckpointError(f"{modules_path}: not a readable safetensors file: "
                                   f"{e}") from None
    for name, value in tensors.items():
      try:
        old = paths.get(params, name)
      except (KeyError, TypeError):
        raise errors.CheckpointError(f"{modules_path}: tensor {name!r} is not a parameter of "
                                     "this model") from None
      if tuple(old.shape) != tuple(value.shape):
        raise errors.CheckpointError(f"{modules_path}: {name} has shape {tuple(value.shape)}, "
                                     f"the model's is {tuple(old.shape)}")
      paths.set_in(out, name, jnp.asarray(value, old.dtype))
  if has_adapter:
    out["language_model"] = infer.apply_adapters(out["language_model"], cfg.text, directory,
                                                 merge=merge)
  return out


def train(cfg: MllmTrainConfig, workdir: str | pathlib.Path, model: Any = None, *,
          resume: bool = False, stop_at_step: int | None = None) -> dict:
  """Multimodal SFT of `model` (default: `mllm.load(cfg.model)`); see `trainer.fit`."""
  if model is None:
    from swiftjax import mllm  # pylint: disable=g-import-not-at-top
    model = mllm.load(cfg.model)
  return trainer.fit(cfg, workdir, mllm_job(cfg, model), resume=resume,
                     stop_at_step=stop_at_step)
