"""The flags `launch.sft` and `launch.rlhf` share, named as ms-swift names them.

Importing this module defines them; `config_kwargs(mesh())` turns their values into the
keyword arguments of `swiftjax.trainer.TrainConfig` (and so of its subclasses `RlhfConfig`,
`MllmTrainConfig`). As in ms-swift and Hugging Face, --per_device_train_batch_size is the batch
of one data-parallel device; `TrainConfig.batch_size` is the global batch, that times the
mesh's data x fsdp size (`global_batch_size`).
"""

from absl import flags

from launch import common

MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id "
                            "(default: the embedded SmolLM2-135M-Instruct).")
DATASET = flags.DEFINE_multi_string("dataset", [], "JSON/JSONL(.gz) file, `datasets` "
                                    "save_to_disk directory or hub id, optionally `path#N` to "
                                    "sample N rows; repeat to mix datasets.")
TUNER = flags.DEFINE_enum("tuner_type", "lora", ["lora", "dora", "rslora", "full"],
                          "What to train.")
flags.DEFINE_alias("train_type", "tuner_type")
flags.DEFINE_alias("sft_type", "tuner_type")
RANK = flags.DEFINE_integer("lora_rank", 8, "LoRA rank.", lower_bound=1)
ALPHA = flags.DEFINE_float("lora_alpha", 32.0, "LoRA alpha.")
TARGETS = flags.DEFINE_list("target_modules", ["all-linear"],
                            "`all-linear`, module names, or one regex over parameter paths.")
LR = flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.", lower_bound=0.0)
EPOCHS = flags.DEFINE_float("num_train_epochs", 1.0, "Epochs (ignored with --max_steps).")
MAX_STEPS = flags.DEFINE_integer("max_steps", -1, "Stop after this many steps (-1: epochs).")
BATCH = flags.DEFINE_integer("per_device_train_batch_size", 1,
                             "Rows (SFT) or pairs (preference training) per device and step; "
                             "the global batch is this times the mesh's data x fsdp size "
                             "(--mesh_data x --mesh_fsdp; tensor-parallel devices share rows).",
                             lower_bound=1)
flags.DEFINE_alias("batch_size", "per_device_train_batch_size")
ACCUM = flags.DEFINE_integer("gradient_accumulation_steps", 1, "Steps per update.",
                             lower_bound=1)
MAX_LENGTH = flags.DEFINE_integer("max_length", 512, "Tokens per sequence.", lower_bound=8)
TRUNC = flags.DEFINE_enum("truncation_strategy", "delete", ["delete", "left", "right"],
                          "What to do with longer sequences.")
WARMUP = flags.DEFINE_float("warmup_ratio", 0.05, "Warmup fraction.", lower_bound=0.0)
SCHED = flags.DEFINE_enum("lr_scheduler_type", "cosine", ["cosine", "linear", "constant"],
                          "Decay after warmup.")
CLIP = flags.DEFINE_float("max_grad_norm", 1.0, "Global-norm clipping.")
WD = flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay.")
SAVE_STEPS = flags.DEFINE_integer("save_steps", 0, "Checkpoint every N steps (0: at the end).")
SAVE_LIMIT = flags.DEFINE_integer("save_total_limit", 2, "Checkpoints kept.", lower_bound=1)
SEED = flags.DEFINE_integer("seed", 42, "Seed for adapters and data order.")
OUTPUT = flags.DEFINE_string("output_dir", None, "Where the run writes (default: output/<job>).")
RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --output_dir.")
SKIP_BAD = flags.DEFINE_bool("skip_bad_rows", False, "Skip and count malformed rows.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the earlier run in --output_dir "
                              "(its checkpoints, tensorboard, adapter, merged, summary.json, "
                              "loss_curve.png; other files stay). Without it, or --resume, an "
                              "--output_dir holding a run is refused.")
VAL_DATASET = flags.DEFINE_multi_string("val_dataset", [], "Validation file(s), read like "
                                        "--dataset (`path#N` too), for the eval loss.")
