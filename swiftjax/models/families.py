"""The supported Hugging Face `model_type`s and how each one's `config.json` maps to ModelConfig.

All of them run on `decoder.py`: the families differ only in switches of the same block.

| model_type | what differs from Llama                                                      |
|------------|------------------------------------------------------------------------------|
| llama      | (the base: RoPE, GQA, SwiGLU, RMSNorm; optional llama3 RoPE scaling)         |
| mistral    | sliding-window attention                                                     |
| qwen2      | bias on q/k/v (sliding window on layers >= max_window_layers if enabled)     |
| qwen3      | RMSNorm on each q and k head                                                 |
| gemma2     | (1+w) norms, sqrt(D) embedding scale, GeGLU, logit soft-capping, alternating |
|            | local/global attention, norms before and after attention and MLP             |
"""

from typing import Any, Callable

from swiftjax import errors
from swiftjax.models.config import ModelConfig


def _layer_windows(d: dict[str, Any], n_layers: int, sliding: Callable[[int], bool]):
  """Per-layer windows from `layer_types` (transformers >= 5) or the family's own rule."""
  window = d.get("sliding_window")
  if not window:
    return None
  types = d.get("layer_types")
  if types:
    if len(types) != n_layers:
      raise errors.ConfigError(f"layer_types has {len(types)} entries for {n_layers} layers")
    flags = [t == "sliding_attention" for t in types]
  else:
    flags = [sliding(i) for i in range(n_layers)]
  return tuple(int(window) if f else 0 for f in flags) if any(flags) else None


def _llama(d, kw):
  bias = bool(d.get("attention_bias", False))
  return dict(kw, qkv_bias=bias, o_bias=bias, mlp_bias=bool(d.get("mlp_bias", False)))


def _mistral(d, kw):
  return dict(kw, layer_windows=_layer_windows(d, kw["num_layers"], lambda i: True))


def _qwen_windows(d, kw):
  if not d.get("use_sliding_window", False) and not d.get("layer_types"):
    return None
  start = int(d.get("max_window_layers", kw["num_layers"]))
  return _layer_windows(d, kw["num_layers"], lambda i: i >= start)


def _qwen2(d, kw):
  return dict(kw, qkv_bias=True, layer_windows=_qwen_windows(d, kw))


def _qwen3(d, kw):
  return dict(kw, qk_norm=True, qkv_bias=bool(d.get("attention_bias", False)),
              o_bias=bool(d.get("attention_bias", False)),
              layer_windows=_qwen_windows(d, kw))


def _gemma2(d, kw):
  act = d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh"
  if act not in ("gelu_pytorch_tanh", "gelu_tanh", "gelu"):
    raise errors.ConfigError(f"gemma2 activation {act!r} is not supported")
  return dict(kw, norm_offset=1.0, embed_scale=True, activation="gelu_tanh",
              tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
              attn_logit_softcap=d.get("attn_logit_softcapping"),
              final_logit_softcap=d.get("final_logit_softcapping"),
              query_pre_attn_scalar=d.get("query_pre_attn_scalar"),
              sandwich_norms=True,
              # Gemma 2 alternates: even layers local (sliding), odd layers global.
              layer_windows=_layer_windows(d, kw["num_layers"], lambda i: (i + 1) % 2 == 1))


FAMILIES: dict[str, Callable[[dict, dict], dict]] = {
    "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma2,
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def check_supported(model_type: Any, where: Any = "config.json") -> None:
  if model_type not in FAMILIES:
    raise errors.ConfigError(f"{where}: model_type {model_type!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")


def config_from_hf(d: dict[str, Any]) -> ModelConfig:
  """ModelConfig from a Hugging Face `config.json` dictionary of a supported family."""
  model_type = d.get("model_type")
  check_supported(model_type)
  return ModelConfig(**FAMILIES[model_type](d, ModelConfig.base_kwargs_from_hf_dict(d)))
