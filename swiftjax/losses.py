"""Token-level language-model losses."""

import jax
import jax.numpy as jnp
import optax


def next_token_loss(logits: jax.Array, tokens: jax.Array, weights: jax.Array,
                    segment_ids: jax.Array | None = None, reduction: str = "mean"
                    ) -> tuple[jax.Array, jax.Array]:
  """Weighted cross-entropy of predicting `tokens[:, t]` from position `t - 1`.

  Args:
    logits: `[B, T, V]`.
    tokens: `[B, T]` int.
    weights: `[B, T]` per-target weights (loss scale; 0 = not trained).
    segment_ids: `[B, T]` for packed rows: a target only counts if it is in the same segment
      as the position that predicts it (and not padding, segment 0).
    reduction: `mean`: the weighted sum over the number of trained targets (weight > 0), as
      ms-swift normalises, so a loss scale of 2 doubles a token's share rather than being
      renormalised away (for 0/1 weights this is the weighted mean); or `sum`.

  Returns:
    `(loss, trained_targets)`: the number of targets with weight > 0.
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits[:, :-1].astype(jnp.float32), tokens[:, 1:])
  w = weights[:, 1:].astype(jnp.float32)
  if segment_ids is not None:
    w = w * ((segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0))
  total = jnp.sum((w > 0).astype(jnp.float32))
  loss = jnp.sum(ce * w)
  if reduction == "mean":
    loss = loss / jnp.maximum(total, 1.0)
  return loss, total
