"""Decoder-only transformer as pure functions over a parameter pytree.

One block serves every supported family (Llama 2/3/3.x, Mistral, Qwen2/2.5, Qwen3, Gemma 2);
`ModelConfig` switches say what differs (see `families.py`). The block is
  x += [post_norm](attn(norm(x)))         attn: GQA, RoPE, optional q/k norm, bias, window,
  x += [post_norm](mlp([pre_norm](x)))    mlp:  act(gate(x)) * up(x) -> down (SwiGLU / GeGLU)

Parameters are a nested dict; layers are stacked on a leading `layers` axis and run with
`jax.lax.scan`, so compile time does not grow with depth (maxtext's `scan_layers`):

  embed_tokens/embedding                 [V, D]
  layers/input_layernorm/scale           [L, D]
  layers/self_attn/q_proj/kernel         [L, D, H*hd]     (+ bias [L, H*hd] when qkv_bias)
  layers/self_attn/k_proj/kernel         [L, D, K*hd]     (+ bias)
  layers/self_attn/v_proj/kernel         [L, D, K*hd]     (+ bias)
  layers/self_attn/o_proj/kernel         [L, H*hd, D]     (+ bias [L, D] when o_bias)
  layers/self_attn/{q,k}_norm/scale      [L, hd]          (qk_norm)
  layers/post_attention_layernorm/scale  [L, D]
  layers/pre_feedforward_layernorm/scale [L, D]           (sandwich_norms)
  layers/post_feedforward_layernorm/scale [L, D]          (sandwich_norms)
  layers/mlp/{gate,up}_proj/kernel       [L, D, F]        (+ bias when mlp_bias)
  layers/mlp/down_proj/kernel            [L, F, D]
  norm/scale                             [D]
  lm_head/kernel                         [D, V]           (absent when embeddings are tied)

Kernels are `[in, out]` and go through `swiftjax.linear.linear`, so any registered weight kind
(LoRA, quantized, ...) can stand in for a dense kernel without this file knowing about it.
Without sandwich norms `post_attention_layernorm` is the pre-MLP norm (Hugging Face's naming).

`apply` runs the decoder (training, prefill, cached decode); `apply_with_prefill` runs one cached
step together with the prefill of a packed block of new prompts (continuous-batching servers).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.linear import embedding_lookup
from swiftjax.linear import has_layer_view
from swiftjax.linear import layer_view
from swiftjax.linear import linear
from swiftjax.linear import transpose
from swiftjax.models.config import ModelConfig

Params = dict[str, Any]
Cache = dict[str, jax.Array]
# A parameter table: path -> (shape, logical axes, init kind: a float std, "normal", "ones" or
# "zeros"). `axes_from_spec`, `shapes_from_spec` and `init_from_spec` turn one into trees.
Spec = dict[tuple[str, ...], tuple[tuple[int, ...], tuple[str | None, ...], float | str]]

_PROJ = {
    ("self_attn", "q_proj"): ("embed", "q_heads"),
    ("self_attn", "k_proj"): ("embed", "kv_heads"),
    ("self_attn", "v_proj"): ("embed", "kv_heads"),
    ("self_attn", "o_proj"): ("q_heads", "embed"),
    ("mlp", "gate_proj"): ("embed", "mlp"),
    ("mlp", "up_proj"): ("embed", "mlp"),
    ("mlp", "down_proj"): ("mlp", "embed"),
}


def _proj_shape(cfg: ModelConfig, name: str) -> tuple[int, int]:
  d, f = cfg.hidden_size, cfg.intermediate_size
  q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
          "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}[name]


def _has_bias(cfg: ModelConfig, group: str, name: str) -> bool:
  if group == "mlp":
    return cfg.mlp_bias
  return cfg.o_bias if name == "o_proj" else cfg.qkv_bias


def _layer_norm_names(cfg: ModelConfig) -> tuple[str, ...]:
  names = ("input_layernorm", "post_attention_layernorm")
  if cfg.sandwich_norms:
    names += ("pre_feedforward_layernorm", "post_feedforward_layernorm")
  return names


def _spec(cfg: ModelConfig) -> Spec:
  """Every parameter: path -> (shape, logical axes, init kind in {normal, zeros, ones})."""
  L, D, V = cfg.num_layers, cfg.hidden_size, cfg.vocab_size
  norm_init = "zeros" if cfg.norm_offset else "ones"
  spec = {("embed_tokens", "embedding"): ((V, D), ("vocab", "embed"), "normal"),
          ("norm", "scale"): ((D,), ("norm",), norm_init)}
  for n in _layer_norm_names(cfg):
    spec[("layers", n, "scale")] = ((L, D), ("layers", "norm"), norm_init)
  for (group, name), axes in _PROJ.items():
    shape = _proj_shape(cfg, name)
    spec[("layers", group, name, "kernel")] = ((L,) + shape, ("layers",) + axes, "normal")
    if _has_bias(cfg, group, name):
      spec[("layers", group, name, "bias")] = ((L, shape[1]), ("layers", axes[1]), "zeros")
  if cfg.qk_norm:
    for n in ("q_norm", "k_norm"):
      spec[("layers", "self_attn", n, "scale")] = ((L, cfg.head_dim), ("layers", "head_dim"),
                                                   norm_init)
  if not cfg.tie_word_embeddings:
    spec[("lm_head", "kernel")] = ((D, V), ("embed", "vocab"), "normal")
  return spec


def nest(flat: dict[tuple[str, ...], Any]) -> Params:
  """`{("a", "b"): x}` -> `{"a": {"b": x}}`."""
  tree: Params = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def axes_from_spec(spec: Spec) -> Params:
  """The nested logical axis names of a spec table's parameters."""
  return nest({path: axes for path, (_, axes, _) in spec.items()})


