r"""Preference training (DPO, ORPO, SimPO, CPO, KTO, reward model) of an LLM, LoRA by default.

  python -m launch.rlhf --rlhf_type=dpo --dataset=pairs.jsonl --output_dir=runs/dpo
  python -m launch.rlhf --rlhf_type=dpo --loss_type=ipo --beta=0.1 --model=path/to/hf_dir \
      --dataset=hh.jsonl.gz#500 --lora_rank=8 --max_steps=200
  python -m launch.rlhf --rlhf_type=kto --dataset=kto.json --desirable_weight=1.0

Rows hold a chosen and a rejected answer (ms-swift `messages` + `rejected_response`,
`chosen`/`rejected` strings after a `prompt` or whole conversations, LLaMA-Factory ranking rows,
Anthropic HH transcripts) or, for KTO, one labelled answer (`messages` + `label`). Without
--model the embedded SmolLM2-135M-Instruct is trained. With LoRA the reference model is the
base without adapters. Flags are named as ms-swift names them. The run writes `adapter/`
(PEFT format; a reward model adds `value_head.safetensors`), `checkpoints/` (Orbax) and
`summary.json` to --output_dir.
"""

import json

from absl import flags

from launch import common

_RLHF_TYPE = flags.DEFINE_enum("rlhf_type", "dpo", ["dpo", "orpo", "simpo", "cpo", "kto", "rm"],
                               "The preference loss (rm: a Bradley-Terry reward model).")
_BETA = flags.DEFINE_float("beta", None, "DPO/KTO/CPO temperature, SimPO reward scale, ORPO "
                           "lambda (default: 2.0 for simpo, 0.1 otherwise).")
_LOSS_TYPE = flags.DEFINE_enum("loss_type", "sigmoid", ["sigmoid", "ipo", "hinge"],
                               "DPO variant.")
_SMOOTHING = flags.DEFINE_float("label_smoothing", 0.0, "Conservative-DPO label smoothing.",
                                lower_bound=0.0, upper_bound=0.49)
_SIMPO_GAMMA = flags.DEFINE_float("simpo_gamma", 1.0, "SimPO target reward margin.")
_CPO_ALPHA = flags.DEFINE_float("cpo_alpha", 1.0, "Weight of CPO's NLL term.")
_DESIRABLE = flags.DEFINE_float("desirable_weight", 1.0, "KTO weight of desirable answers.")
_UNDESIRABLE = flags.DEFINE_float("undesirable_weight", 1.0,
                                  "KTO weight of undesirable answers.")
_MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id "
                             "(default: the embedded SmolLM2-135M-Instruct).")
_DATASET = flags.DEFINE_multi_string("dataset", [], "JSON/JSONL(.gz) file, optionally `path#N` "
                                     "to sample N rows; repeat to mix datasets.")
_TUNER = flags.DEFINE_enum("tuner_type", "lora", ["lora", "dora", "rslora", "full"],
                           "What to train.")
flags.DEFINE_alias("train_type", "tuner_type")
flags.DEFINE_alias("sft_type", "tuner_type")
_RANK = flags.DEFINE_integer("lora_rank", 8, "LoRA rank.", lower_bound=1)
_ALPHA = flags.DEFINE_float("lora_alpha", 32.0, "LoRA alpha.")
_TARGETS = flags.DEFINE_list("target_modules", ["all-linear"],
                             "`all-linear`, module names, or one regex over parameter paths.")
_LR = flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.", lower_bound=0.0)
_EPOCHS = flags.DEFINE_float("num_train_epochs", 1.0, "Epochs (ignored with --max_steps).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", -1, "Stop after this many steps (-1: epochs).")
_BATCH = flags.DEFINE_integer("per_device_train_batch_size", 1, "Pairs per step.",
                              lower_bound=1)
flags.DEFINE_alias("batch_size", "per_device_train_batch_size")
_ACCUM = flags.DEFINE_integer("gradient_accumulation_steps", 1, "Steps per update.",
                              lower_bound=1)
_MAX_LENGTH = flags.DEFINE_integer("max_length", 512, "Tokens per sequence.", lower_bound=8)
_TRUNC = flags.DEFINE_enum("truncation_strategy", "delete", ["delete", "left", "right"],
                           "What to do with longer sequences.")
_WARMUP = flags.DEFINE_float("warmup_ratio", 0.05, "Warmup fraction.", lower_bound=0.0)
_SCHED = flags.DEFINE_enum("lr_scheduler_type", "cosine", ["cosine", "linear", "constant"],
                           "Decay after warmup.")
_CLIP = flags.DEFINE_float("max_grad_norm", 1.0, "Global-norm clipping.")
_WD = flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay.")
_SAVE_STEPS = flags.DEFINE_integer("save_steps", 0, "Checkpoint every N steps (0: at the end).")
_SAVE_LIMIT = flags.DEFINE_integer("save_total_limit", 2, "Checkpoints kept.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 42, "Seed for adapters and data order.")
_OUTPUT = flags.DEFINE_string("output_dir", "output/rlhf", "Where the run writes.")
_RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --output_dir.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad_rows", False, "Skip and count malformed rows.")


def main(argv):
  del argv
  from swiftjax import rlhf  # pylint: disable=g-import-not-at-top
  targets = _TARGETS.value
  target_modules = targets[0] if len(targets) == 1 and (
      targets[0] == "all-linear" or any(c in targets[0] for c in "/.*()|")) else tuple(targets)
  cfg = rlhf.RlhfConfig(
      model=_MODEL.value, dataset=_DATASET.value, tuner=_TUNER.value, lora_rank=_RANK.value,
      lora_alpha=_ALPHA.value, target_modules=target_modules, learning_rate=_LR.value,
      weight_decay=_WD.value, warmup_ratio=_WARMUP.value, lr_scheduler_type=_SCHED.value,
      max_grad_norm=_CLIP.value, num_train_epochs=_EPOCHS.value, max_steps=_MAX_STEPS.value,
      batch_size=_BATCH.value, gradient_accumulation_steps=_ACCUM.value,
      max_length=_MAX_LENGTH.value, truncation_strategy=_TRUNC.value,
      save_steps=_SAVE_STEPS.value, save_total_limit=_SAVE_LIMIT.value, seed=_SEED.value,
      skip_bad_rows=_SKIP_BAD.value, rlhf_type=_RLHF_TYPE.value, beta=_BETA.value,
      loss_type=_LOSS_TYPE.value, label_smoothing=_SMOOTHING.value,
      simpo_gamma=_SIMPO_GAMMA.value, cpo_alpha=_CPO_ALPHA.value,
      desirable_weight=_DESIRABLE.value, undesirable_weight=_UNDESIRABLE.value)
  summary = rlhf.train_preference(cfg, _OUTPUT.value, resume=_RESUME.value)
  brief = {k: v for k, v in summary.items() if k != "log"}
  if summary["log"]:
    brief["final_metrics"] = summary["log"][-1]
  print(json.dumps(brief, indent=2))


if __name__ == "__main__":
  common.run(main)
