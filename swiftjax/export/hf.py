"""Write a model as a Hugging Face checkpoint directory that `transformers` loads.

    hf.save(directory, cfg, params, tokenizer, dtype="bfloat16")
    transformers.AutoModelForCausalLM.from_pretrained(directory)   # the same model

This is the inverse of `swiftjax.models.safetensors_loader`:
  * `config.json` is the Hugging Face config of the family (`families.py`); before anything is
    written, it is read back with `families.config_from_hf` and must give `cfg` again, both with
    and without transformers 5's `layer_types`, so older transformers read the same model.
  * tensors are named by `decoder.hf_tensor_names`, kernels transposed back to `[out, in]`,
    stacked layers split, and written to `model.safetensors`, or to
    `model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json` when the
    weights exceed `max_shard_size` (the layout `save_pretrained` writes).
  * `generation_config.json` and the tokenizer files (`tokenizer.save_pretrained`).

Weight kinds other than plain arrays (LoRA-wrapped, packed bf16, quantized) are written dense
(`linear.densify`), unless a writer for the kind is registered with `register_kind_writer`:
that is the hook quantized exports (int8/int4, GPTQ) use to store packed integers and scales,
together with `save(quantization_config=...)`.
"""

import dataclasses
import json
import pathlib
import re
from typing import Any, Callable, Iterator

import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import linear
from swiftjax.models import decoder
from swiftjax.models import families
from swiftjax.models.config import ModelConfig

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "gemma2": "Gemma2ForCausalLM"}
DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16, "float16": np.float16}
SAFETENSORS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# kind -> fn(leaf, layer, hf_name, transpose) -> {tensor name: numpy array}: how a weight kind is
# stored (e.g. `...qweight`, `...scales`) instead of as one dense `hf_name` tensor.
KindWriter = Callable[[Any, int | None, str, bool], dict[str, np.ndarray]]
_KIND_WRITERS: dict[type, KindWriter] = {}


def register_kind_writer(kind: type, writer: KindWriter) -> None:
  """Stores weights of `kind` with `writer(leaf, layer, hf_name, transpose)` instead of dense.

  `leaf` is the whole (layer-stacked) parameter, `layer` the index to write (None for
  unstacked parameters), `hf_name` the dense tensor's name (`model.layers.3.mlp.up_proj.weight`)
  and `transpose` whether Hugging Face's layout is the transpose of ours.
  """
  _KIND_WRITERS[kind] = writer


def _float32_tidy(x: float) -> float:
  """1e-05 rather than 9.999999747378752e-06 for values that came from a float32 (GGUF)."""
  x = float(x)
  return float(str(np.float32(x))) if float(np.float32(x)) == x else x


def _eos(ids: tuple[int, ...]) -> Any:
  return None if not ids else (ids[0] if len(ids) == 1 else list(ids))


def _rope_scaling(cfg: ModelConfig) -> dict[str, Any] | None:
  """`rope_scaling` with the type under `rope_type` (older configs call it `type`)."""
  scaling = cfg.rope_scaling_dict
  if not scaling:
    return None
  kind = scaling.pop("type", None)
  scaling.setdefault("rope_type", kind or "default")
  return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(scaling.items())}


def _windows_start(cfg: ModelConfig) -> tuple[int, int]:
  """`(window, first sliding layer)` for Qwen's `max_window_layers` layout ((0, L) if none)."""
  windows = cfg.windows
  sliding = [i for i, w in enumerate(windows) if w]
  return (windows[sliding[0]], sliding[0]) if sliding else (0, cfg.num_layers)


