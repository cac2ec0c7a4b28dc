"""Load a Llama-architecture GGUF file (llama.cpp's format) into a swiftjax parameter tree.

Quantized tensors (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, ...) are dequantized with the `gguf` package.
Two layout facts from llama.cpp's converter matter here:
  * GGUF lists dimensions innermost-first; numpy views come out `[out, in]` like PyTorch.
  * `attn_q`/`attn_k` rows are permuted so that each head's two rotary halves are interleaved
    (llama.cpp rotates adjacent pairs). We undo that so the half-split RoPE of `llama.py` applies.
"""

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
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


def read_metadata(path: str | pathlib.Path) -> dict[str, Any]:
  """All key/value metadata of a GGUF file, except the (large) tokenizer vocab arrays."""
  reader = _open(pathlib.Path(path))
  skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
          "tokenizer.ggml.merges")
  return {k: _field_value(f) for k, f in reader.fields.items()
          if not k.startswith("GGUF.") and k not in skip}


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


def _dequantize(tensor, path) -> np.ndarray:
  """A GGUF tensor as float32 numpy `[out, in]` (numpy dimension order)."""
  import gguf  # pylint: disable=g-import-not-at-top
  try:
    if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
      out = np.asarray(tensor.data, dtype=np.float32)
    else:
      out = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError:
    raise errors.CheckpointError(
        f"{path}: tensor {tensor.name} uses GGML type {tensor.tensor_type.name}, which the "
        "installed gguf package cannot dequantize") from None
  expected = tuple(int(d) for d in reversed(tensor.shape))
  return np.asarray(out, np.float32).reshape(expected)


def load(path: str | pathlib.Path, dtype: Any = jnp.float32) -> tuple[ModelConfig, dict]:
  """Reads a GGUF file into `(config, params)`, dequantizing every tensor to `dtype`.

  Layers are written one at a time into preallocated stacked host arrays of the target dtype,
  so peak host memory stays near one copy of the model plus one float32 tensor.

  Raises:
    CheckpointError: missing/corrupted file, missing tensor (named), or a shape mismatch.
    ConfigError: unsupported architecture.
  """
  path = pathlib.Path(path)
  reader = _open(path)
  meta = {k: _field_value(f) for k, f in reader.fields.items()
          if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
  cfg = config_from_metadata(meta, path)
  tensors = {t.name: t for t in reader.tensors}

  def need(name):
    if name not in tensors:
      raise errors.CheckpointError(f"{path}: GGUF file lacks tensor {name!r}")
    return _dequantize(tensors[name], path)

  embedding = need("token_embd.weight")
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(cfg, vocab_size=embedding.shape[0],
                            tie_word_embeddings="output.weight" not in tensors)
  np_dtype = jnp.dtype(dtype)

  def check(name, got, want):
    if tuple(got) != tuple(want):
      raise errors.CheckpointError(
          f"{path}: tensor {name} has shape {tuple(got)}, expected {tuple(want)}")

  from swiftjax.models import llama  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(lambda: llama.init(cfg, jax.random.key(0), dtype))
  check("token_embd.weight", embedding.shape, shapes["embed_tokens"]["embedding"].shape)
  layers: dict = {}
  for gguf_name, (sub, transpose, heads_attr) in _LAYER_TENSORS.items():
    leaf = shapes["layers"]
    for key in sub:
      leaf = leaf[key]
    stacked = np.empty(leaf.shape, np_dtype)
    for i in range(cfg.num_layers):
      name = f"blk.{i}.{gguf_name}.weight"
      w = need(name)
      if heads_attr:
        w = unpermute_rotary(w, getattr(cfg, heads_attr))
      if transpose:
        w = w.T
      check(name, w.shape, leaf.shape[1:])
      stacked[i] = w
    node = layers
    for key in sub[:-1]:
      node = node.setdefault(key, {})
    node[sub[-1]] = stacked
  params = {"embed_tokens": {"embedding": embedding.astype(np_dtype)}, "layers": layers,
            "norm": {"scale": need("output_norm.weight").astype(np_dtype)}}
  check("output_norm.weight", params["norm"]["scale"].shape, (cfg.hidden_size,))
  if not cfg.tie_word_embeddings:
    head = need("output.weight").T
    check("output.weight", head.shape, shapes["lm_head"]["kernel"].shape)
    params["lm_head"] = {"kernel": head.astype(np_dtype)}
  return cfg, jax.tree.map(jnp.asarray, params)
