"""Write a model as a llama.cpp GGUF file (F32, F16 or Q8_0) with `gguf.GGUFWriter`.

The file is what llama.cpp's `convert_hf_to_gguf.py` writes for the `llama` architecture:
  * metadata `llama.{context_length, embedding_length, block_count, feed_forward_length,
    attention.head_count[_kv], attention.layer_norm_rms_epsilon, rope.freq_base,
    rope.dimension_count, vocab_size}` and the tokenizer (`tokenizer.ggml.*`, chat template);
  * tensors `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
    ffn_gate, ffn_up, ffn_down}`, `output_norm`, `output` (absent when embeddings are tied),
    as `[out, in]` in numpy order (GGUF lists dimensions innermost-first);
  * `attn_q`/`attn_k` rows permuted per head so that each head's two rotary halves are
    interleaved, because llama.cpp rotates adjacent pairs while Hugging Face (and `decoder.py`)
    rotate the two halves (`gguf_loader.unpermute_rotary` is the inverse);
  * 1-D tensors (norms) stay F32; 2-D tensors take the requested type. Q8_0 stores blocks of
    32 values as one f16 scale `d = max|x| / 127` and 32 int8 `round(x / d)` (34 bytes per
    block), computed by `gguf.quants`; a tensor whose rows are not a multiple of 32 falls back
    to F16, as llama.cpp's converter does.

Tensors are converted and written one at a time (tensor infos first, then the data), so peak
memory stays near one tensor beyond the params themselves.
"""

import json
import pathlib
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import linear
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

ARCH = "llama"
QTYPES = ("f32", "f16", "q8_0")

# Our per-layer parameter -> llama.cpp tensor name (the table `gguf_loader` reads back).
_LAYER_TENSORS = (
    (("input_layernorm", "scale"), "attn_norm"),
    (("self_attn", "q_proj", "kernel"), "attn_q"),
    (("self_attn", "k_proj", "kernel"), "attn_k"),
    (("self_attn", "v_proj", "kernel"), "attn_v"),
    (("self_attn", "o_proj", "kernel"), "attn_output"),
    (("post_attention_layernorm", "scale"), "ffn_norm"),
    (("mlp", "gate_proj", "kernel"), "ffn_gate"),
    (("mlp", "up_proj", "kernel"), "ffn_up"),
    (("mlp", "down_proj", "kernel"), "ffn_down"),
)


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's q/k row permutation of `w [n_heads*hd, in]` (Hugging Face layout): within each
  head, row `j` of the first half and row `j` of the second half become rows `2j`, `2j+1`."""
  rows = w.shape[0]
  return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def unsupported_features(cfg: ModelConfig) -> list[str]:
  """What in `cfg` the `llama` GGUF architecture (as read by our loader) cannot express."""
  problems = []
  for flag, what in (("qkv_bias", "q/k/v biases"), ("o_bias", "an output-projection bias"),
                     ("mlp_bias", "MLP biases"), ("qk_norm", "q/k norms"),
                     ("sandwich_norms", "sandwich norms"), ("embed_scale", "embedding scaling"),
                     ("attn_logit_softcap", "attention soft-capping"),
                     ("final_logit_softcap", "logit soft-capping")):
    if getattr(cfg, flag):
      problems.append(what)
  if cfg.norm_offset:
    problems.append(f"(offset + w) norms (offset {cfg.norm_offset})")
  if cfg.activation != "silu":
    problems.append(f"activation {cfg.activation}")
  if any(cfg.windows):
    problems.append("sliding-window attention")
  if cfg.query_pre_attn_scalar not in (None, cfg.head_dim):
    problems.append(f"query_pre_attn_scalar {cfg.query_pre_attn_scalar}")
  scaling = cfg.rope_scaling_dict or {}
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind not in ("default", "linear"):
    problems.append(f"rope scaling {kind!r} (only linear is written)")
  return problems


# `general.*` keys that describe the file rather than the model: written fresh, never copied.
_OWN_GENERAL_KEYS = ("general.architecture", "general.file_type", "general.quantization_version",
                     "general.alignment", "general.type")


def _metadata_from_gguf(source: pathlib.Path) -> list[tuple[str, Any, Any, Any]]:
  """The `tokenizer.*` and descriptive `general.*` keys of a GGUF file, with their value types,
  to copy verbatim."""
  import gguf  # pylint: disable=g-import-not-at-top
  try:
    reader = gguf.GGUFReader(str(source), "r")
  except Exception as e:  # gguf raises ValueError/struct.error/... on damaged files.
    raise errors.CheckpointError(f"{source} is not a readable GGUF file: {e}") from None
  out = []
  for key, field in reader.fields.items():
    if (not key.startswith(("tokenizer.", "general.")) or key in _OWN_GENERAL_KEYS
        or not field.types):
      continue
    vtype = field.types[0]
    sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
    out.append((key, field.contents(), vtype, sub))
  return out


# Split regexes of well-known byte-level BPE pre-tokenizers, by llama.cpp's names for them
# (`tokenizer.ggml.pre`; llama.cpp and transformers pick the split from the name).
_PRE_TOKENIZER_SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",  # Llama 3
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def _pre_tokenizer_name(spec: dict[str, Any]) -> str:
  """llama.cpp's name for the pre-tokenizer of a `tokenizer.json` (`default` if unknown)."""
  pre = spec.get("pre_tokenizer") or {}
  if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
    return "gpt-2"
  for part in pre.get("pretokenizers") or ():
    if part.get("type") == "Split":
      regex = (part.get("pattern") or {}).get("Regex")
      if regex in _PRE_TOKENIZER_SPLITS:
        return _PRE_TOKENIZER_SPLITS[regex]
  return "default"