def hf_config(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
  """The Hugging Face `config.json` dictionary of `cfg`'s family.

  Raises:
    ConfigError: `cfg` is not expressible in its family's config (e.g. a `llama` with a sliding
      window, or a `qwen2` without q/k/v biases); the message names the fields that differ.
  """
  families.check_supported(cfg.model_type, "ModelConfig")
  window, start = _windows_start(cfg)
  d: dict[str, Any] = {
      "architectures": [ARCHITECTURES[cfg.model_type]],
      "model_type": cfg.model_type,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu" if cfg.activation == "silu" else "gelu_pytorch_tanh",
      "max_position_embeddings": cfg.max_position_embeddings,
      "rms_norm_eps": _float32_tidy(cfg.rms_norm_eps),
      # Top-level rope_theta/rope_scaling (transformers 4) and rope_parameters (5) together.
      "rope_theta": _float32_tidy(cfg.rope_theta),
      "rope_scaling": _rope_scaling(cfg),
      "rope_parameters": {"rope_type": "default", **(_rope_scaling(cfg) or {}),
                          "rope_theta": _float32_tidy(cfg.rope_theta)},
      "tie_word_embeddings": cfg.tie_word_embeddings,
      "bos_token_id": cfg.bos_token_id,
      "eos_token_id": _eos(cfg.eos_token_ids),
      "torch_dtype": dtype,
      "attention_dropout": 0.0,
      "use_cache": True,
  }
  kind = cfg.model_type
  layer_types = ["sliding_attention" if w else "full_attention" for w in cfg.windows]
  if kind == "llama":
    d.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
  elif kind == "mistral":
    d.update(sliding_window=window or None)
  elif kind in ("qwen2", "qwen3"):
    d.update(use_sliding_window=bool(window), sliding_window=window or None,
             max_window_layers=start, layer_types=layer_types)
    if kind == "qwen3":
      d.update(attention_bias=cfg.qkv_bias)
  elif kind == "gemma2":
    d.update(hidden_activation="gelu_pytorch_tanh", attention_bias=False,
             query_pre_attn_scalar=cfg.query_pre_attn_scalar or cfg.head_dim,
             attn_logit_softcapping=cfg.attn_logit_softcap,
             final_logit_softcapping=cfg.final_logit_softcap,
             sliding_window=window or None, layer_types=layer_types)
  _check_round_trip(cfg, d)
  return d


def _check_round_trip(cfg: ModelConfig, d: dict[str, Any]) -> None:
  """`d` must read back as `cfg`, with and without `layer_types` (older transformers)."""
  scaling = _rope_scaling(cfg)
  want = dataclasses.replace(cfg, scan_unroll=1, remat="none", rope_scaling=scaling and tuple(
      (k, tuple(v) if isinstance(v, list) else v) for k, v in scaling.items()))
  if want.model_type == "gemma2" and want.query_pre_attn_scalar is None:
    want = dataclasses.replace(want, query_pre_attn_scalar=want.head_dim)
  for variant in (d, {k: v for k, v in d.items() if k != "layer_types"}):
    got = families.config_from_hf(json.loads(json.dumps(variant)))
    diffs = []
    for f in dataclasses.fields(ModelConfig):
      a, b = getattr(want, f.name), getattr(got, f.name)
      same = (np.isclose(a, b, rtol=1e-6, atol=0) if isinstance(a, float) and
              isinstance(b, float) else a == b)
      if not same:
        diffs.append(f"{f.name}={a!r} (reads back as {b!r})")
    if diffs:
      raise errors.ConfigError(f"this model cannot be written as a {cfg.model_type} "
                               f"config.json: {'; '.join(diffs)}")


def parse_size(size: str | int) -> int:
  """Bytes in `"5GB"`, `"500MB"`, `"2GiB"` or a plain integer (GB = 10**9, as transformers)."""
  if isinstance(size, int):
    return size
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*", str(size), re.IGNORECASE)
  if not m or float(m.group(1)) <= 0:
    raise errors.ConfigError(f"max_shard_size {size!r} is not a size such as 5GB or 500MB")
  unit = (m.group(2) or "B").upper()
  scale = 1 if unit == "B" else (1024 if "I" in unit else 1000) ** "BKMGT".index(unit[0])
  return int(float(m.group(1)) * scale)


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One tensor to write: where it comes from and how many bytes it takes."""
  name: str
  path: tuple[str, ...]
  layer: int | None
  transpose: bool
  nbytes: int


def _leaf(params: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    params = params[key]
  return params


def _plan(cfg: ModelConfig, params: Any, dtype: Any) -> list[_Entry]:
  """Every tensor in layer-major order (as `save_pretrained`), with its size in `dtype`."""
  itemsize = np.dtype(dtype).itemsize
  entries = []
  for name, (path, layer, transpose) in decoder.hf_tensor_names(cfg).items():
    try:
      leaf = _leaf(params, path)
    except (KeyError, TypeError):
      raise errors.CheckpointError(f"params lack {'/'.join(path)} (for tensor {name})") from None
    shape = leaf.shape[1:] if layer is not None else leaf.shape
    entries.append(_Entry(name, path, layer, transpose, int(np.prod(shape)) * itemsize))

  def order(e: _Entry):
    m = re.match(r"model\.layers\.(\d+)\.", e.name)
    if m:
      return (1, int(m.group(1)))
    return ({"model.embed_tokens.weight": 0, "model.norm.weight": 2}.get(e.name, 3), 0)
  return sorted(entries, key=order)


def _tensors(entries: list[_Entry], params: Any, dtype: Any) -> Iterator[tuple[str, np.ndarray]]:
  """`(name, array)` for the entries, converting one parameter leaf to numpy at a time."""
  cache: dict[tuple[str, ...], np.ndarray] = {}
  for e in entries:
    leaf = _leaf(params, e.path)
    writer = _KIND_WRITERS.get(type(leaf))
    if writer is not None:
      yield from writer(leaf, e.layer, e.name, e.transpose).items()
      continue
    if e.path not in cache:
      cache.clear()  # keep one dense leaf on the host at a time
      dense = linear.densify(leaf, jnp.float32) if linear.is_weight_kind(leaf) else leaf
      cache[e.path] = np.asarray(dense, np.float32)
    w = cache[e.path] if e.layer is None else cache[e.path][e.layer]
    yield e.name, np.ascontiguousarray((w.T if e.transpose else w).astype(dtype))


def write_weights(directory: pathlib.Path, cfg: ModelConfig, params: Any, dtype: str,
                  max_shard_size: str | int) -> list[str]:
  """Writes the safetensors file(s) (and index when sharded); returns the file names."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  np_dtype = DTYPES[dtype]
  entries = _plan(cfg, params, np_dtype)
  limit = parse_size(max_shard_size)
  shards: list[list[_Entry]] = [[]]
  size = 0
  for e in entries:
    if shards[-1] and size + e.nbytes > limit:
      shards.append([])
      size = 0
    shards[-1].append(e)
    size += e.nbytes
  n = len(shards)
  names = ([SAFETENSORS_FILE] if n == 1 else
           [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
  weight_map: dict[str, str] = {}
  total = 0
  for file, shard in zip(names, shards):
    tensors = dict(_tensors(shard, params, np_dtype))
    save_file(tensors, str(directory / file), metadata={"format": "pt"})
    weight_map.update({k: file for k in tensors})
    total += sum(v.nbytes for v in tensors.values())
    del tensors
  if n > 1:
    (directory / INDEX_FILE).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
        indent=2) + "\n")
    names.append(INDEX_FILE)
  return names


def generation_config(cfg: ModelConfig, tokenizer: Any = None) -> dict[str, Any]:
  """A `generation_config.json` from the model's special tokens (greedy by default)."""
  out: dict[str, Any] = {"bos_token_id": cfg.bos_token_id, "eos_token_id": _eos(cfg.eos_token_ids)}
  pad = getattr(tokenizer, "pad_token_id", None)
  if pad is not None:
    out["pad_token_id"] = int(pad)
  return {k: v for k, v in out.items() if v is not None}


def save(directory: str | pathlib.Path, cfg: ModelConfig, params: Any, tokenizer: Any = None, *,
         dtype: str = "float32", max_shard_size: str | int = "5GB",
         generation: dict[str, Any] | None = None,
         quantization_config: dict[str, Any] | None = None) -> list[str]:
  """Writes a Hugging Face checkpoint directory.

  Args:
    directory: created if missing; must not hold a checkpoint already (write into a fresh
      directory and rename it into place for an atomic export, as `swiftjax.export` does).
    cfg: the model's config.
    params: parameter tree (`decoder` layout; weight kinds are densified unless a writer is
      registered for them).
    tokenizer: a transformers tokenizer, saved with `save_pretrained`; None writes none.
    dtype: `float32`, `bfloat16` or `float16` for the weights.
    max_shard_size: the largest safetensors file, e.g. `5GB`; larger models are sharded.
    generation: `generation_config.json` contents (default: from `cfg`'s special tokens).
    quantization_config: recorded in `config.json` for quantized weight kinds.

  Returns:
    The names of the files written.

  Raises:
    ConfigError: unknown dtype, a config the family cannot express, a bad `max_shard_size`.
  """
  if dtype not in DTYPES:
    raise errors.ConfigError(f"dtype {dtype!r} is not supported for export "
                             f"(supported: {', '.join(DTYPES)})")
  config = hf_config(cfg, dtype)
  parse_size(max_shard_size)
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if (directory / "config.json").exists():
    raise errors.ConfigError(f"{directory} already holds a config.json")
  if quantization_config:
    config["quantization_config"] = quantization_config
  files = write_weights(directory, cfg, params, dtype, max_shard_size)
  (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
  (directory / "generation_config.json").write_text(json.dumps(
      generation if generation is not None else generation_config(cfg, tokenizer),
      indent=2) + "\n")
  files += ["config.json", "generation_config.json"]
  if tokenizer is not None:
    written = tokenizer.save_pretrained(str(directory))
    files += [pathlib.Path(f).name for f in written if pathlib.Path(f).is_file()]
  return sorted(set(files))
