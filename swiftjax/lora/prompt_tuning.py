"""Prompt tuning (Lester et al. 2021): trainable soft-prompt embeddings before the input.

`n` virtual tokens `[n, D]` are prepended to the token embeddings; the model is frozen. The
model sees `n + T` positions (as PEFT's prompt tuning does), so logits for the real tokens are
`logits[:, n:]`. Initialisation: `random` takes n random rows of the vocabulary embedding (real
embedding statistics); `text` embeds a given text, repeated or cut to n tokens (PEFT's TEXT).
"""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax.models import decoder


@dataclasses.dataclass(frozen=True)
class PromptTuningConfig:
  num_virtual_tokens: int = 20
  init: str = "random"

  def __post_init__(self):
    if self.num_virtual_tokens < 1:
      raise errors.ConfigError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
    if self.init not in ("random", "text"):
      raise errors.ConfigError(f"prompt tuning init {self.init!r} is not random or text")


def init(params: Any, rng: jax.Array, cfg: PromptTuningConfig,
         init_token_ids: Sequence[int] | None = None) -> tuple[Any, Any]:
  """`(params, {"prompt_embeddings": [n, D] float32})`."""
  table = params["embed_tokens"]["embedding"]
  n = cfg.num_virtual_tokens
  if cfg.init == "text":
    if not init_token_ids:
      raise errors.ConfigError("prompt tuning init='text' needs init_token_ids (the tokenized "
                               "init text)")
    ids = (list(init_token_ids) * (n // len(init_token_ids) + 1))[:n]
  else:
    ids = jax.random.randint(rng, (n,), 0, table.shape[0])
  return params, {"prompt_embeddings": jnp.take(table, jnp.asarray(ids), axis=0)
                  .astype(jnp.float32)}


def inputs(params: Any, adapters: Any, tokens: jax.Array,
           mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """`(embeds [B, n+T, D], mask [B, n+T])` with the soft prompt in front of every row.

  With left-padded rows, the prompt goes right before the first real token is not needed:
  positions are counted over the mask, so the prompt sits at positions 0..n-1 of every row.
  """
  B, _ = tokens.shape
  soft = adapters["prompt_embeddings"]
  emb = decoder.embed(params, tokens)
  prompt = jnp.broadcast_to(soft.astype(emb.dtype)[None], (B, *soft.shape))
  mask = jnp.ones(tokens.shape, bool) if mask is None else mask
  return (jnp.concatenate([prompt, emb], axis=1),
          jnp.concatenate([jnp.ones((B, soft.shape[0]), bool), mask], axis=1))
