"""Export a model, with fine-tuned adapters merged, as a Hugging Face directory and a GGUF file.

    from swiftjax import export
    result = export.export("out/", model=None, adapters=["run/adapter"], to_gguf="q8_0")
    # out/config.json, model.safetensors, generation_config.json, tokenizer files,
    # out/model-q8_0.gguf

Modules: `hf` (the Hugging Face directory), `gguf_writer` (the llama.cpp file). This module
loads the model (`models.from_pretrained`, float32), merges PEFT adapter directories in the
order given (`lora.merged`, `ia3.merged`), and writes everything into a temporary directory
beside `output_dir` that is renamed into place at the end, so an interrupted export leaves no
half-written output.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Iterator, Sequence

import jax.numpy as jnp

from swiftjax import assets
from swiftjax import errors
from swiftjax import models
from swiftjax import tokenizer as tok_lib
from swiftjax.export import gguf_writer
from swiftjax.export import hf
from swiftjax.export import quantized
from swiftjax.lora import ia3
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

__all__ = ["ExportResult", "export", "gguf_writer", "hf", "merge_adapters", "quantized",
           "QUANT_METHODS"]

# Quantization for `export(quant_method=..., quant_options=...)`: name ->
# fn(cfg, params, tokenizer, **quant_options) returning `(params with quantized weight kinds,
# quantization_config for config.json)`. Each weight kind registers how it is stored with
# `hf.register_kind_writer`. `quantized` registers `rtn` and `gptq` (GPTQ checkpoint layout).
QUANT_METHODS: dict[str, Callable[..., tuple[Any, dict]]] = dict(quantized.QUANT_METHODS)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
_PEFT_PREFIX = "base_model.model."


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """What `export` wrote.

  Attributes:
    output_dir: the directory.
    files: file name -> size in bytes.
    gguf_file: the GGUF file, if one was written.
    warnings: things the user should know (e.g. no tokenizer was found to save).
  """
  output_dir: pathlib.Path
  files: dict[str, int]
  gguf_file: pathlib.Path | None = None
  warnings: tuple[str, ...] = ()


def check_output_dir(output_dir: str | pathlib.Path, overwrite: bool = False) -> None:
  """Refuses an existing non-empty directory (unless `overwrite`) or an existing file."""
  p = pathlib.Path(output_dir)
  if p.exists() and not p.is_dir():
    raise errors.ConfigError(f"output_dir {p} exists and is not a directory")
  if p.is_dir() and any(p.iterdir()) and not overwrite:
    raise errors.ConfigError(f"output_dir {p} exists and is not empty; pass --overwrite "
                             "(overwrite=True) to replace it")


@contextlib.contextmanager
def atomic_directory(target: str | pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields a fresh directory beside `target`; on success it replaces `target`, on failure it
  is removed and `target` is left as it was."""
  target = pathlib.Path(target).absolute()
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; give it a normal directory's mode
  try:
    yield tmp
    for f in tmp.rglob("*"):
      if f.is_file():  # some writers (safetensors) create files 0600
        os.chmod(f, 0o666 & ~umask)
    old = None
    if target.exists():
      if any(target.iterdir()):
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "d")
      else:
        target.rmdir()
    try:
      os.replace(tmp, target)
    except BaseException:
      if old is not None:
        os.replace(old / "d", target)
      raise
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _peft_type(directory: pathlib.Path) -> str:
  config = directory / peft_io.CONFIG_FILE
  if not config.is_file():
    raise errors.CheckpointError(f"adapters {directory} is not a PEFT adapter directory: "
                                 f"{peft_io.CONFIG_FILE} is missing")
  try:
    return str(json.loads(config.read_text()).get("peft_type"))
  except (json.JSONDecodeError, AttributeError) as e:
    raise errors.CheckpointError(f"{config}: not a valid adapter config: {e}") from None


