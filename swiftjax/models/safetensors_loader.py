"""Load a Hugging Face checkpoint directory (`config.json` + `*.safetensors`) into our layout.

Tensors are read lazily, one at a time, with `safetensors.safe_open` (memory-mapped), cast to
the requested dtype on the host and written into stacked per-layer arrays.
"""

import json
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import sharding
from swiftjax.models import decoder
from swiftjax.models import families
from swiftjax.models.config import ModelConfig


def read_config_json(directory: str | pathlib.Path) -> tuple[dict[str, Any], pathlib.Path]:
  """`(config dict, path)` of a checkpoint directory's `config.json`, not yet validated (a
  multimodal family reads its own composite config from it).

  Raises:
    CheckpointError: no `config.json`, or invalid JSON (file and line named).
  """
  path = pathlib.Path(directory) / "config.json"
  if not path.is_file():
    raise errors.CheckpointError(f"{directory} has no config.json")
  try:
    return json.loads(path.read_text()), path
  except json.JSONDecodeError as e:
    raise errors.CheckpointError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None


def read_config(directory: pathlib.Path) -> ModelConfig:
  """Reads and validates `config.json`."""
  d, path = read_config_json(directory)
  families.check_supported(d.get("model_type"), path)
  return ModelConfig.from_hf_dict(d)


def tensor_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
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


def load(directory: str | pathlib.Path, dtype: Any = jnp.float32,
         shardings: Any = None) -> tuple[ModelConfig, dict]:
  """Reads a Hugging Face directory of a supported family into `(config, params)`.

  Parameters are assembled one leaf at a time (all layers of one weight), cast to `dtype` on the
  host and placed on devices before the next leaf is read, so peak host memory stays near one
  copy of the model in `dtype` plus one leaf.

  Args:
    directory: holds `config.json` and `*.safetensors` (sharded with an index, or not).
    dtype: parameter dtype.
    shardings: optional tree of `NamedSharding` (same structure as the params); each leaf is
      placed straight into its layout.

  Raises:
    CheckpointError: missing/corrupted files, a missing tensor (named), or a shape mismatch
      (both shapes given).
    ConfigError: unsupported `model_type`.
  """
  directory = pathlib.Path(directory)
  cfg = read_config(directory)
  return cfg, read_tensors(directory, decoder.hf_tensor_names(cfg),
                           decoder.param_shapes(cfg, dtype), dtype, shardings)


TensorTable = dict[str, tuple[tuple[str, ...], int | None, bool]]


def read_tensors(directory: str | pathlib.Path, table: TensorTable, shapes: Any,
                 dtype: Any = jnp.float32, shardings: Any = None,
                 files: dict[str, pathlib.Path] | None = None) -> dict:
  """Reads the tensors `table` names from a checkpoint directory into a nested param tree.

  Any model made of parts (a multimodal model's vision tower, projector and language model)
  loads through this with its own table.

  Args:
    directory: a directory of `*.safetensors` files (with the index when sharded).
    table: Hugging Face tensor name -> `(param path, layer index or None, transpose)`; entries
      with a layer index fill one slice of a stacked `[L, ...]` parameter.
    shapes: nested tree of `jax.ShapeDtypeStruct` covering every path in `table`.
    dtype: parameter dtype.
    shardings: optional tree of `NamedSharding` like `shapes`.
    files: tensor name -> file, when the caller already listed the directory.

  Returns:
    The nested parameter tree (only the paths `table` names).
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  files = tensor_files(directory) if files is None else files
  np_dtype = jnp.dtype(dtype)
  by_path: dict[tuple[str, ...], list] = {}
  for name, (path, layer, transpose) in table.items():
    if name not in files:
      raise errors.CheckpointError(f"{directory}: checkpoint lacks tensor {name!r}")
    by_path.setdefault(path, []).append((name, layer, transpose))
  handles: dict[pathlib.Path, Any] = {}
  flat = {}
  try:
    for path, entries in by_path.items():
      shape = _at(shapes, path).shape
      buf = np.empty(shape, np_dtype)
      for name, layer, transpose in entries:
        f = files[name]
        if f not in handles:
          try:
            handles[f] = safe_open(str(f), framework="numpy")
          except Exception as e:  # safetensors raises its own error types on damaged headers.
            raise errors.CheckpointError(f"{f}: not a readable safetensors file: {e}") from None
        try:
          w = np.asarray(handles[f].get_tensor(name))
        except Exception as e:
          raise errors.CheckpointError(f"{f}: cannot read tensor {name!r} "
                                       f"(truncated or corrupted?): {e}") from None
        if transpose:
          w = w.T
        want = shape[1:] if layer is not None else shape
        if tuple(w.shape) != tuple(want):
          raise errors.CheckpointError(
              f"{directory}: tensor {name} has shape {tuple(w.shape)}, expected {tuple(want)}")
        if layer is not None:
          buf[layer] = w
        else:
          buf[...] = w
      target = _at(shardings, path) if shardings is not None else None
      flat[path] = sharding.put(buf, target)
      del buf
  finally:
    handles.clear()
  return decoder.nest(flat)


def _at(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree
