"""Multimodal LLMs: the family registry, loading a model directory, and answering prompts with
images.

A prompt marks where each image goes with an `<image>` placeholder, as ms-swift's dataset
format does; the i-th placeholder (counted over all messages of a prompt) takes the i-th image.
Each family module (`llava`, `idefics3`, `qwen2_vl`) shares one API (`load`, `apply`,
`preprocess_images`, `image_text`, ...); they are imported only when used, so a family that
cannot be imported does not break the others.

  model = mllm.load("path/to/llava-dir")
  mllm.chat(model, "<image>\\nWhat is in the picture?", ["cat.jpg"])
"""

import dataclasses
import importlib
import json
import pathlib
from typing import Any

from swiftjax import errors
from swiftjax.mllm.chat import IMAGE_PLACEHOLDER
from swiftjax.mllm.chat import answer
from swiftjax.mllm.chat import answer_file
from swiftjax.mllm.chat import chat
from swiftjax.mllm.chat import check_count
from swiftjax.mllm.chat import load_images
from swiftjax.mllm.chat import prepare

__all__ = ["FAMILIES", "IMAGE_PLACEHOLDER", "LoadedMLLM", "answer", "answer_file", "chat",
           "check_count", "family", "is_multimodal", "load", "load_images", "load_processor",
           "model_type", "prepare"]

# config.json `model_type` -> the module that implements it.
FAMILIES = {
    "llava": "swiftjax.mllm.llava",
    "idefics3": "swiftjax.mllm.idefics3",
    "qwen2_vl": "swiftjax.mllm.qwen2_vl",
}


def family(model_type: str) -> Any:
  """The family module for a `model_type` (imported on first use).

  Raises:
    ConfigError: not a multimodal family, or its module cannot be imported.
  """
  if model_type not in FAMILIES:
    raise errors.ConfigError(f"model_type {model_type!r} is not a multimodal family "
                             f"(supported: {', '.join(sorted(FAMILIES))})")
  try:
    return importlib.import_module(FAMILIES[model_type])
  except ImportError as e:
    raise errors.ConfigError(f"multimodal family {model_type!r} is unavailable: {e}") from None


def model_type(path: str | pathlib.Path | None) -> str | None:
  """The `model_type` of a local Hugging Face directory's `config.json` (None for anything else:
  a GGUF file, a hub id, a directory without a readable config)."""
  if path is None:
    return None
  config = pathlib.Path(path) / "config.json"
  try:
    return json.loads(config.read_text()).get("model_type")
  except (OSError, ValueError, AttributeError):
    return None


def is_multimodal(path: str | pathlib.Path | None) -> bool:
  """Whether `path` is a model directory of a multimodal family."""
  return model_type(path) in FAMILIES


@dataclasses.dataclass
class LoadedMLLM:
  """A multimodal model ready to answer.

  Attributes:
    path: where it was loaded from.
    family: the family module (`swiftjax.mllm.llava`, ...).
    cfg: the family's config (`cfg.text` is the language model's).
    params: `{"vision", "projector", "language_model"}`.
    processor: the checkpoint's processor (or its image processor alone).
    tokenizer: the tokenizer.
    compute_dtype: activation dtype (default: the language model's parameter dtype).
  """
  path: pathlib.Path | str
  family: Any
  cfg: Any
  params: Any
  processor: Any
  tokenizer: Any
  compute_dtype: Any = None

  @property
  def eos_ids(self) -> tuple[int, ...]:
    ids = set(self.cfg.text.eos_token_ids)
    if getattr(self.tokenizer, "eos_token_id", None) is not None:
      ids.add(int(self.tokenizer.eos_token_id))
    return tuple(sorted(ids))


def load(path: str | pathlib.Path, dtype: Any = "float32", *,
         adapters: str | pathlib.Path | None = None, merge: bool = True) -> LoadedMLLM:
  """Loads a multimodal Hugging Face directory with its processor.

  Args:
    path: the model directory (`config.json`, `*.safetensors`, processor and tokenizer files).
    dtype: parameter dtype.
    adapters: what multimodal training wrote (`swiftjax.mllm.train.save`): a PEFT LoRA
      directory for the language model, with the trained vision tower / projector weights
      (`modules_to_save.safetensors`) when those were trained too; or a full fine-tuning
      directory.
    merge: fold the adapters into the kernels (else keep them as separate LoRA weights).

  Raises:
    ConfigError: not a multimodal model directory.
    CheckpointError: unreadable weights, processor or adapters (named).
  """
  from swiftjax import models  # pylint: disable=g-import-not-at-top
  mt = model_type(path)
  if mt not in FAMILIES:
    raise errors.ConfigError(f"{path} is not a multimodal model directory (config.json "
                             f"model_type {mt!r}; supported: {', '.join(sorted(FAMILIES))})")
  fam = family(mt)
  cfg, params = fam.load(path, dtype=models.resolve_dtype(dtype))
  if adapters is not None:
    from swiftjax.mllm import train  # pylint: disable=g-import-not-at-top
    params = train.apply_trained(params, cfg, adapters, merge=merge)
  processor, tokenizer = load_processor(path)
  return LoadedMLLM(path, fam, cfg, params, processor, tokenizer)


def load_processor(path: str | pathlib.Path) -> tuple[Any, Any]:
  """`(processor, tokenizer)` of a model directory: `AutoProcessor`, or, when that cannot be
  built (transformers 5's Qwen2-VL processor insists on a video processor, which needs
  torchvision), the image processor and the tokenizer on their own; the family functions take
  either.

  Raises:
    CheckpointError: neither loads (the directory and the reason are named).
  """
  import transformers  # pylint: disable=g-import-not-at-top
  try:
    processor = transformers.AutoProcessor.from_pretrained(str(path))
    return processor, getattr(processor, "tokenizer", processor)
  except (ImportError, OSError, ValueError, TypeError, KeyError) as e:
    first = e
  try:
    return (transformers.AutoImageProcessor.from_pretrained(str(path)),
            transformers.AutoTokenizer.from_pretrained(str(path)))
  except (ImportError, OSError, ValueError, TypeError, KeyError):
    reason = " ".join(str(first).split()) or type(first).__name__
    raise errors.CheckpointError(f"{path}: cannot load the processor: {reason}") from None

