"""Load a Llama-architecture GGUF file (llama.cpp's format) into a swiftjax parameter tree.

Quantized tensors (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, ...) are dequantized with the `gguf` package.
Two layout facts from llama.cpp's converter matter here:
  * GGUF lists dimensions innermost-first; numpy views come out `[out, in]` like PyTorch.
  * `attn_q`/`attn_k` rows are permuted so that each head's two rotary halves are interleaved
    (llama.cpp rotates adjacent pairs). We undo that so the half-split RoPE of `decoder.py` applies.
"""

import dataclasses
import gc
import mmap
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import sharding
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

SUPPORTED_ARCHITECTURES = ("llama",)


def _field_value(field) -> Any:
  """Decodes a GGUFReader field into a Python scalar, string or list."""
  import gguf  # pylint: disable=g-import-not-at-top
  if not field.types:
    return None
  kind = field.types[0]
  if kind == gguf.GGUFValueType.ARRAY:
    sub = field.types[-1]
    if sub == gguf.GGUFValueType.STRING:
      return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
    return [field.parts[i].tolist()[0] for i in field.data]
  value = field.parts[field.data[0]]
  if kind == gguf.GGUFValueType.STRING:
    return bytes(value).decode("utf-8", "replace")
  return value.tolist()[0]


def _open(path: pathlib.Path):
  import gguf  # pylint: disable=g-import-not-at-top
  if not path.is_file():
    raise errors.CheckpointError(f"GGUF file {path} does not exist")
  try:
    return gguf.GGUFReader(str(path), "r")
  except Exception as e:  # gguf raises ValueError/struct.error/... on damaged files.
    raise errors.CheckpointError(
        f"{path} is not a readable GGUF file (truncated or corrupted?): {e}") from None