def _check_lora_shapes(directory: pathlib.Path, cfg: ModelConfig) -> None:
  """Names the first LoRA tensor whose shape does not fit this model's module."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  weights = directory / peft_io.WEIGHTS_FILE
  if not weights.is_file():
    return  # peft_io.load reports the missing file
  table = decoder.hf_tensor_names(cfg)
  shapes = decoder.param_shapes(cfg)
  try:
    handle = safe_open(str(weights), framework="numpy")
  except Exception:  # pylint: disable=broad-except  (peft_io.load reports damaged files)
    return
  with handle:
    for name in sorted(handle.keys()):
      stem = name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name
      for suffix, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0),
                           (".lora_magnitude_vector", -1), (".lora_magnitude_vector.weight", -1)):
        if stem.endswith(suffix):
          break
      else:
        continue
      module = stem[:-len(suffix)]
      entry = table.get(module + ".weight")
      if entry is None:
        continue  # peft_io.load names a tensor for a module this model lacks
      leaf = shapes
      for key in entry[0]:
        leaf = leaf[key]
      d_in, d_out = leaf.shape[-2:]
      shape = tuple(handle.get_slice(name).get_shape())
      if len(shape) != (1 if axis == -1 else 2) or shape[axis] != (d_in if axis == 1 else d_out):
        expected = {1: f"[r, {d_in}]", 0: f"[{d_out}, r]", -1: f"[{d_out}]"}[axis]
        raise errors.CheckpointError(
            f"{weights}: tensor {name} has shape {shape}, but {module} of this "
            f"{cfg.model_type} model maps {d_in} -> {d_out} features (expected {expected}): "
            "the adapter was trained for another model")


def merge_adapters(params: Any, cfg: ModelConfig,
                   adapter_dirs: Sequence[str | pathlib.Path]) -> Any:
  """Folds PEFT adapter directories (LoRA/rsLoRA/DoRA, IA3) into the params, in order.

  Raises:
    CheckpointError: a missing or damaged adapter directory, or one trained for another model
      (the message names the tensor that does not fit).
    ConfigError: a PEFT type that cannot be merged here.
  """
  for d in adapter_dirs:
    d = pathlib.Path(d)
    if not d.is_dir():
      raise errors.CheckpointError(f"adapters {d} is not a directory")
    kind = _peft_type(d)
    if kind == "LORA":
      _check_lora_shapes(d, cfg)
      lora_cfg, adapters = peft_io.load(d, cfg, params)
      params = lora.merged(params, adapters, lora_cfg)
    elif kind == "IA3":
      ia3_cfg, adapters = peft_io.load_ia3(d, cfg, params)
      params = ia3.merged(params, adapters, ia3_cfg)
    else:
      raise errors.ConfigError(f"{d / peft_io.CONFIG_FILE}: peft_type {kind!r} cannot be merged "
                               "(supported: LORA, IA3)")
  return params


def _load_tokenizer(path: Any) -> Any:
  """The source's tokenizer; None for a directory that has no tokenizer files."""
  p = pathlib.Path(str(path))
  if p.is_dir() and not any((p / f).is_file() for f in _TOKENIZER_FILES):
    return None
  return tok_lib.load_tokenizer(path)


def gguf_file_name(qtype: str) -> str:
  return f"model-{qtype}.gguf"