def _tokenizer_from_hf(tokenizer: Any, vocab_size: int) -> list[tuple[str, Any, Any, Any]]:
  """llama.cpp's `gpt2` (byte-level BPE) vocabulary from a transformers fast tokenizer."""
  import gguf  # pylint: disable=g-import-not-at-top
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise errors.ConfigError(f"GGUF export needs a fast (tokenizers) tokenizer, got "
                             f"{type(tokenizer).__name__}")
  spec = json.loads(backend.to_str())
  model = spec.get("model") or {}
  byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or "ByteLevel" in json.dumps(
      spec.get("decoder"))
  if model.get("type") != "BPE" or model.get("byte_fallback") or not byte_level:
    raise errors.ConfigError(
        f"GGUF export writes byte-level BPE vocabularies (llama.cpp's gpt2 tokenizer model); "
        f"this tokenizer is {model.get('type')} (byte_fallback={model.get('byte_fallback')}, "
        f"byte-level={byte_level}): export from a GGUF source, or convert with llama.cpp")
  T = gguf.TokenType
  tokens = [f"[PAD{i}]" for i in range(vocab_size)]
  types = [int(T.UNUSED)] * vocab_size
  added = tokenizer.added_tokens_decoder
  for token, i in tokenizer.get_vocab().items():
    if i >= vocab_size:
      raise errors.ConfigError(f"tokenizer token {token!r} has id {i}, beyond the model's "
                               f"{vocab_size} embedding rows")
    tokens[i] = token
    types[i] = int(T.NORMAL if i not in added else
                   T.CONTROL if added[i].special else T.USER_DEFINED)
  merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
  S, A, U, B = (gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32,
                gguf.GGUFValueType.BOOL)
  out = [("tokenizer.ggml.model", "gpt2", S, None),
         ("tokenizer.ggml.pre", _pre_tokenizer_name(spec), S, None),
         ("tokenizer.ggml.tokens", tokens, A, S),
         ("tokenizer.ggml.token_type", types, A, gguf.GGUFValueType.INT32)]
  if merges:
    out.append(("tokenizer.ggml.merges", merges, A, S))
  for key, attr in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unknown", "unk_token_id"),
                    ("padding", "pad_token_id")):
    value = getattr(tokenizer, attr, None)
    if value is not None:
      out.append((f"tokenizer.ggml.{key}_token_id", int(value), U, None))
  bos = getattr(tokenizer, "bos_token_id", None)
  plain = tokenizer("a", add_special_tokens=False)["input_ids"]
  full = tokenizer("a")["input_ids"]
  out.append(("tokenizer.ggml.add_bos_token",
              bos is not None and len(full) > len(plain) and full[0] == bos, B, None))
  out.append(("tokenizer.ggml.add_space_prefix", False, B, None))
  template = getattr(tokenizer, "chat_template", None)
  if isinstance(template, str) and template:
    out.append(("tokenizer.chat_template", template, S, None))
  return out


def _q8_0_nbytes(shape: tuple[int, ...]) -> int:
  return int(np.prod(shape)) // 32 * 34


def _write_hparams(w: Any, cfg: ModelConfig) -> None:
  """The `llama.*` hyper-parameters llama.cpp (and `gguf_loader`) read."""
  import gguf  # pylint: disable=g-import-not-at-top
  w.add_vocab_size(cfg.vocab_size)
  w.add_context_length(cfg.max_position_embeddings)
  w.add_embedding_length(cfg.hidden_size)
  w.add_block_count(cfg.num_layers)
  w.add_feed_forward_length(cfg.intermediate_size)
  w.add_head_count(cfg.num_heads)
  w.add_head_count_kv(cfg.num_kv_heads)
  w.add_rope_dimension_count(cfg.head_dim)
  if cfg.head_dim != cfg.hidden_size // cfg.num_heads:
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
  w.add_rope_freq_base(float(cfg.rope_theta))
  w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
  scaling = cfg.rope_scaling_dict or {}
  if scaling.get("rope_type", scaling.get("type")) == "linear":
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(float(scaling["factor"]))


_Spec = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]


