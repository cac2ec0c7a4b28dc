"""Batched autoregressive generation with a preallocated KV cache and static shapes.

Prompts are left-padded to a power-of-two bucket and the cache length is bucketed too, so a
server compiles once per (batch, bucket) pair, not once per request. Prefill runs the whole
prompt through `apply` with `last_only=True`; each decode step feeds one token per row.
"""

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import sharding
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to pick tokens. `temperature == 0` is greedy; `top_k == 0` and `top_p == 1` disable."""
  max_new_tokens: int = 64
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  repetition_penalty: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise errors.ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise errors.ConfigError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise errors.ConfigError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise errors.ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.repetition_penalty <= 0:
      raise errors.ConfigError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def bucket(n: int, minimum: int = 16) -> int:
  """Smallest power of two >= max(n, minimum)."""
  return max(minimum, 1 << (max(n, 1) - 1).bit_length())


def sample_logits(logits: jax.Array, rng: jax.Array, seen: jax.Array,
                  sampling: SamplingConfig) -> jax.Array:
  """Picks one token per row.

  Args:
    logits: `[B, V]` float32.
    rng: PRNG key (unused when greedy).
    seen: `[B, V]` bool, tokens already in the sequence (for the repetition penalty).
    sampling: the sampling config (static).

  Returns:
    `[B]` int32 token ids.
  """
  if sampling.repetition_penalty != 1.0:
    # CTRL / Hugging Face convention: shrink the logits of tokens already seen.
    p = sampling.repetition_penalty
    logits = jnp.where(seen, jnp.where(logits > 0, logits / p, logits * p), logits)
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  neg = jnp.finfo(logits.dtype).min
  if sampling.top_k:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if sampling.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least one token).
    keep = (cum - jax.nn.softmax(sorted_logits, axis=-1)) < sampling.top_p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "compute_dtype", "apply_fn"),
                   donate_argnames=("cache",))
def _prefill(params, tokens, mask, cache, rng, cfg, sampling, compute_dtype,
             apply_fn=decoder.apply, inputs=None):
  logits, cache = apply_fn(params, tokens, cfg, mask=mask, cache=cache,
                           compute_dtype=compute_dtype, last_only=True, **(inputs or {}))
  seen = jnp.zeros((tokens.shape[0], logits.shape[-1]), bool)
  seen = seen.at[jnp.arange(tokens.shape[0])[:, None], tokens].max(mask)
  token = sample_logits(logits[:, -1], rng, seen, sampling)
  return token, cache, seen.at[jnp.arange(tokens.shape[0]), token].set(True)


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "compute_dtype", "apply_fn"),
                   donate_argnames=("cache", "seen"))
def _decode_step(params, token, cache, seen, rng, cfg, sampling, compute_dtype,
                 apply_fn=decoder.apply):
  logits, cache = apply_fn(params, token[:, None], cfg, cache=cache,
                           compute_dtype=compute_dtype, last_only=True)
  token = sample_logits(logits[:, -1], rng, seen, sampling)
  return token, cache, seen.at[jnp.arange(token.shape[0]), token].set(True)


def generate(params: Any, cfg: ModelConfig, prompts: Sequence[Sequence[int]],
             sampling: SamplingConfig = SamplingConfig(), *, rng: jax.Array | None = None,
             eos_ids: Sequence[int] = (), compute_dtype: Any = None,
             on_tokens: Callable[[np.ndarray], None] | None = None,
             stop_fn: Callable[[int, list[int]], bool] | None = None,
             mesh: jax.sharding.Mesh | None = None, apply_fn: Callable[..., Any] | None = None,
             apply_cfg: Any = None, prefill_inputs: dict[str, Any] | None = None
             ) -> list[list[int]]:
  """Generates continuations for a batch of token-id prompts.

  Args:
    params: model parameters.
    cfg: model config (static).
    prompts: B lists of token ids (different lengths are left-padded).
    sampling: the sampling config.
    rng: PRNG key for sampling (default key 0).
    eos_ids: ids that end a row (default: `cfg.eos_token_ids`).
    compute_dtype: activation dtype (default: the parameters' dtype).
    on_tokens: streaming callback, called after every step with the `[B]` new token ids
      (-1 for rows that have already finished).
    stop_fn: `stop_fn(row, generated_ids) -> bool`, checked after each appended token; True
      ends that row (used for stop strings).
    mesh: lay the KV cache and the token batch out on this mesh (batch over `data`/`fsdp`,
      KV heads over `tensor`, by `swiftjax.sharding.DEFAULT_RULES`); use with params sharded
      on the same mesh.
    apply_fn: the model to run instead of `decoder.apply`, with its signature
      (`apply_fn(params, tokens, apply_cfg, mask=, cache=, compute_dtype=, last_only=,
      **prefill_inputs)`), e.g. a multimodal family's `apply`; it gets and returns the
      `decoder.init_cache(cfg, ...)` cache (it may add entries of its own). Pass
      `compute_dtype` with it.
    apply_cfg: the (hashable) config given to `apply_fn` (default `cfg`); `cfg` stays the
      language model's config (cache shape, context length, EOS ids).
    prefill_inputs: extra keyword arguments for the prefill only (e.g.
      `{"image_inputs": {...}}`, arrays of fixed shapes per batch).

  Returns:
    B lists of generated ids, each cut after its first EOS (the EOS itself is not included).
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise errors.ConfigError("generate() needs at least one non-empty prompt")
  B = len(prompts)
  T = bucket(max(len(p) for p in prompts))
  S = bucket(T + sampling.max_new_tokens)
  longest = max(len(p) for p in prompts)
  if longest + sampling.max_new_tokens > cfg.max_position_embeddings:
    raise errors.ConfigError(
        f"prompt ({longest} tokens) + max_new_tokens "
        f"({sampling.max_new_tokens}) exceeds the model's context of "
        f"{cfg.max_position_embeddings} tokens")
  tokens = np.zeros((B, T), np.int32)
  mask = np.zeros((B, T), bool)
  for i, p in enumerate(prompts):
    tokens[i, T - len(p):] = p
    mask[i, T - len(p):] = True
  eos = np.array(list(eos_ids or cfg.eos_token_ids) or [-1])
  rng = jax.random.key(0) if rng is None else rng
  if apply_fn is not None and compute_dtype is None:
    raise ValueError("generate(apply_fn=...) needs compute_dtype")
  dtype = compute_dtype or params["embed_tokens"]["embedding"].dtype
  cache = decoder.init_cache(cfg, B, S, dtype,
                             per_layer=apply_fn is None and decoder.cache_uses_layers(params))
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  if mesh is not None:
    cache = sharding.shard(cache, decoder.cache_axes(cache), mesh)
    batch_axes = ("activation_batch", "activation_length")
    tokens = sharding.shard(tokens, batch_axes, mesh)
    mask = sharding.shard(mask, batch_axes, mesh)
  rng, sub = jax.random.split(rng)
  if apply_fn is None:
    token, cache, seen = _prefill(params, tokens, mask, cache, sub, cfg, sampling, compute_dtype)
  else:
    apply_cfg = cfg if apply_cfg is None else apply_cfg
    token, cache, seen = _prefill(params, tokens, mask, cache, sub, apply_cfg, sampling,
                                  compute_dtype, apply_fn=apply_fn, inputs=prefill_inputs)
  out = [[] for _ in range(B)]
  done = np.zeros(B, bool)
  for step in range(sampling.max_new_tokens):
    host = np.asarray(token)
    if on_tokens is not None:
      on_tokens(np.where(done, -1, host))
    for i in range(B):
      if not done[i]:
        if host[i] in eos:
          done[i] = True
        else:
          out[i].append(int(host[i]))
          if stop_fn is not None and stop_fn(i, out[i]):
            done[i] = True
    if done.all() or step == sampling.max_new_tokens - 1:
      break
    rng, sub = jax.random.split(rng)
    if apply_fn is None:
      token, cache, seen = _decode_step(params, token, cache, seen, sub, cfg, sampling,
                                        compute_dtype)
    else:
      token, cache, seen = _decode_step(params, token, cache, seen, sub, apply_cfg, sampling,
                                        compute_dtype, apply_fn=apply_fn)
  return out
