"""Llama-family decoder as pure functions over a parameter pytree.

Covers Llama 2/3/3.x (including `llama3` RoPE scaling) and everything that shares its block:
RMSNorm -> grouped-query attention with rotary embeddings -> RMSNorm -> SwiGLU MLP. SmolLM2 is one.

Parameters are a nested dict. Layers are stacked on a leading `layers` axis and run with
`jax.lax.scan`, so compile time does not grow with depth (maxtext's `scan_layers`):

  embed_tokens/embedding            [V, D]
  layers/input_layernorm/scale      [L, D]
  layers/self_attn/q_proj/kernel    [L, D, H*hd]
  layers/self_attn/k_proj/kernel    [L, D, K*hd]
  layers/self_attn/v_proj/kernel    [L, D, K*hd]
  layers/self_attn/o_proj/kernel    [L, H*hd, D]
  layers/post_attention_layernorm/scale [L, D]
  layers/mlp/gate_proj/kernel       [L, D, F]
  layers/mlp/up_proj/kernel         [L, D, F]
  layers/mlp/down_proj/kernel       [L, F, D]
  norm/scale                        [D]
  lm_head/kernel                    [D, V]   (absent when embeddings are tied)

Kernels are `[in, out]` and go through `swiftjax.linear.linear`, so any registered weight kind
(LoRA, quantized, ...) can stand in for a dense kernel without this file knowing about it.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax.linear import linear
from swiftjax.models.config import ModelConfig

Params = dict[str, Any]
Cache = dict[str, jax.Array]

_PROJ = {
    ("self_attn", "q_proj"): ("embed", "q_heads"),
    ("self_attn", "k_proj"): ("embed", "kv_heads"),
    ("self_attn", "v_proj"): ("embed", "kv_heads"),
    ("self_attn", "o_proj"): ("q_heads", "embed"),
    ("mlp", "gate_proj"): ("embed", "mlp"),
    ("mlp", "up_proj"): ("embed", "mlp"),
    ("mlp", "down_proj"): ("mlp", "embed"),
}


def _proj_shape(cfg: ModelConfig, group: str, name: str) -> tuple[int, int]:
  d, f = cfg.hidden_size, cfg.intermediate_size
  q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
          "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}[name]


def param_axes(cfg: ModelConfig) -> Params:
  """Logical axis names of every parameter (same tree structure as `init`)."""
  layers: Params = {"input_layernorm": {"scale": ("layers", "norm")},
                    "post_attention_layernorm": {"scale": ("layers", "norm")},
                    "self_attn": {}, "mlp": {}}
  for (group, name), axes in _PROJ.items():
    layers[group][name] = {"kernel": ("layers",) + axes}
  axes_tree: Params = {"embed_tokens": {"embedding": ("vocab", "embed")}, "layers": layers,
                       "norm": {"scale": ("norm",)}}
  if not cfg.tie_word_embeddings:
    axes_tree["lm_head"] = {"kernel": ("embed", "vocab")}
  return axes_tree


def init(cfg: ModelConfig, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random parameters (normal, std 0.02, as Hugging Face initialises Llama); norms start at 1."""
  keys = iter(jax.random.split(rng, 16))
  std = 0.02

  def normal(shape):
    return (std * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

  L, D = cfg.num_layers, cfg.hidden_size
  layers: Params = {"input_layernorm": {"scale": jnp.ones((L, D), dtype)},
                    "post_attention_layernorm": {"scale": jnp.ones((L, D), dtype)},
                    "self_attn": {}, "mlp": {}}
  for group, name in _PROJ:
    layers[group][name] = {"kernel": normal((L,) + _proj_shape(cfg, group, name))}
  params: Params = {"embed_tokens": {"embedding": normal((cfg.vocab_size, D))},
                    "layers": layers, "norm": {"scale": jnp.ones((D,), dtype)}}
  if not cfg.tie_word_embeddings:
    params["lm_head"] = {"kernel": normal((D, cfg.vocab_size))}
  return params


def hf_tensor_names(cfg: ModelConfig) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Table from Hugging Face tensor names to `(param path, layer index or None, transpose)`.

  Hugging Face stores linear weights `[out, in]`; ours are `[in, out]`, hence `transpose`.
  """
  table: dict[str, tuple[tuple[str, ...], int | None, bool]] = {
      "model.embed_tokens.weight": (("embed_tokens", "embedding"), None, False),
      "model.norm.weight": (("norm", "scale"), None, False),
  }
  if not cfg.tie_word_embeddings:
    table["lm_head.weight"] = (("lm_head", "kernel"), None, True)
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    table[p + "input_layernorm.weight"] = (("layers", "input_layernorm", "scale"), i, False)
    table[p + "post_attention_layernorm.weight"] = (
        ("layers", "post_attention_layernorm", "scale"), i, False)
    for group, name in _PROJ:
      table[f"{p}{group}.{name}.weight"] = (("layers", group, name, "kernel"), i, True)
  return table


def rope_frequencies(cfg: ModelConfig) -> jax.Array:
  """Inverse frequencies `[head_dim // 2]` including Hugging Face's `linear`/`llama3` scaling."""
  hd = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  scaling = cfg.rope_scaling_dict
  if not scaling:
    return inv_freq
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return inv_freq
  if kind == "linear":
    return inv_freq / float(scaling["factor"])
  if kind == "llama3":
    # Llama 3.1: keep high frequencies, divide low frequencies by `factor`, blend in between.
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_ctx = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return jnp.where(medium, blended, scaled)
  raise errors.ConfigError(f"rope_scaling type {kind!r} is not supported "
                           "(supported: default, linear, llama3)")


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotates `x [B, T, N, hd]` by `positions [B, T]` (half-split layout, as Hugging Face)."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, hd/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """RMSNorm in float32, cast back before the scale (as Hugging Face Llama does)."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale.astype(x.dtype) * normed.astype(x.dtype)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = jnp.float32) -> Cache:
  """An empty KV cache.

  Returns:
    dict with `k`, `v` `[L, B, S, K, hd]`, `valid [B, S]` (slot holds a real token),
    `end` (int32 scalar, slots written so far) and `next_pos [B]` (position of the next token).
  """
  shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
          "valid": jnp.zeros((batch, max_len), bool), "end": jnp.zeros((), jnp.int32),
          "next_pos": jnp.zeros((batch,), jnp.int32)}


