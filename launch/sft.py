r"""Supervised fine-tuning (LoRA by default) of an LLM on JSON/JSONL conversations.

  python -m launch.sft --dataset=data.jsonl --output_dir=runs/sft
  python -m launch.sft --model=path/to/hf_dir --dataset=a.jsonl#500 --dataset=b.json \
      --tuner_type=lora --lora_rank=8 --lora_alpha=32 --max_steps=200 --packing

Without --model the embedded SmolLM2-135M-Instruct is fine-tuned. Flags are named as
ms-swift names them (`--train_type` and `--sft_type` are aliases of `--tuner_type`). The run
writes `adapter/` (PEFT format), `checkpoints/` (Orbax), `tensorboard/`, `summary.json` and
`loss_curve.png` to --output_dir; `--merge_lora` adds `merged/`, the base model with the
adapters folded in (a Hugging Face directory). An --output_dir that holds a run is refused
unless --resume (continue it) or --overwrite (replace it) is given. With --val_dataset or
--split_dataset_ratio the eval loss is logged every --eval_steps and at the end:

  python -m launch.sft --dataset=train.jsonl --val_dataset=val.jsonl --eval_steps=50 \
      --save_steps=50 --merge_lora

On several devices the run is sharded over the mesh `--mesh_data` x `--mesh_fsdp` x
`--mesh_tensor` (default: FSDP over all of them); --per_device_train_batch_size is each
data-parallel device's share (a step takes that times data x fsdp rows, as in ms-swift).
Multi-host: start one process per host with --distributed (coordinator from the cluster, or
--coordinator_address / --num_processes / --process_id):

  python -m launch.sft --dataset=data.jsonl --output_dir=/shared/runs/sft --batch_size=4 \
      --distributed --coordinator_address=host0:1234 --num_processes=2 --process_id=0

A multimodal model directory (LLaVA, Idefics3, Qwen2-VL: its config.json has a vision config)
trains on rows with `<image>` placeholders and an `images` list; the tuner acts on the language
model, `--freeze_vit=false` / `--freeze_aligner=false` train the vision tower / projector in
full (at `--vit_lr` / `--aligner_lr`), saved next to the adapters:

  python -m launch.sft --model=path/to/llava --dataset=vqa.jsonl --freeze_aligner=false
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

_FREEZE_VIT = flags.DEFINE_bool("freeze_vit", True,
                                "Multimodal models: keep the vision tower frozen.")
_FREEZE_ALIGNER = flags.DEFINE_bool("freeze_aligner", True, "Multimodal models: keep the "
                                    "projector (aligner) frozen.")
_VIT_LR = flags.DEFINE_float("vit_lr", None, "Multimodal models: the unfrozen vision tower's peak "
                             "learning rate (default: --learning_rate).", lower_bound=0.0)
_ALIGNER_LR = flags.DEFINE_float("aligner_lr", None, "Multimodal models: the unfrozen projector's "
                                 "peak learning rate (default: --learning_rate).",
                                 lower_bound=0.0)
_MULTIMODAL_FLAGS = ("freeze_vit", "freeze_aligner", "vit_lr", "aligner_lr")
# Text-model features multimodal training does not have yet (a merged multimodal checkpoint:
# `swiftjax.mllm.train.apply_trained` merges in memory; no Hugging Face exporter for the families).
_TEXT_ONLY_FLAGS = ("merge_lora",)


def main(argv):
  del argv
  from swiftjax import errors  # pylint: disable=g-import-not-at-top
  from swiftjax import run_dir  # pylint: disable=g-import-not-at-top
  from swiftjax import trainer  # pylint: disable=g-import-not-at-top
  from swiftjax.mllm import train as mllm_train  # pylint: disable=g-import-not-at-top
  kwargs = dict(packing=_PACKING.value, loss_scale=_LOSS_SCALE.value,
                agent_template=_AGENT_TEMPLATE.value)
  out = train_flags.output_dir("sft")
  if mllm_train.is_multimodal_dir(train_flags.MODEL.value):
    given = [f"--{h.name}" for h in train_flags.MESH if h.present]
    if given:
      raise errors.ConfigError(f"{', '.join(given)}: multimodal training runs on one device")
    given = [f"--{n}" for n in _TEXT_ONLY_FLAGS if flags.FLAGS[n].present]
    if given:
      raise errors.ConfigError(f"{', '.join(given)} only apply to text models; "
                               f"{train_flags.MODEL.value} is a multimodal model")
    cfg = mllm_train.MllmTrainConfig(
        **train_flags.config_kwargs(None), **kwargs, freeze_vit=_FREEZE_VIT.value, freeze_aligner=_FREEZE_ALIGNER.value,
        vit_lr=_VIT_LR.value, aligner_lr=_ALIGNER_LR.value)
    run_dir.prepare_workdir(out, resume=train_flags.RESUME.value,
                            overwrite=train_flags.OVERWRITE.value)
    summary = mllm_train.train(cfg, out, resume=train_flags.RESUME.value)
  else:
    given = [f"--{n}" for n in _MULTIMODAL_FLAGS if flags.FLAGS[n].present]
    if given:
      raise errors.ConfigError(f"{', '.join(given)} only apply to multimodal models; "
                               f"{train_flags.MODEL.value or 'the embedded model'} is a text "
                               "model")
    mesh = train_flags.mesh()
    cfg = trainer.TrainConfig(**train_flags.config_kwargs(mesh), **kwargs)
    summary = trainer.train(cfg, out, resume=train_flags.RESUME.value, mesh=mesh,
                            overwrite=train_flags.OVERWRITE.value)
  brief = {k: v for k, v in summary.items() if k not in ("log", "eval_history")}
  print(json.dumps(brief, indent=2))


if __name__ == "__main__":
  common.run(main)