SPLIT_RATIO = flags.DEFINE_float("split_dataset_ratio", 0.0, "Fraction of the --dataset rows "
                                 "held out for the eval loss (default 0: none; older ms-swift "
                                 "releases defaulted to 0.01). Excludes --val_dataset.",
                                 lower_bound=0.0, upper_bound=0.99)
EVAL_STEPS = flags.DEFINE_integer("eval_steps", None, "Eval loss every N steps (default: "
                                  "every --save_steps; 0: only at the end). With a validation "
                                  "set it is also computed after the last step.",
                                  lower_bound=0)
MERGE_LORA = flags.DEFINE_bool("merge_lora", False, "After training, fold the adapters into "
                               "the base weights and write a Hugging Face directory (config."
                               "json, safetensors, tokenizer) to --output_dir/merged.")
GRAD_CKPT = flags.DEFINE_bool("gradient_checkpointing", False, "Recompute each decoder layer "
                              "in the backward pass instead of keeping its activations: "
                              "less memory, slower steps (ms-swift defaults it on, here it is "
                              "off; see TrainConfig.gradient_checkpointing).")
REMAT_POLICY = flags.DEFINE_enum("remat_policy", "full", ["full", "dots"], "What "
                                 "--gradient_checkpointing keeps: `full` only each layer's "
                                 "input, `dots` also the weight matmuls' outputs.")
# --mesh_data / --mesh_fsdp / --mesh_tensor; with --distributed, the mesh spans every process's
# devices, and the global batch (--per_device_train_batch_size x data x fsdp) is split over them.
MESH = common.define_mesh_flags()


def target_modules(values: list[str]) -> str | tuple[str, ...]:
  """`--target_modules`: `all-linear` or one regex stay a string, module names become a tuple."""
  if len(values) == 1 and (values[0] == "all-linear" or any(c in values[0] for c in "/.*()|")):
    return values[0]
  return tuple(values)


def global_batch_size(per_device: int, mesh) -> int:
  """`per_device` rows on each of the mesh's data x fsdp ways (1 without a mesh)."""
  if mesh is None:
    return per_device
  from swiftjax import sharding  # pylint: disable=g-import-not-at-top
  return per_device * sharding.batch_axes_size(mesh)


def config_kwargs(mesh) -> dict:
  """The shared flags' values as `TrainConfig` keyword arguments, for a run on `mesh` (None:
  one device); `batch_size` is the global batch (`global_batch_size`)."""
  return dict(
      model=MODEL.value, dataset=DATASET.value, tuner=TUNER.value, lora_rank=RANK.value,
      lora_alpha=ALPHA.value, target_modules=target_modules(TARGETS.value),
      learning_rate=LR.value, weight_decay=WD.value, warmup_ratio=WARMUP.value,
      lr_scheduler_type=SCHED.value, max_grad_norm=CLIP.value, num_train_epochs=EPOCHS.value,
      max_steps=MAX_STEPS.value, batch_size=global_batch_size(BATCH.value, mesh),
      gradient_accumulation_steps=ACCUM.value, max_length=MAX_LENGTH.value,
      truncation_strategy=TRUNC.value, save_steps=SAVE_STEPS.value,
      save_total_limit=SAVE_LIMIT.value, seed=SEED.value, skip_bad_rows=SKIP_BAD.value,
      val_dataset=VAL_DATASET.value, split_dataset_ratio=SPLIT_RATIO.value,
      eval_steps=EVAL_STEPS.value, merge_lora=MERGE_LORA.value,
      gradient_checkpointing=GRAD_CKPT.value, remat_policy=REMAT_POLICY.value)


def output_dir(job: str) -> str:
  """`--output_dir`, or `output/<job>` when it is not given."""
  return OUTPUT.value or f"output/{job}"


def mesh():
  """The device mesh the mesh flags ask for, or None on a single device with default flags."""
  return common.mesh_from_flags(MESH)
