"""NEFTune (Jain et al. 2023): uniform noise on input embeddings during fine-tuning only.

noise ~ U(-1, 1) * alpha / sqrt(T * D), with T the (padded) sequence length and D the width,
as the paper and Hugging Face's trainer scale it. Evaluation and generation use clean inputs.
"""

import jax
import jax.numpy as jnp


def noisy_embeddings(embeds: jax.Array, rng: jax.Array, alpha: float = 5.0) -> jax.Array:
  """`embeds [B, T, D]` plus NEFTune noise (pass the result as `decoder.apply(embeds=...)`)."""
  _, T, D = embeds.shape
  scale = alpha / jnp.sqrt(jnp.asarray(T * D, jnp.float32))
  noise = jax.random.uniform(rng, embeds.shape, jnp.float32, -1.0, 1.0) * scale
  return (embeds.astype(jnp.float32) + noise).astype(embeds.dtype)
