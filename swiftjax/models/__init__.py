"""Model families as pure functions, and `from_pretrained` to load real checkpoints.

    cfg, params = swiftjax.models.from_pretrained("path/to/hf_dir_or_file.gguf")
    logits, _ = swiftjax.models.decoder.apply(params, tokens, cfg)
"""

import json
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax import sharding
from swiftjax.models import decoder
from swiftjax.models import families
from swiftjax.models import gguf_loader
from swiftjax.models import safetensors_loader
from swiftjax.models.config import ModelConfig

__all__ = ["ModelConfig", "decoder", "families", "from_pretrained"]

_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16,
           "bf16": jnp.bfloat16, "float16": jnp.float16, "fp16": jnp.float16}


def resolve_dtype(dtype: Any) -> Any:
  """Accepts a jnp dtype or a name (`float32`, `bf16`, ...)."""
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise errors.ConfigError(f"dtype {dtype!r} is not supported "
                               f"(supported: {', '.join(sorted(_DTYPES))})")
    return _DTYPES[dtype]
  if jnp.dtype(dtype) not in {jnp.dtype(d) for d in _DTYPES.values()}:
    raise errors.ConfigError(f"dtype {dtype} is not a floating dtype the models run in")
  return dtype


def from_pretrained(path: str | pathlib.Path, dtype: Any = jnp.float32, *,
                    mesh: jax.sharding.Mesh | None = None,
                    rules: Sequence[tuple[str, Any]] = sharding.DEFAULT_RULES,
                    ) -> tuple[ModelConfig, dict]:
  """Loads `(config, params)` from a GGUF file, a local Hugging Face directory, or a hub id.

  Args:
    path: a `.gguf` file, a directory with `config.json` and `*.safetensors`, or a hub model id
      (downloaded with `huggingface_hub.snapshot_download`; needs network).
    dtype: parameter dtype (`float32`, `bfloat16`, ...).
    mesh: if given, every parameter is placed straight into the layout its logical axes ask
      for on this mesh (`rules` maps logical to mesh axes); otherwise on the default device.
  """
  dtype = resolve_dtype(dtype)
  p = pathlib.Path(path)

  def shardings_for(read_config):
    if mesh is None:
      return None
    cfg = read_config(p)
    return sharding.tree_shardings(decoder.param_axes(cfg), decoder.param_shapes(cfg, dtype),
                                   mesh, rules)

  if p.suffix == ".gguf":
    return gguf_loader.load(p, dtype, shardings_for(gguf_loader.read_config))
  if p.is_dir():
    method = _quant_method(p)
    if method == "gptq":
      return _load_gptq(p, dtype, mesh)
    if method is not None:
      raise errors.CheckpointError(
          f"{p / 'config.json'}: quantization_config.quant_method {method!r} is not supported "
          "(supported: gptq, as `launch.export --quant_method` writes)")
    return safetensors_loader.load(p, dtype, shardings_for(safetensors_loader.read_config))
  if p.exists():
    raise errors.CheckpointError(f"{p} is neither a .gguf file nor a checkpoint directory")
  if str(path).count("/") == 1 and not str(path).startswith((".", "/")):
    # A hub id such as "HuggingFaceTB/SmolLM2-135M-Instruct".
    try:
      from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
      local = snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "*.model",
                                                           "*.txt"])
    except Exception as e:
      raise errors.CheckpointError(f"cannot fetch {path} from the hub: {e}") from None
    return from_pretrained(local, dtype, mesh=mesh, rules=rules)
  raise errors.CheckpointError(f"model path {path} does not exist")


def _quant_method(directory: pathlib.Path) -> str | None:
  """`quantization_config.quant_method` of a checkpoint directory, or None (a missing or
  unreadable config.json is left for the loader to report)."""
  try:
    config = json.loads((directory / "config.json").read_text())
  except (OSError, json.JSONDecodeError):
    return None
  qc = config.get("quantization_config") if isinstance(config, dict) else None
  return str(qc.get("quant_method")) if isinstance(qc, dict) else None


def _load_gptq(directory: pathlib.Path, dtype: Any, mesh: Any) -> tuple[ModelConfig, dict]:
  """A GPTQ v1 directory: packed kernels stay quantized (`Int4Weight` / `Int8Weight`); the
  other weights are cast to `dtype`."""
  if mesh is not None:
    raise errors.ConfigError(f"{directory}: GPTQ checkpoints load on one device only "
                             "(no mesh)")
  from swiftjax.export import quantized  # pylint: disable=g-import-not-at-top  (export imports us)
  cfg, params = quantized.read_gptq(directory)
  cast = lambda x: x.astype(dtype) if isinstance(x, jax.Array) else x
  return cfg, jax.tree.map(cast, params, is_leaf=lambda x: not isinstance(x, dict))