def shapes_from_spec(spec: Spec, dtype: Any = jnp.float32) -> Params:
  """The nested `jax.ShapeDtypeStruct` of a spec table's parameters, without allocating."""
  return nest({path: jax.ShapeDtypeStruct(shape, dtype) for path, (shape, _, _) in spec.items()})


def init_from_spec(spec: Spec, keys: Any, dtype: Any = jnp.float32) -> Params:
  """Random parameters of a spec table, nested.

  An entry's init kind is a float (the std of a normal draw), "normal" (std 0.02, as Hugging
  Face initialises these models), "ones" or "zeros". Draws are made in float32 and cast to
  `dtype`, so a key gives the same values whatever the dtype's precision.

  Args:
    spec: path -> `(shape, logical axes, init kind)`.
    keys: one PRNG key per entry, in the spec's order (e.g. `jax.random.split(rng, len(spec))`);
      an entry that is not drawn still uses up its key, so a spec's keys do not shift.
    dtype: parameter dtype.

  Raises:
    ValueError: a key count other than `len(spec)`, or an unknown init kind.
  """
  if len(keys) != len(spec):
    raise ValueError(f"{len(keys)} keys for a spec of {len(spec)} parameters")
  flat = {}
  for key, (path, (shape, _, kind)) in zip(keys, spec.items()):
    if kind == "ones" or kind == "zeros":
      flat[path] = (jnp.ones if kind == "ones" else jnp.zeros)(shape, dtype)
    elif kind == "normal" or isinstance(kind, float):
      std = 0.02 if kind == "normal" else kind
      flat[path] = (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
    else:
      raise ValueError(f"{'/'.join(path)}: unknown init kind {kind!r}")
  return nest(flat)


def param_axes(cfg: ModelConfig) -> Params:
  """Logical axis names of every parameter (same tree structure as `init`)."""
  return axes_from_spec(_spec(cfg))


def param_shapes(cfg: ModelConfig, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter, without allocating anything."""
  return shapes_from_spec(_spec(cfg), dtype)


def init(cfg: ModelConfig, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random parameters (normal, std 0.02, as Hugging Face initialises these models); norm
  scales start at the identity and biases at zero."""
  spec = _spec(cfg)
  return init_from_spec(spec, jax.random.split(rng, len(spec)), dtype)


def hf_tensor_names(cfg: ModelConfig) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Table from Hugging Face tensor names to `(param path, layer index or None, transpose)`.

  Hugging Face stores linear weights `[out, in]`; ours are `[in, out]`, hence `transpose`.
  """
  table: dict[str, tuple[tuple[str, ...], int | None, bool]] = {}
  for path in _spec(cfg):
    if path[0] != "layers":
      hf = {("embed_tokens", "embedding"): "model.embed_tokens.weight",
            ("norm", "scale"): "model.norm.weight",
            ("lm_head", "kernel"): "lm_head.weight"}[path]
      table[hf] = (path, None, path[-1] == "kernel")
      continue
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
    module = ".".join(path[1:-1])
    for i in range(cfg.num_layers):
      table[f"model.layers.{i}.{module}.{leaf}"] = (path, i, path[-1] == "kernel")
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


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array,
               mrope_section: tuple[int, ...] | None = None) -> jax.Array:
  """Rotates `x [B, T, N, hd]` by `positions [B, T]` (half-split layout, as Hugging Face).

  Multimodal RoPE (Qwen2-VL): with `positions [3, B, T]` (temporal, height, width) the first
  `mrope_section[0]` frequencies turn with the temporal position, the next `mrope_section[1]`
  with the height and the rest with the width.
  """
  if positions.ndim == 3:
    if not mrope_section:
      raise ValueError("positions of shape [3, B, T] need a config with mrope_section")
    axis = np.repeat(np.arange(len(mrope_section)) % 3, mrope_section)  # [hd/2]
    per_freq = jnp.moveaxis(positions[axis], 0, -1)  # [B, T, hd/2]
    angles = per_freq.astype(jnp.float32) * inv_freq
  else:
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, hd/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, cfg: ModelConfig) -> jax.Array:
  """RMSNorm in float32. Llama-style casts back before the scale; Gemma-style (`norm_offset`)
  multiplies by `1 + w` in float32 and casts last, as each Hugging Face family does."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.rms_norm_eps)
  if cfg.norm_offset:
    return (normed * (cfg.norm_offset + scale.astype(jnp.float32))).astype(x.dtype)
  return scale.astype(x.dtype) * normed.astype(x.dtype)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = jnp.float32, *,
               per_layer: bool = False) -> Cache:
  """An empty KV cache.

  Args:
    cfg: the model config.
    batch: rows B.
    max_len: slots S per row.
    dtype: dtype of the keys and values.
    per_layer: one buffer per layer (tuples of L arrays without the leading `L`) instead of
      one stacked array each for keys and values; for unstacked layers (`unstack_layers`),
      where each layer then reads and updates its own buffer (slicing a layer out of the
      stacked cache is a copy on XLA:CPU). `cache_uses_layers(params)` says which one `params` want.

  Returns:
    dict with `k` and `v` (below), `valid [B, S]` (slot holds a real token), `end` (int32
    scalar, slots written so far) and `next_pos [B]` (position of the next token). Keys and
    values are laid out as the attention products read them, so no step copies the cache
    (with `[B, S, K, hd]` for both, every layer's whole cache was transposed on every decode
    step), and the layout depends on how the layers run (`kv_slot_axis` gives the slot axis):
    - stacked, `k [L, B, K, S, hd]` and `v [L, B, K, hd, S]`: for the layer scan, where both
      products are dots contracting both operands' last axis (a `[B, K, S, hd]` value cache
      sends p.v to a dot 4x slower on XLA:CPU);
    - per layer, tuples of `k [B, K, hd, S]` and `v [B, K, S, hd]`: for unstacked layers,
      where a decode step's two products on a CPU are sums over the cache's non-minor axis,
      vectorised along its minor one (`_attention`), and a prefill's are ordinary
      `[T, hd] x [hd, S]` and `[T, S] x [S, hd]` matmuls. Inside the scan those sums ran 5x
      slower than the dots, hence the two layouts.
  """
  if per_layer:
    k_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)
    v_shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    k = tuple(jnp.zeros(k_shape, dtype) for _ in range(cfg.num_layers))
    v = tuple(jnp.zeros(v_shape, dtype) for _ in range(cfg.num_layers))
  else:
    k_shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    v_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)
    k = jnp.zeros((cfg.num_layers,) + k_shape, dtype)
    v = jnp.zeros((cfg.num_layers,) + v_shape, dtype)
  return {"k": k, "v": v, "valid": jnp.zeros((batch, max_len), bool),
          "end": jnp.zeros((), jnp.int32), "next_pos": jnp.zeros((batch,), jnp.int32)}


