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
(PEFT format; a reward model adds `value_head.safetensors`), `checkpoints/` (Orbax),
`tensorboard/`, `summary.json` and `loss_curve.png` to --output_dir (`merged/` with
--merge_lora, not for rm). --val_dataset / --split_dataset_ratio add the preference loss on
held-out pairs every --eval_steps; --resume / --overwrite as in `launch.sft`. Sharding and
multi-host flags (--mesh_*, --distributed) are `launch.sft`'s; --per_device_train_batch_size
counts pairs per data-parallel device.
"""

import json

from absl import flags

from launch import common
from launch import train_flags

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


def main(argv):
  del argv
  from swiftjax import rlhf  # pylint: disable=g-import-not-at-top
  mesh = train_flags.mesh()
  cfg = rlhf.RlhfConfig(
      **train_flags.config_kwargs(mesh), rlhf_type=_RLHF_TYPE.value, beta=_BETA.value,
      loss_type=_LOSS_TYPE.value, label_smoothing=_SMOOTHING.value,
      simpo_gamma=_SIMPO_GAMMA.value, cpo_alpha=_CPO_ALPHA.value,
      desirable_weight=_DESIRABLE.value, undesirable_weight=_UNDESIRABLE.value)
  summary = rlhf.train_preference(cfg, train_flags.output_dir("rlhf"),
                                 resume=train_flags.RESUME.value, mesh=mesh,
                                 overwrite=train_flags.OVERWRITE.value)
  brief = {k: v for k, v in summary.items() if k not in ("log", "eval_history")}
  if summary["log"]:
    brief["final_metrics"] = summary["log"][-1]
  print(json.dumps(brief, indent=2))


if __name__ == "__main__":
  common.run(main)