def export(output_dir: str | pathlib.Path, model: str | pathlib.Path | None = None,
           adapters: Sequence[str | pathlib.Path] = (), *, dtype: str = "float32",
           to_gguf: str | None = None, max_shard_size: str | int = "5GB",
           overwrite: bool = False, quant_method: str | None = None,
           quant_options: dict[str, Any] | None = None,
           progress: Callable[[str], None] | None = None) -> ExportResult:
  """Loads a model, merges adapters and writes a Hugging Face directory (and a GGUF file).

  Args:
    output_dir: the directory to create; an existing non-empty one is replaced only with
      `overwrite`. Everything is written beside it first and renamed into place at the end.
    model: GGUF file, Hugging Face directory or hub id; None: the embedded SmolLM2.
    adapters: PEFT adapter directories (as `launch.sft` writes them), merged in order.
    dtype: dtype of the safetensors weights (`float32`, `bfloat16`, `float16`); merging is
      done in float32 either way.
    to_gguf: also write `model-{to_gguf}.gguf` (`f16`, `q8_0` or `f32`) from the float32
      merged weights.
    max_shard_size: safetensors files larger than this are split (e.g. `5GB`, `500MB`).
    overwrite: replace an existing non-empty `output_dir`.
    quant_method: a key of `QUANT_METHODS` (weight quantization before writing).
    quant_options: keyword arguments of that method (for `rtn`/`gptq`: `bits`, `group_size`,
      `calibration_texts`, `calibration_samples`; see `quantized.quantize_for_export`).
    progress: called with a short line at each stage.

  Returns:
    An `ExportResult`.

  Raises:
    ConfigError: bad options, an existing output, or a model the chosen format cannot hold
      (checked before the model's weights are read where possible).
    CheckpointError: unreadable model or adapters, or adapters for another model.
  """
  say = progress or (lambda _: None)
  if dtype not in hf.DTYPES:
    raise errors.ConfigError(f"dtype {dtype!r} is not supported for export "
                             f"(supported: {', '.join(hf.DTYPES)})")
  if to_gguf is not None and to_gguf not in gguf_writer.QTYPES:
    raise errors.ConfigError(f"to_gguf {to_gguf!r} is not supported (supported: "
                             f"{', '.join(gguf_writer.QTYPES)})")
  if quant_method is not None and quant_method not in QUANT_METHODS:
    raise errors.ConfigError(f"quant_method {quant_method!r} is not available (available: "
                             f"{', '.join(QUANT_METHODS) or 'none yet'})")
  quant_options = dict(quant_options or {})
  if quant_method in quantized.QUANT_METHODS:
    quantized.check_options(quant_method, quant_options.get("bits", 4),
                            quant_options.get("group_size", 128))
  hf.parse_size(max_shard_size)
  check_output_dir(output_dir, overwrite)
  for d in adapters:
    _peft_type(pathlib.Path(d))  # fail on a wrong path before the model is read

  path = assets.default_model_path() if model is None else model
  say(f"loading {path}")
  cfg, params = models.from_pretrained(path, jnp.float32)
  hf.hf_config(cfg, dtype)  # a config the family cannot express fails before writing
  if to_gguf is not None:
    problems = gguf_writer.unsupported_features(cfg)
    if problems:
      raise errors.ConfigError(f"--to_gguf writes llama.cpp's llama architecture, which cannot "
                               f"hold this {cfg.model_type} model: {', '.join(problems)}")
  if adapters:
    say(f"merging {len(adapters)} adapter(s)")
    params = merge_adapters(params, cfg, adapters)
  tokenizer = _load_tokenizer(path)
  warnings = []
  if tokenizer is None:
    warnings.append(f"{path} has no tokenizer files; none were written")
  source = pathlib.Path(str(path))
  generation = None
  if source.is_dir() and (source / "generation_config.json").is_file():
    try:
      generation = json.loads((source / "generation_config.json").read_text())
    except json.JSONDecodeError:
      warnings.append(f"{source / 'generation_config.json'} is not valid JSON; a new one was "
                      "written")
  quantization_config = None
  if quant_method is not None:
    say(f"quantizing ({quant_method})")
    params, quantization_config = QUANT_METHODS[quant_method](cfg, params, tokenizer,
                                                               **quant_options)

  output_dir = pathlib.Path(output_dir)
  gguf_path = None
  with atomic_directory(output_dir) as tmp:
    say(f"writing Hugging Face files ({dtype})")
    hf.save(tmp, cfg, params, tokenizer, dtype=dtype, max_shard_size=max_shard_size,
            generation=generation, quantization_config=quantization_config)
    if to_gguf is not None:
      say(f"writing {gguf_file_name(to_gguf)}")
      is_gguf = source.suffix == ".gguf"
      gguf_writer.write(tmp / gguf_file_name(to_gguf), cfg, params, tokenizer, qtype=to_gguf,
                        name=None if is_gguf else source.name,
                        source_gguf=source if is_gguf else None)
      gguf_path = output_dir / gguf_file_name(to_gguf)
  files = {f.name: f.stat().st_size for f in sorted(output_dir.iterdir()) if f.is_file()}
  return ExportResult(output_dir, files, gguf_path, tuple(warnings))