def kv_slot_axis(cache: Cache) -> dict[str, int]:
  """The slot (column) axis of `cache["k"]` and `cache["v"]`, counted from the end (so it
  holds for one layer's array too): `{"k": -1, "v": -2}` for a per-layer cache, `{"k": -2,
  "v": -1}` for a stacked one (`init_cache`)."""
  return {"k": -1, "v": -2} if isinstance(cache["k"], (tuple, list)) else {"k": -2, "v": -1}


def cache_uses_layers(params: Params) -> bool:
  """Whether `params` (a decoder's) have unstacked layers, so their cache is best per layer
  (`init_cache(..., per_layer=True)`)."""
  return isinstance(params.get("layers") if isinstance(params, dict) else None, (tuple, list))


def cache_axes(cache: Cache | None = None) -> dict[str, Any]:
  """Logical axes of the KV cache entries (for `swiftjax.sharding`); pass a per-layer
  `cache` to get per-layer axes for its `k`/`v` tuples."""
  k = ("cache_batch", "cache_kv_heads", "cache_length", "head_dim")
  v = ("cache_batch", "cache_kv_heads", "head_dim", "cache_length")
  if cache is not None and isinstance(cache["k"], (tuple, list)):
    k, v = v, k  # per layer: keys [B, K, hd, S], values [B, K, S, hd] (`init_cache`)
    k_axes, v_axes = tuple(k for _ in cache["k"]), tuple(v for _ in cache["v"])
  else:
    k_axes, v_axes = ("layers",) + k, ("layers",) + v
  return {"k": k_axes, "v": v_axes, "valid": ("cache_batch", "cache_length"), "end": (),
          "next_pos": ("cache_batch",)}


