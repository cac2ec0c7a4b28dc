"""Load a Hugging Face checkpoint directory (`config.json` + `*.safetensors`) into our layout.

Tensors are read lazily, one at a time, with `safetensors.safe_open`, cast to the requested dtype
on the host and written into stacked per-layer arrays, so the model is never held twice.
"""

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.models import llama
from swiftjax.models.config import ModelConfig

SUPPORTED_MODEL_TYPES = ("llama",)


def read_config(directory: pathlib.Path) -> ModelConfig:
  """Reads and validates `config.json`."""
  path = directory / "config.json"
  if not path.is_file():
    raise errors.CheckpointError(f"{directory} has no config.json")
  try:
    d = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.CheckpointError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
  model_type = d.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise errors.ConfigError(f"{path}: model_type {model_type!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
  return ModelConfig.from_hf_dict(d)


def _tensor_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
  """Maps every tensor name to the safetensors file that holds it (using the index if sharded)."""
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise errors.CheckpointError(f"{index}: not a valid safetensors index: {e}") from None
    missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
    if missing:
      raise errors.CheckpointError(f"{index} names shard files that are missing: {missing}")
    return {name: directory / file for name, file in weight_map.items()}
  files = sorted(directory.glob("*.safetensors"))
  if not files:
    raise errors.CheckpointError(f"{directory} has no *.safetensors files")
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  table = {}
  for f in files:
    try:
      with safe_open(str(f), framework="numpy") as h:
        for name in h.keys():
          table[name] = f
    except Exception as e:  # safetensors raises its own error types on damaged headers.
      raise errors.CheckpointError(
          f"{f}: not a readable safetensors file (truncated or corrupted?): {e}") from None
  return table


def load(directory: str | pathlib.Path, dtype: Any = jnp.float32) -> tuple[ModelConfig, dict]:
  """Reads a Hugging Face Llama-family directory into `(config, params)`.

  Raises:
    CheckpointError: missing/corrupted files, a missing tensor (named), or a shape mismatch
      (both shapes given).
    ConfigError: unsupported `model_type`.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  cfg = read_config(directory)
  files = _tensor_files(directory)
  shapes = jax.eval_shape(lambda: llama.init(cfg, jax.random.key(0), dtype))
  np_dtype = jnp.dtype(dtype)

  buffers = jax.tree.map(lambda s: np.empty(s.shape, np_dtype), shapes)
  handles: dict[pathlib.Path, Any] = {}
  try:
    for name, (path, layer, transpose) in llama.hf_tensor_names(cfg).items():
      if name not in files:
        raise errors.CheckpointError(f"{directory}: checkpoint lacks tensor {name!r}")
      f = files[name]
      if f not in handles:
        try:
          handles[f] = safe_open(str(f), framework="numpy")
        except Exception as e:  # safetensors raises its own error types on damaged headers.
          raise errors.CheckpointError(f"{f}: not a readable safetensors file: {e}") from None
      try:
        w = _get_tensor(handles[f], name)
      except Exception as e:
        raise errors.CheckpointError(f"{f}: cannot read tensor {name!r} "
                                     f"(truncated or corrupted?): {e}") from None
      if transpose:
        w = w.T
      node = buffers
      for key in path[:-1]:
        node = node[key]
      target = node[path[-1]]
      want = target.shape[1:] if layer is not None else target.shape
      if tuple(w.shape) != tuple(want):
        raise errors.CheckpointError(
            f"{directory}: tensor {name} has shape {tuple(w.shape)}, expected {tuple(want)}")
      if layer is not None:
        target[layer] = w
      else:
        target[...] = w
  finally:
    handles.clear()
  return cfg, jax.tree.map(jnp.asarray, buffers)


def _get_tensor(handle, name: str) -> np.ndarray:
  """Reads one tensor as numpy (bfloat16 comes back as an `ml_dtypes` array)."""
  return np.asarray(handle.get_tensor(name))