def _attention(q, k, v, allowed, cfg: ModelConfig):
  """q `[B, T, H, hd]`, k/v `[B, S, K, hd]`, allowed `[B, T, S]` -> `[B, T, H*hd]`."""
  B, T, H, hd = q.shape
  K = cfg.num_kv_heads
  q = q.reshape(B, T, K, H // K, hd)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
  scores = scores * (hd ** -0.5)
  scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(B, T, H * hd).astype(q.dtype)


def apply(params: Params, tokens: jax.Array, cfg: ModelConfig, *,
          mask: jax.Array | None = None, positions: jax.Array | None = None,
          cache: Cache | None = None, compute_dtype: Any = None,
          last_only: bool = False) -> tuple[jax.Array, Cache | None]:
  """Runs the decoder.

  Args:
    params: parameter tree from `init` or a loader.
    tokens: `[B, T]` int token ids.
    cfg: the model config.
    mask: `[B, T]` bool, False on padding tokens (left padding for batched generation).
    positions: `[B, T]` int positions for RoPE; by default counted over non-padding tokens
      (continuing from `cache["next_pos"]` when a cache is given).
    cache: KV cache from `init_cache`; the T new tokens are written at slots
      `[end, end + T)` and attend to every valid earlier slot.
    compute_dtype: dtype of activations and matmuls (default: the embedding's dtype).
    last_only: return logits for the last position only (`[B, 1, V]`), as generation needs.

  Returns:
    `(logits [B, T, V] float32, updated cache or None)`.
  """
  B, T = tokens.shape
  dtype = compute_dtype or params["embed_tokens"]["embedding"].dtype
  if mask is None:
    mask = jnp.ones((B, T), bool)
  if positions is None:
    start = cache["next_pos"][:, None] if cache is not None else 0
    positions = jnp.maximum(start + jnp.cumsum(mask, axis=1) - 1, 0)
  inv_freq = rope_frequencies(cfg)

  if cache is not None:
    end = cache["end"]
    valid = jax.lax.dynamic_update_slice(cache["valid"], mask, (0, end))
    q_slots = end + jnp.arange(T)
    k_slots = jnp.arange(valid.shape[1])
  else:
    valid = mask
    q_slots = k_slots = jnp.arange(T)
  allowed = valid[:, None, :] & (k_slots[None, None, :] <= q_slots[None, :, None])

  x = jnp.take(params["embed_tokens"]["embedding"], tokens, axis=0).astype(dtype)

  def block(x, layer):
    p, ck, cv = layer
    h = rms_norm(x, p["input_layernorm"]["scale"], cfg.rms_norm_eps)
    a = p["self_attn"]
    q = linear(h, a["q_proj"]["kernel"], dtype).reshape(B, T, cfg.num_heads, cfg.head_dim)
    k = linear(h, a["k_proj"]["kernel"], dtype).reshape(B, T, cfg.num_kv_heads, cfg.head_dim)
    v = linear(h, a["v_proj"]["kernel"], dtype).reshape(B, T, cfg.num_kv_heads, cfg.head_dim)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    if ck is not None:
      ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, end, 0, 0))
      cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, end, 0, 0))
      k_all, v_all = ck.astype(dtype), cv.astype(dtype)
    else:
      k_all, v_all = k, v
    x = x + linear(_attention(q, k_all, v_all, allowed, cfg), a["o_proj"]["kernel"], dtype)
    h = rms_norm(x, p["post_attention_layernorm"]["scale"], cfg.rms_norm_eps)
    m = p["mlp"]
    g = jax.nn.silu(linear(h, m["gate_proj"]["kernel"], dtype))
    x = x + linear(g * linear(h, m["up_proj"]["kernel"], dtype), m["down_proj"]["kernel"], dtype)
    return x, (ck, cv)

  layer_xs = (params["layers"],
              cache["k"] if cache is not None else None,
              cache["v"] if cache is not None else None)
  x, (new_k, new_v) = jax.lax.scan(block, x, layer_xs)

  if last_only:
    x = x[:, -1:]
  x = rms_norm(x, params["norm"]["scale"], cfg.rms_norm_eps)
  if cfg.tie_word_embeddings:
    logits = jnp.einsum("btd,vd->btv", x, params["embed_tokens"]["embedding"].astype(dtype),
                        preferred_element_type=jnp.float32)
  else:
    logits = linear(x, params["lm_head"]["kernel"], dtype).astype(jnp.float32)

  new_cache = None
  if cache is not None:
    new_cache = {"k": new_k, "v": new_v, "valid": valid, "end": end + T,
                 "next_pos": cache["next_pos"] + jnp.sum(mask, axis=1, dtype=jnp.int32)}
  return logits.astype(jnp.float32), new_cache