def _tensor_specs(cfg: ModelConfig, params: Any) -> list[_Spec]:
  """`(gguf name, numpy shape ([out, in] or [n]), producer of the float32 array)` per tensor.

  Producers run in list order; the list is leaf-major (all layers of one weight together), so
  each parameter leaf is densified and copied to the host once, and only one is held at a time.
  """
  specs: list[_Spec] = []
  cache: dict[tuple[str, ...], np.ndarray] = {}
  shapes = decoder.param_shapes(cfg)

  def dense(p: tuple[str, ...]) -> np.ndarray:
    if p not in cache:
      cache.clear()
      leaf = params
      for key in p:
        leaf = leaf[key]
      leaf = linear.densify(leaf, jnp.float32) if linear.is_weight_kind(leaf) else leaf
      cache[p] = np.asarray(leaf, np.float32)
    return cache[p]

  def add(gguf_name, p, layer=None, transpose=False, heads=None):
    def produce():
      x = dense(p) if layer is None else dense(p)[layer]
      x = x.T if transpose else x
      return permute_rotary(x, heads) if heads else x
    leaf = shapes
    for key in p:
      leaf = leaf[key]
    shape = tuple(leaf.shape[1 if layer is not None else 0:])
    specs.append((gguf_name, shape[::-1] if transpose else shape, produce))

  add("token_embd.weight", ("embed_tokens", "embedding"))
  heads = {"attn_q": cfg.num_heads, "attn_k": cfg.num_kv_heads}
  for sub, gguf_name in _LAYER_TENSORS:
    for i in range(cfg.num_layers):
      add(f"blk.{i}.{gguf_name}.weight", ("layers",) + sub, i, sub[-1] == "kernel",
          heads.get(gguf_name))
  add("output_norm.weight", ("norm", "scale"))
  if not cfg.tie_word_embeddings:
    add("output.weight", ("lm_head", "kernel"), transpose=True)
  return specs


def write(path: str | pathlib.Path, cfg: ModelConfig, params: Any, tokenizer: Any = None, *,
          qtype: str = "f16", name: str | None = None,
          source_gguf: str | pathlib.Path | None = None) -> None:
  """Writes `params` as a llama-architecture GGUF file.

  Args:
    path: the `.gguf` file to create (its parent must exist).
    cfg: the model's config (a Llama-compatible one; see `unsupported_features`).
    params: parameter tree in `decoder` layout (weight kinds are densified).
    tokenizer: transformers tokenizer whose vocabulary is written (byte-level BPE), unless
      `source_gguf` is given.
    qtype: `f32`, `f16` or `q8_0` for the 2-D tensors.
    name: `general.name`.
    source_gguf: a GGUF file whose `tokenizer.*` and descriptive `general.*` metadata (name,
      license, ...) are copied verbatim (the model was loaded from it).

  Raises:
    ConfigError: an unknown qtype, a model the llama architecture cannot hold, or a tokenizer
      that cannot be written.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  if qtype not in QTYPES:
    raise errors.ConfigError(f"GGUF type {qtype!r} is not supported (supported: "
                             f"{', '.join(QTYPES)})")
  problems = unsupported_features(cfg)
  if problems:
    raise errors.ConfigError(f"GGUF export writes llama.cpp's llama architecture, which cannot "
                             f"hold this {cfg.model_type} model: {', '.join(problems)}")
  if source_gguf is not None:
    meta = _metadata_from_gguf(pathlib.Path(source_gguf))
  elif tokenizer is not None:
    meta = _tokenizer_from_hf(tokenizer, cfg.vocab_size)
  else:
    raise errors.ConfigError("GGUF export needs a tokenizer (llama.cpp reads the vocabulary "
                             "from the file)")
  ggml = gguf.GGMLQuantizationType
  file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
               "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]

  def target_type(shape):
    if len(shape) == 1 or qtype == "f32":
      return ggml.F32
    if qtype == "q8_0" and shape[-1] % 32 == 0:
      return ggml.Q8_0
    return ggml.F16

  w = gguf.GGUFWriter(str(path), ARCH)
  w.add_type("model")
  if name and not any(key == "general.name" for key, *_ in meta):
    w.add_name(name)
  w.add_file_type(int(file_type))
  w.add_quantization_version(gguf.GGML_QUANT_VERSION)
  _write_hparams(w, cfg)
  for key, value, vtype, sub in meta:
    w.add_key_value(key, value, vtype, sub)
  specs = _tensor_specs(cfg, params)
  # Tensor infos first (sizes are known from shapes), then the data one tensor at a time.
  for gguf_name, shape, _ in specs:
    t = target_type(shape)
    if t == ggml.Q8_0:
      w.add_tensor_info(gguf_name, (*shape[:-1], shape[-1] // 32 * 34), np.dtype(np.uint8),
                        _q8_0_nbytes(shape), raw_dtype=t)
    else:
      dt = np.dtype(np.float32 if t == ggml.F32 else np.float16)
      w.add_tensor_info(gguf_name, shape, dt, int(np.prod(shape)) * dt.itemsize)
  try:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _, shape, produce in specs:
      x, t = produce(), target_type(shape)
      if t == ggml.Q8_0:
        data = gguf.quants.quantize(np.ascontiguousarray(x, np.float32), t)
      else:
        data = np.ascontiguousarray(x, np.float32 if t == ggml.F32 else np.float16)
      w.write_tensor_data(data)
  finally:
    w.close()
