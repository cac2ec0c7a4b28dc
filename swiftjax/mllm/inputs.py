"""Image features into the token sequence: the one step every MLLM family shares.

A processor expands each image placeholder in the text into as many image tokens as the image
has features; the model then swaps the embeddings at those positions for the features, in order.
"""

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors


def count_image_tokens(input_ids: np.ndarray, image_token_id: int) -> int:
  """Number of image-token positions in `input_ids [B, T]` (host-side, before jit)."""
  return int(np.sum(np.asarray(input_ids) == image_token_id))


def check_feature_count(input_ids: np.ndarray, image_token_id: int, n_features: int,
                        where: str = "batch") -> None:
  """Raises a clear error when the image tokens and the features do not pair up one to one."""
  n = count_image_tokens(input_ids, image_token_id)
  if n != n_features:
    raise errors.ConfigError(
        f"{where}: {n} image tokens in the text but the images give {n_features} features "
        "(does every <image> placeholder have an image, expanded by the model's processor?)")


def merge_image_features(embeds: jax.Array, input_ids: jax.Array, image_token_id: int,
                         features: jax.Array) -> jax.Array:
  """Puts `features [N, D]` at the image-token positions of `embeds [B, T, D]`, in row-major
  order (the first image token of the first row gets feature 0), as Hugging Face's
  `masked_scatter`. `N` must equal the number of image tokens (`check_feature_count`); under
  jit a shortfall would repeat the last feature, so check on the host first.

  Returns:
    `[B, T, D]` embeddings, dtype of `embeds`.
  """
  is_image = (input_ids == image_token_id).reshape(-1)
  index = jnp.clip(jnp.cumsum(is_image) - 1, 0, max(features.shape[0] - 1, 0))
  flat = embeds.reshape(-1, embeds.shape[-1])
  gathered = features.astype(embeds.dtype)[index]
  return jnp.where(is_image[:, None], gathered, flat).reshape(embeds.shape)
