"""The settings of a training run (`TrainConfig`), shared by SFT, preference training
(`rlhf.RlhfConfig`) and multimodal SFT (`mllm.train.MllmTrainConfig`), which extend it.

    cfg = TrainConfig(model="path/to/hf_dir", dataset=["a.jsonl#500"], tuner="lora",
                      batch_size=8, max_steps=200)

Settings are checked when the config is made, before any data or model is read.
"""

import dataclasses
from typing import Sequence

from swiftjax import errors
from swiftjax.agent import templates
from swiftjax.data import loss_scale as loss_scale_lib
from swiftjax.models import config as model_config

TUNERS = ("lora", "dora", "rslora", "full")
# `remat_policy` values: `ModelConfig.remat`'s policies that checkpoint something.
REMAT_POLICIES = tuple(p for p in model_config.REMAT_POLICIES if p != "none")


@dataclasses.dataclass
class TrainConfig:
  """SFT settings, named as ms-swift names them where it has them.

  `batch_size` is the global batch: the rows (SFT) or pairs (preference training) one step
  takes over all devices and processes, split along the mesh's `data` x `fsdp` axes (so it
  must divide by their product). The launchers' `--per_device_train_batch_size` is each
  data-parallel device's share; they pass it times data x fsdp. An optimizer update takes
  `gradient_accumulation_steps` steps.
  """
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
  batch_size: int = 1  # the global batch (see above)
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
  # Validation: files read like `dataset` (`path#N` too), or a fraction of the `dataset` rows
  # held out (0 here, ms-swift's current default); the two exclude each other (as in ms-swift).
  val_dataset: Sequence[str] = ()
  split_dataset_ratio: float = 0.0
  # Eval loss every N steps (None: every `save_steps`; 0: only at the end); with a validation
  # set it is also computed after the last step.
  eval_steps: int | None = None
  # After training, fold the adapters into the base and write a Hugging Face directory
  # (`workdir/merged`, see `merge_output`).
  merge_lora: bool = False
  # Gradient checkpointing (ms-swift's and Hugging Face's `gradient_checkpointing`): recompute
  # each decoder layer in the backward pass instead of keeping its activations, saving what
  # `remat_policy` names (`full`: only the layer inputs; `dots`: also the weight matmuls'
  # outputs; see `ModelConfig.remat`). Off by default, unlike ms-swift, to keep the step
  # speed: LoRA on SmolLM2-135M, batch 8 x 256, on 2 CPU cores, full remat took 13% longer
  # per step and cut the compiled backward's scratch memory from 5.3 GB to 0.95 GB.
  gradient_checkpointing: bool = False
  remat_policy: str = "full"

  @property
  def remat(self) -> str:
    """The `ModelConfig.remat` policy training runs with (`none` without checkpointing)."""
    return self.remat_policy if self.gradient_checkpointing else "none"

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
    self.val_dataset = tuple(self.val_dataset)
    if not 0.0 <= self.split_dataset_ratio < 1.0:
      raise errors.ConfigError(f"split_dataset_ratio={self.split_dataset_ratio} is not in "
                               "[0, 1)")
    if self.val_dataset and self.split_dataset_ratio > 0:
      raise errors.ConfigError("val_dataset and split_dataset_ratio exclude each other: give "
                               "validation files or a fraction of the training rows, not both")
    if self.eval_steps is not None and self.eval_steps < 0:
      raise errors.ConfigError(f"eval_steps={self.eval_steps} is negative")
    if self.remat_policy not in REMAT_POLICIES:
      raise errors.ConfigError(f"remat_policy {self.remat_policy!r} is not one of "
                               f"{', '.join(REMAT_POLICIES)}")
    if self.merge_lora and self.tuner == "full":
      raise errors.ConfigError("merge_lora needs a LoRA-family tuner (lora, dora, rslora); "
                               "tuner=full has no adapters to merge")