def config_from_metadata(meta: dict[str, Any], path: Any = "GGUF") -> ModelConfig:
  """Builds a ModelConfig from GGUF metadata (`{arch}.embedding_length`, ...).

  `vocab_size` and `tie_word_embeddings` are provisional here; `load` fixes them from the tensors.
  """
  arch = meta.get("general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise errors.ConfigError(f"{path}: GGUF architecture {arch!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")

  def get(key, default=None):
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise errors.CheckpointError(f"{path}: GGUF metadata lacks {arch}.{key}")
    return value

  heads = int(get("attention.head_count"))
  hidden = int(get("embedding_length"))
  eos = meta.get("tokenizer.ggml.eos_token_id")
  scaling = None
  if meta.get(f"{arch}.rope.scaling.type") == "linear":
    scaling = (("factor", float(meta[f"{arch}.rope.scaling.factor"])), ("rope_type", "linear"))
  return ModelConfig(
      model_type=arch,
      vocab_size=int(meta.get(f"{arch}.vocab_size") or 1),
      hidden_size=hidden,
      intermediate_size=int(get("feed_forward_length")),
      num_layers=int(get("block_count")),
      num_heads=heads,
      num_kv_heads=int(get("attention.head_count_kv", heads)),
      head_dim=int(meta.get(f"{arch}.rope.dimension_count") or hidden // heads),
      rope_theta=float(get("rope.freq_base", 10000.0)),
      rope_scaling=scaling,
      rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
      tie_word_embeddings=True,
      max_position_embeddings=int(get("context_length", 2048)),
      bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
      eos_token_ids=(int(eos),) if eos is not None else (),
  )


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverts llama.cpp's q/k row permutation: `w [n_heads*hd, in]` back to half-split RoPE rows."""
  rows = w.shape[0]
  # llama.cpp wrote rows as reshape(n_heads, 2, hd/2).swapaxes(1, 2); this is its inverse.
  return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


# GGUF per-layer tensor -> (our path under layers/, transpose to [in, out], rotary heads attr)
_LAYER_TENSORS = {
    "attn_norm": (("input_layernorm", "scale"), False, None),
    "ffn_norm": (("post_attention_layernorm", "scale"), False, None),
    "attn_q": (("self_attn", "q_proj", "kernel"), True, "num_heads"),
    "attn_k": (("self_attn", "k_proj", "kernel"), True, "num_kv_heads"),
    "attn_v": (("self_attn", "v_proj", "kernel"), True, None),
    "attn_output": (("self_attn", "o_proj", "kernel"), True, None),
    "ffn_gate": (("mlp", "gate_proj", "kernel"), True, None),
    "ffn_up": (("mlp", "up_proj", "kernel"), True, None),
    "ffn_down": (("mlp", "down_proj", "kernel"), True, None),
}


# Quantized tensors are dequantized this many float32 values at a time, each piece cast to the
# requested dtype in place: the gguf package's dequantizers hold float32 temporaries of their
# input's size (a whole 49152 x 576 embedding: 113 MB each; the chunks took ~25 MB off the
# peak of a bf16 SmolLM2 load).
_DEQUANT_CHUNK = 1 << 21


def _dequantize(tensor, path, dtype: Any = np.float32) -> np.ndarray:
  """A GGUF tensor as numpy `[out, in]` (numpy dimension order) in `dtype`."""
  import gguf  # pylint: disable=g-import-not-at-top
  expected = tuple(int(d) for d in reversed(tensor.shape))
  try:
    if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
      return np.asarray(tensor.data).astype(dtype, copy=False).reshape(expected)
    data = tensor.data                       # uint8 [rows, bytes per row] (blocks of a row)
    if data.ndim < 2 or data.size * 4 <= _DEQUANT_CHUNK:
      return gguf.quants.dequantize(data, tensor.tensor_type).astype(dtype).reshape(expected)
    data = data.reshape(-1, data.shape[-1])
    per_row = int(np.prod(expected)) // data.shape[0]
    out = np.empty((data.shape[0], per_row), dtype)
    step = max(1, _DEQUANT_CHUNK // per_row)
    for i in range(0, data.shape[0], step):
      out[i:i + step] = gguf.quants.dequantize(data[i:i + step], tensor.tensor_type)
    return out.reshape(expected)
  except NotImplementedError:
    raise errors.CheckpointError(
        f"{path}: tensor {tensor.name} uses GGML type {tensor.tensor_type.name}, which the "
        "installed gguf package cannot dequantize") from None


def _drop_file_pages(reader) -> None:
  """Releases the pages of the (read-only) file mapping read so far: they are read once, and
  would otherwise stay in the process's resident memory for the rest of the load."""
  mm = getattr(reader.data, "_mmap", None)
  if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
    try:
      mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):
      pass


def _config(reader, path: pathlib.Path) -> ModelConfig:
  meta = {k: _field_value(f) for k, f in reader.fields.items()
          if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
  cfg = config_from_metadata(meta, path)
  tensors = {t.name: t for t in reader.tensors}
  if "token_embd.weight" not in tensors:
    raise errors.CheckpointError(f"{path}: GGUF file lacks tensor 'token_embd.weight'")
  vocab = int(tensors["token_embd.weight"].shape[-1])
  return dataclasses.replace(cfg, vocab_size=vocab,
                             tie_word_embeddings="output.weight" not in tensors)


def read_config(path: str | pathlib.Path) -> ModelConfig:
  """The ModelConfig of a GGUF file (metadata plus the tensor table; no weights are read)."""
  path = pathlib.Path(path)
  return _config(_open(path), path)


def load(path: str | pathlib.Path, dtype: Any = jnp.float32,
         shardings: Any = None) -> tuple[ModelConfig, dict]:
  """Reads a GGUF file into `(config, params)`, dequantizing every tensor to `dtype`.

  Parameters are assembled one leaf at a time (all layers of one weight) and placed on devices
  (into `shardings`, a tree of `NamedSharding`, when given) before the next leaf is read.

  Raises:
    CheckpointError: missing/corrupted file, missing tensor (named), or a shape mismatch.
    ConfigError: unsupported architecture.
  """
  path = pathlib.Path(path)
  reader = _open(path)
  cfg = _config(reader, path)
  tensors = {t.name: t for t in reader.tensors}
  # The metadata is parsed into ~300k small numpy views (the tokenizer's vocabulary and merges:
  # ~160 MB for SmolLM2); the config has what the weights need, so they go before any weight is
  # read (the tokenizer is read from the file separately).
  reader.fields.clear()
  gc.collect()
  np_dtype = jnp.dtype(dtype)
  shapes = decoder.param_shapes(cfg, dtype)

  def read(name, want, heads=None, transpose=False):
    if name not in tensors:
      raise errors.CheckpointError(f"{path}: GGUF file lacks tensor {name!r}")
    w = _dequantize(tensors[name], path, np_dtype)
    if heads:
      w = unpermute_rotary(w, heads)
    if transpose:
      w = w.T
    if tuple(w.shape) != tuple(want):
      raise errors.CheckpointError(
          f"{path}: tensor {name} has shape {tuple(w.shape)}, expected {tuple(want)}")
    return w

  def place(p, buf):
    target = shardings
    if target is not None:
      for key in p:
        target = target[key]
    return sharding.put(buf, target)

  flat = {}
  for p, name, transpose in ((("embed_tokens", "embedding"), "token_embd.weight", False),
                             (("norm", "scale"), "output_norm.weight", False),
                             (("lm_head", "kernel"), "output.weight", True)):
    if p[0] == "lm_head" and cfg.tie_word_embeddings:
      continue
    want = shapes[p[0]][p[1]].shape
    flat[p] = place(p, read(name, want, transpose=transpose).astype(np_dtype))
  _drop_file_pages(reader)
  for gguf_name, (sub, transpose, heads_attr) in _LAYER_TENSORS.items():
    p = ("layers",) + sub
    leaf = shapes["layers"]
    for key in sub:
      leaf = leaf[key]
    buf = np.empty(leaf.shape, np_dtype)
    for i in range(cfg.num_layers):
      buf[i] = read(f"blk.{i}.{gguf_name}.weight", leaf.shape[1:],
                    getattr(cfg, heads_attr) if heads_attr else None, transpose)
    flat[p] = place(p, buf)
    del buf
    _drop_file_pages(reader)
  return cfg, decoder.nest(flat)
