r"""Supervised fine-tuning (LoRA by default) of an LLM on JSON/JSONL conversations.

  python -m launch.sft --dataset=data.jsonl --output_dir=runs/sft
  python -m launch.sft --model=path/to/hf_dir --dataset=a.jsonl#500 --dataset=b.json \
      --tuner_type=lora --lora_rank=8 --lora_alpha=32 --max_steps=200 --packing

Without --model the embedded SmolLM2-135M-Instruct is fine-tuned. Flags are named as
ms-swift names them (`--train_type` and `--sft_type` are aliases of `--tuner_type`). The run
writes `adapter/` (PEFT format), `checkpoints/` (Orbax) and `summary.json` to --output_dir.
"""

import json

from absl import flags

from launch import common
from launch import train_flags

_PACKING = flags.DEFINE_bool("packing", True, "Pack examples into rows (no cross attention).")
_LOSS_SCALE = flags.DEFINE_string(
    "loss_scale", "default", "Per-token loss weights: strategies joined by `+` (default, "
    "last_round, all, react, agentflan, hermes, ignore_empty_think) or a JSON file.")
_AGENT_TEMPLATE = flags.DEFINE_enum(
    "agent_template", None, ["react", "toolbench", "hermes"],
    "Render tools and tool calls with this agent template (default: the chat template's own).")


def main(argv):
  del argv
  from swiftjax import trainer  # pylint: disable=g-import-not-at-top
  cfg = trainer.TrainConfig(**train_flags.config_kwargs(), packing=_PACKING.value,
                            loss_scale=_LOSS_SCALE.value, agent_template=_AGENT_TEMPLATE.value)
  summary = trainer.train(cfg, train_flags.output_dir("sft"), resume=train_flags.RESUME.value)
  brief = {k: v for k, v in summary.items() if k != "log"}
  print(json.dumps(brief, indent=2))


if __name__ == "__main__":
  common.run(main)