def _softcap(x: jax.Array, cap: float | None) -> jax.Array:
  return x if not cap else cap * jnp.tanh(x / cap)


def _attention(q, k, v, allowed, cfg: ModelConfig, slots_last: bool = False):
  """q `[B, T, H, hd]`, k `[B, K, S, hd]`, v `[B, K, hd, S]` (`slots_last`: k `[B, K, hd, S]`,
  v `[B, K, S, hd]`, the per-layer cache's layout), allowed `[B, T, S]` (or `[B, K, G, T, S]`
  per head) -> `[B, T, H*hd]`."""
  B, T, H, hd = q.shape
  K = cfg.num_kv_heads
  q = q.reshape(B, T, K, H // K, hd)
  # One query per row on a CPU (a decode step): multiply-and-sum loop fusions over the
  # cache's non-minor axis (hd for q.k, S for p.v) instead of dots. As dots each (row, KV
  # head) is a product with only G = H / K query columns (3 for SmolLM2), which XLA:CPU's dot
  # library runs far below the cache's read bandwidth; the sums, vectorised along the minor
  # axis, take 0.6x the time (16 rows x 256 slots x 30 layers: 9.1 vs 15.6 ms; each product
  # reads the cache once either way).
  # Inside the layer scan (the stacked cache) such sums ran 5x slower than the dots.
  rowwise = slots_last and T == 1 and jax.default_backend() == "cpu"
  if rowwise:
    qf = q.astype(jnp.float32).transpose(0, 2, 3, 1, 4)[..., None]  # [B, K, G, 1, hd, 1]
    scores = jnp.sum(qf * k.astype(jnp.float32)[:, :, None, None], axis=-2)
  else:
    scores = jnp.einsum("btkgd,bkds->bkgts" if slots_last else "btkgd,bksd->bkgts", q, k,
                        preferred_element_type=jnp.float32)
  scores = _softcap(scores * (cfg.query_pre_attn_scalar or hd) ** -0.5, cfg.attn_logit_softcap)
  if allowed.ndim == 3:
    allowed = allowed[:, None, None]
  scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  if rowwise:
    out = jnp.sum(probs.astype(jnp.float32)[..., None] * v.astype(jnp.float32)[:, :, None, None],
                  axis=-2).transpose(0, 3, 1, 2, 4)  # [B, 1, K, G, hd]
  else:
    out = jnp.einsum("bkgts,bksd->btkgd" if slots_last else "bkgts,bkds->btkgd", probs, v,
                     preferred_element_type=jnp.float32)
  return out.reshape(B, T, H * hd).astype(q.dtype)


def _proj(x, p, dtype):
  y = linear(x, p["kernel"], dtype)
  return y + p["bias"].astype(dtype) if "bias" in p else y


def _remat(block, policy: str):
  """The scanned layer `block` under `ModelConfig.remat`'s checkpoint policy.

  Under autodiff a scan keeps every layer's saved intermediates stacked `[L, ...]` for the
  backward pass; `jax.checkpoint` keeps only what the policy saves and recomputes the rest
  from the layer's input. `prevent_cse=False`: the guard that stops XLA from merging the
  recomputation back into the forward pass is unneeded inside a scan and can cost speed
  (`jax.checkpoint`'s docs).
  """
  if policy == "none":
    return block
  saveable = {"full": jax.checkpoint_policies.nothing_saveable,
              "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[policy]
  return jax.checkpoint(block, policy=saveable, prevent_cse=False)


def unstack_layers(params: Params, *, donate: bool = False) -> Params:
  """`params` with `layers` as a tuple of L per-layer trees instead of arrays stacked `[L, ...]`.

  For inference. Inside the layer scan each layer's weights are a slice of the stacked
  arrays, and XLA:CPU materialises every slice as a copy before the matmul reads it, so a
  decode step moves the weights three times instead of once (SmolLM2-135M on 2 CPU cores:
  the copies were 30 ms of a 62 ms batch-8 step). Given unstacked layers, `apply` traces one
  block per layer over that layer's own buffers (compile time grows with depth, so training
  keeps the scan). Float weight kinds (LoRA, DoRA, ...) are split like dense kernels;
  params holding integer-stored kinds (int8, int4, NF4, packed bf16) are returned stacked.

  Args:
    params: parameters whose `layers` leaves are stacked on a leading `[L]` axis (already
      unstacked params, and those with integer-stored kinds, are returned as they are).
    donate: delete each stacked array as soon as it is split, so the peak is the weights
      plus one array rather than twice the weights; `params` is unusable afterwards.

  Returns:
    The same tree with `layers` a tuple of L trees (leaves `[...]` without the `L` axis).
  """
  layers = params["layers"]
  if isinstance(layers, (tuple, list)):
    return params
  leaves, treedef = jax.tree.flatten(layers)
  if not all(hasattr(leaf, "shape") and jnp.issubdtype(leaf.dtype, jnp.floating)
             for leaf in leaves):
    # Kinds stored as integers (int8, int4, NF4, packed bf16 bits) widen their weights before
    # the matmul. Inside the scan that temporary is one layer's, reused every iteration;
    # unrolled, XLA:CPU gives every layer its own and maps fresh pages for all of them on
    # every call (SmolLM2 int8 decode: 26k page faults and 6 tok/s instead of 42). They stay
    # stacked.
    return params
  n = leaves[0].shape[0] if leaves else 0
  per_layer: list[list[Any]] = [[] for _ in range(n)]
  for leaf in leaves:
    parts = [leaf[i] for i in range(n)]
    if donate and isinstance(leaf, jax.Array):
      jax.block_until_ready(parts)
      leaf.delete()
    for i, part in enumerate(parts):
      per_layer[i].append(part)
  return {**params, "layers": tuple(jax.tree.unflatten(treedef, ls) for ls in per_layer)}


def stack_layers(params: Params) -> Params:
  """The inverse of `unstack_layers` (stacked params are returned as they are)."""
  layers = params["layers"]
  if not isinstance(layers, (tuple, list)):
    return params
  return {**params, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def embed(params: Params, tokens: jax.Array) -> jax.Array:
  """Token embeddings `[B, T, D]` (before any family-specific scaling, as HF's inputs_embeds)."""
  return embedding_lookup(params["embed_tokens"]["embedding"], tokens)


def apply(params: Params, tokens: jax.Array | None, cfg: ModelConfig, *,
          mask: jax.Array | None = None, positions: jax.Array | None = None,
          cache: Cache | None = None, compute_dtype: Any = None,
          last_only: bool = False, embeds: jax.Array | None = None,
          s2_group_size: int | None = None, residual_hook: Any = None,
          hook_params: Any = None, segment_ids: jax.Array | None = None
          ) -> tuple[jax.Array, Cache | None]:
  """Runs the decoder.

  Args:
    params: parameter tree from `init` or a loader.
    tokens: `[B, T]` int token ids.
    cfg: the model config.
    mask: `[B, T]` bool, False on padding tokens (left padding for batched generation).
    positions: `[B, T]` int positions for RoPE; by default counted over non-padding tokens
      (continuing from `cache["next_pos"]` when a cache is given). `[3, B, T]` (temporal,
      height, width) for multimodal RoPE when `cfg.mrope_section` is set.
    cache: KV cache from `init_cache`; the T new tokens are written at slots
      `[end, end + T)` and attend to every valid earlier slot.
    compute_dtype: dtype of activations and matmuls (default: the embedding's dtype).
    last_only: return logits for the last position only (`[B, 1, V]`), as generation needs.
    embeds: `[B, T, D]` input embeddings used instead of `tokens` (Hugging Face's
      `inputs_embeds`: soft prompts, NEFTune noise, image features); pass `tokens=None`.
    s2_group_size: LongLoRA's shifted sparse attention (training only, no cache): tokens
      attend within groups of this size; the second half of the heads uses groups shifted by
      half a group, so information flows between neighbouring groups. Unlike the reference
      implementation, the shift does not wrap around, so no token sees its future.
    segment_ids: `[B, T]` int for packed rows (0 = padding): tokens attend only within their
      segment. Pass per-segment `positions` too (see `swiftjax.data.packing`). No cache.
    residual_hook: `hook(hook_params_l, x [B, T, D], layer) -> x`, applied to the residual
      stream after every block (representation interventions such as ReFT); `hook_params`
      is stacked over layers and sliced like the layer params.

  Returns:
    `(logits [B, T, V] float32, updated cache or None)`.
  """
  logits, new_cache, _ = _forward(
      params, tokens, cfg, mask=mask, positions=positions, cache=cache,
      compute_dtype=compute_dtype, last_only=last_only, embeds=embeds,
      s2_group_size=s2_group_size, residual_hook=residual_hook, hook_params=hook_params,
      segment_ids=segment_ids)
  return logits, new_cache


def apply_with_prefill(params: Params, tokens: jax.Array, cfg: ModelConfig, cache: Cache, *,
                       mask: jax.Array, prefill_tokens: jax.Array,
                       prefill_segments: jax.Array, prefill_positions: jax.Array,
                       prefill_last: jax.Array, compute_dtype: Any = None
                       ) -> tuple[jax.Array, Cache, jax.Array, Cache]:
  """One cached step for every row plus the prefill of a packed block of new prompts, in one
  pass over the weights (prefill "piggybacked" on decode, as Sarathi-Serve and vLLM's chunked
  prefill do): the projections and MLPs run on the `B*T + W` tokens together, so a few-row
  decode step and a short prompt share each weight read instead of paying for one each.

  The decode part is exactly `apply(params, tokens, cfg, mask=mask, cache=cache,
  last_only=True)`. The prefill part is a packed row (`swiftjax.data.packing`'s layout):
  prompt p occupies the tokens where `prefill_segments == p` (1, 2, ...; 0 is padding),
  attends causally within its own segment only and never to the cache; its keys and values
  come back as a one-row cache of W columns for the caller to copy into a cache row.

  Args:
    params, cfg, compute_dtype: as `apply`.
    tokens: `[B, T]` the decode rows' new tokens; `mask` `[B, T]` False on rows that are idle.
    cache: the decode rows' KV cache (`init_cache`), updated as by `apply`.
    prefill_tokens, prefill_segments, prefill_positions: `[1, W]` token ids, segment ids and
      RoPE positions (0, 1, ... within each segment).
    prefill_last: `[P]` int, the column of each segment's last token (P static; repeat a
      column for unused entries).

  Returns:
    `(logits [B, 1, V], cache, prefill_logits [P, V], prefill_kv)` with logits float32 and
    `prefill_kv` = one row of W columns in the cache's layout (`init_cache`; tuples when the
    layers are unstacked).
  """
  side = {"tokens": prefill_tokens, "segments": prefill_segments,
          "positions": prefill_positions, "last": prefill_last}
  logits, new_cache, side_out = _forward(params, tokens, cfg, mask=mask, cache=cache,
                                         compute_dtype=compute_dtype, last_only=True,
                                         side=side)
  return logits, new_cache, side_out["logits"], {"k": side_out["k"], "v": side_out["v"]}


def _forward(params, tokens, cfg, *, mask=None, positions=None, cache=None, compute_dtype=None,
             last_only=False, embeds=None, s2_group_size=None, residual_hook=None,
             hook_params=None, segment_ids=None, side=None):
  """`apply`'s body; `side` is `apply_with_prefill`'s packed prefill block (or None).
  Returns `(logits, new_cache, side_out)`."""
  if (tokens is None) == (embeds is None):
    raise ValueError("pass exactly one of tokens and embeds")
  B, T = tokens.shape if tokens is not None else embeds.shape[:2]
  dtype = compute_dtype or params["embed_tokens"]["embedding"].dtype
  if segment_ids is not None:
    if cache is not None:
      raise ValueError("segment_ids (packed rows) cannot be used with a KV cache")
    mask = segment_ids > 0 if mask is None else mask & (segment_ids > 0)
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
  # Slots are contiguous per row (left padding), so slot distance is token distance.
  distance = q_slots[:, None] - k_slots[None, :]  # [T, S]
  causal = valid[:, None, :] & (distance >= 0)[None]
  if segment_ids is not None:
    causal = causal & (segment_ids[:, :, None] == segment_ids[:, None, :])
  if s2_group_size:
    if cache is not None or T % s2_group_size or s2_group_size % 2:
      raise ValueError("s2_group_size needs no cache, an even group size and T divisible by it "
                       f"(T={T}, group={s2_group_size})")
    half = s2_group_size // 2
    plain = (q_slots[:, None] // s2_group_size) == (k_slots[None, :] // s2_group_size)
    shifted = ((q_slots[:, None] + half) // s2_group_size) == (
        (k_slots[None, :] + half) // s2_group_size)
    n_groups = cfg.num_heads // cfg.num_kv_heads
    head = (jnp.arange(cfg.num_kv_heads)[:, None] * n_groups + jnp.arange(n_groups)[None])
    second_half = (head >= cfg.num_heads // 2)[None, :, :, None, None]  # [1, K, G, 1, 1]
    causal = causal[:, None, None] & jnp.where(second_half, shifted, plain)

  x = (embed(params, tokens) if embeds is None else embeds).astype(dtype)
  n_main = B * T
  if side is not None:
    if (cache is None or embeds is not None or segment_ids is not None or s2_group_size
        or residual_hook is not None or cfg.mrope_section):
      raise ValueError("a packed prefill block needs a cache and token inputs, and does not "
                       "combine with segment_ids, s2_group_size, residual_hook or M-RoPE")
    # Every position-wise op runs on one flat row: the B*T decode tokens, then the W
    # prefill tokens; only attention treats the two parts apart.
    side_seg = side["segments"][0]
    side_distance = jnp.arange(side_seg.shape[0])[:, None] - jnp.arange(side_seg.shape[0])
    side_causal = ((side_seg[:, None] == side_seg[None, :]) & (side_seg[None, :] > 0)
                   & (side_distance >= 0))
    x = jnp.concatenate([x.reshape(1, n_main, -1),
                         embed(params, side["tokens"]).astype(dtype)], axis=1)
    positions = jnp.concatenate([positions.reshape(1, n_main), side["positions"]], axis=1)
  if cfg.embed_scale:
    x = x * jnp.asarray(cfg.hidden_size ** 0.5, dtype)

  def norm(p, name, h):
    return rms_norm(h, p[name]["scale"], cfg)

  def block(carry, layer):
    x, k_cache, v_cache = carry
    p, window, i, hp = layer
    in_window = (window == 0) | (distance < window)
    allowed = causal & (in_window if causal.ndim == 5 else in_window[None])
    h = norm(p, "input_layernorm", x)
    a = p["self_attn"]
    rows, cols = x.shape[:2]  # (B, T), or (1, B*T + W) with a prefill block
    q = _proj(h, a["q_proj"], dtype).reshape(rows, cols, cfg.num_heads, cfg.head_dim)
    k = _proj(h, a["k_proj"], dtype).reshape(rows, cols, cfg.num_kv_heads, cfg.head_dim)
    v = _proj(h, a["v_proj"], dtype).reshape(rows, cols, cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
      q = norm(a, "q_norm", q)
      k = norm(a, "k_norm", k)
    q = apply_rope(q, positions, inv_freq, cfg.mrope_section)
    k = apply_rope(k, positions, inv_freq, cfg.mrope_section)
    side_kv = None
    per_layer = k_cache is not None and k_cache.ndim == 4  # this layer's own buffer
    if side is not None:
      # The prefill block attends within its segments, from its own keys and values.
      qs, ks, vs = q[:, n_main:], k[:, n_main:].transpose(0, 2, 1, 3), v[:, n_main:]
      vs = vs.transpose(0, 2, 3, 1)  # as the stacked cache: k [1, K, W, hd], v [1, K, hd, W]
      s_window = (window == 0) | (side_distance < window)
      side_out = _attention(qs, ks, vs, (side_causal & s_window)[None], cfg)
      # Returned in the cache's own layout.
      side_kv = ((ks.transpose(0, 1, 3, 2), vs.transpose(0, 1, 3, 2)) if per_layer
                 else (ks, vs))
      q, k, v = (t[:, :n_main].reshape((B, T) + t.shape[2:]) for t in (q, k, v))
    if per_layer:
      # This layer's own buffer (per-layer cache), updated in place and read as it is.
      k = k.transpose(0, 2, 3, 1)
      v = v.transpose(0, 2, 1, 3)  # k [B, K, hd, T], v [B, K, T, hd] (as `init_cache`)
      k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, 0, end))
      v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, 0, end, 0))
      k_all, v_all = k_cache.astype(dtype), v_cache.astype(dtype)
    else:
      k = k.transpose(0, 2, 1, 3)
      v = v.transpose(0, 2, 3, 1)  # k [B, K, T, hd], v [B, K, hd, T] (the stacked layout)
      if k_cache is not None:
        # The whole cache rides in the scan carry and is updated in place (no per-step copy).
        k_cache = jax.lax.dynamic_update_slice(k_cache, k[None].astype(k_cache.dtype),
                                               (i, 0, 0, end, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v[None].astype(v_cache.dtype),
                                               (i, 0, 0, 0, end))
        k_all = jax.lax.dynamic_index_in_dim(k_cache, i, keepdims=False).astype(dtype)
        v_all = jax.lax.dynamic_index_in_dim(v_cache, i, keepdims=False).astype(dtype)
      else:
        k_all, v_all = k, v
    out = _attention(q, k_all, v_all, allowed, cfg, slots_last=per_layer)
    if side is not None:
      out = jnp.concatenate([out.reshape(1, n_main, -1), side_out], axis=1)
    h = _proj(out, a["o_proj"], dtype)
    if cfg.sandwich_norms:
      h = norm(p, "post_attention_layernorm", h)
      x = x + h
      h = norm(p, "pre_feedforward_layernorm", x)
    else:
      x = x + h
      h = norm(p, "post_attention_layernorm", x)
    m = p["mlp"]
    act = jax.nn.silu if cfg.activation == "silu" else (lambda y: jax.nn.gelu(y, approximate=True))
    h = _proj(act(_proj(h, m["gate_proj"], dtype)) * _proj(h, m["up_proj"], dtype),
              m["down_proj"], dtype)
    if cfg.sandwich_norms:
      h = norm(p, "post_feedforward_layernorm", h)
    x = x + h
    if residual_hook is not None:
      x = residual_hook(hp, x, i)
    return (x, k_cache, v_cache), side_kv

  k_cache = cache["k"] if cache is not None else None
  v_cache = cache["v"] if cache is not None else None
  per_layer_cache = isinstance(k_cache, (tuple, list))
  body = _remat(block, cfg.remat if cache is None else "none")
  if isinstance(params["layers"], (tuple, list)):
    # Unstacked layers (`unstack_layers`): one traced block per layer, each reading its own
    # weight buffers; no per-layer slice of a stacked array (which XLA:CPU copies).
    if len(params["layers"]) != cfg.num_layers:
      raise ValueError(f"{len(params['layers'])} unstacked layers for a config of "
                       f"{cfg.num_layers}")
    if per_layer_cache and len(k_cache) != cfg.num_layers:
      raise ValueError(f"a per-layer cache of {len(k_cache)} layers for a config of "
                       f"{cfg.num_layers}")
    new_k, new_v, side_k, side_v = [], [], [], []
    for i, layer in enumerate(params["layers"]):
      hp = None if hook_params is None else jax.tree.map(lambda a, i=i: a[i], hook_params)
      carry = ((x, k_cache[i], v_cache[i]) if per_layer_cache else (x, k_cache, v_cache))
      (x, k_i, v_i), kv_i = body(carry, (layer, cfg.windows[i], i, hp))
      if kv_i is not None:
        side_k.append(kv_i[0])
        side_v.append(kv_i[1])
      if per_layer_cache:
        new_k.append(k_i)
        new_v.append(v_i)
      else:
        k_cache, v_cache = k_i, v_i
    if per_layer_cache:
      new_k, new_v = tuple(new_k), tuple(new_v)
    else:
      new_k, new_v = k_cache, v_cache
    side_k, side_v = tuple(side_k), tuple(side_v)
  else:
    if per_layer_cache:
      raise ValueError("a per-layer cache (init_cache(per_layer=True)) needs unstacked layers "
                       "(decoder.unstack_layers); use the stacked cache with stacked layers")
    # Weights of kinds with a layer view (packed bf16) are not sliced by the scan, which
    # XLA:CPU would copy out; the body gets views of the whole stacks indexed by the layer.
    stacked, treedef = jax.tree.flatten(params["layers"], is_leaf=has_layer_view)
    viewed = [has_layer_view(leaf) for leaf in stacked]
    scanned = [None if v else leaf for leaf, v in zip(stacked, viewed)]

    def scan_body(carry, xs):
      sliced, window, i, hp = xs
      layer = treedef.unflatten([layer_view(whole, i) if v else part
                                 for whole, part, v in zip(stacked, sliced, viewed)])
      return body(carry, (layer, window, i, hp))

    layer_xs = (scanned, jnp.asarray(cfg.windows, jnp.int32),
                jnp.arange(cfg.num_layers, dtype=jnp.int32), hook_params)
    (x, new_k, new_v), side_kv = jax.lax.scan(scan_body, (x, k_cache, v_cache), layer_xs,
                                              unroll=cfg.scan_unroll)
    side_k, side_v = side_kv if side_kv is not None else (None, None)

  side_out = None
  if side is not None:
    # One head matmul for the decode rows' last tokens and the prompts' last tokens.
    last = x[0, n_main + side["last"]]  # [P, D]
    x = jnp.concatenate([x[0, :n_main].reshape(B, T, -1)[:, -1], last], axis=0)[:, None]
  if last_only:
    x = x[:, -1:]
  logits = _head(params, rms_norm(x, params["norm"]["scale"], cfg), cfg, dtype)
  if side is not None:
    side_out = {"logits": logits[B:, 0], "k": side_k, "v": side_v}
    logits = logits[:B]

  new_cache = None
  if cache is not None:
    new_cache = {"k": new_k, "v": new_v, "valid": valid, "end": end + T,
                 "next_pos": cache["next_pos"] + jnp.sum(mask, axis=1, dtype=jnp.int32)}
  return logits, new_cache, side_out


def _head(params: Params, x: jax.Array, cfg: ModelConfig, dtype: Any) -> jax.Array:
  """Final-normed hidden states `[B, T, D]` -> float32 logits `[B, T, V]` (soft-capped)."""
  if cfg.tie_word_embeddings:
    # Tied head: x @ E^T. A plain table contracts directly; other kinds (packed storage)
    # go through `linear` with their registered transpose.
    table = params["embed_tokens"]["embedding"]
    if isinstance(table, jax.Array):
      logits = jnp.einsum("btd,vd->btv", x, table.astype(dtype),
                          preferred_element_type=jnp.float32)
    else:
      logits = linear(x, transpose(table), dtype).astype(jnp.float32)
  else:
    logits = linear(x, params["lm_head"]["kernel"], dtype).astype(jnp.float32)
  return _softcap(logits.astype(jnp.float32), cfg.final_logit_softcap)
