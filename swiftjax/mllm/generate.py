"""Generation with images: `swiftjax.generate` with a multimodal family's `apply` as the model.

The prefill runs the whole (left-padded, bucketed) prompt through `family.apply` with the batch's
image inputs, which put the image features at the image tokens; every decoding step then feeds one
text token per row through the same `apply` without images, so a family that keeps state of its
own in the cache (Qwen2-VL's M-RoPE offsets) sees it on every step. Sampling, bucketing, EOS and
stop handling are `swiftjax.generate`'s.

Compiles once per (batch, prompt bucket, image-input shapes): the image inputs of one request
batch have fixed shapes, set by the family's image processor.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import generate as gen
from swiftjax.mllm import inputs


def generate(family: Any, params: Any, cfg: Any, prompts: Sequence[Sequence[int]],
             image_inputs: dict[str, Any] | None = None,
             sampling: gen.SamplingConfig = gen.SamplingConfig(), *,
             rng: jax.Array | None = None, eos_ids: Sequence[int] = (),
             compute_dtype: Any = None,
             on_tokens: Callable[[np.ndarray], None] | None = None,
             stop_fn: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
  """Generates continuations of token-id prompts whose image tokens are already expanded.

  Args:
    family: the family module (`swiftjax.mllm.llava`, ...).
    params: the family's parameters (`vision`, `projector`, `language_model`).
    cfg: the family's config (hashable; `cfg.text` is the language model's).
    prompts: B lists of token ids, each image expanded to its run of image tokens
      (`family.image_text`); rows may have no image.
    image_inputs: `family.preprocess_images` of every image of the batch, in the order their
      image tokens appear (row-major), or None for a batch without images.
    sampling, rng, eos_ids, on_tokens, stop_fn: as `swiftjax.generate.generate`
      (`eos_ids` defaults to the language model's).
    compute_dtype: activation dtype (default: the language model's embedding dtype).

  Returns:
    B lists of generated ids, each cut before its first EOS.

  Raises:
    ConfigError: image tokens in the prompts but no image inputs, or the reverse, or a number
      of image tokens that differs from the number of image features.
  """
  n_image_tokens = sum(int(np.sum(np.asarray(p) == cfg.image_token_id)) for p in prompts)
  if n_image_tokens and not image_inputs:
    raise errors.ConfigError(f"the prompts hold {n_image_tokens} image tokens but no images "
                             "were given")
  if image_inputs and not n_image_tokens:
    raise errors.ConfigError("images were given but the prompts hold no image tokens "
                             "(put an <image> placeholder where each image goes)")
  try:
    hash(cfg)
  except TypeError:
    raise TypeError(f"{type(cfg).__name__} must be hashable (a static jit argument)") from None
  if compute_dtype is None:
    compute_dtype = params["language_model"]["embed_tokens"]["embedding"].dtype
  prefill = {}
  if image_inputs:
    prefill["image_inputs"] = {k: jnp.asarray(v) for k, v in image_inputs.items()}
    # Under jit a count mismatch would pass silently; the feature count is a static shape.
    features = jax.eval_shape(lambda p, x: family.encode_images(p, cfg, **x), params,
                              prefill["image_inputs"])
    inputs.check_feature_count(
        np.concatenate([np.asarray(p).reshape(-1) for p in prompts]), cfg.image_token_id,
        features.shape[0], "prompts")
  return gen.generate(params, cfg.text, prompts, sampling, rng=rng,
                      eos_ids=eos_ids, compute_dtype=compute_dtype,
                      on_tokens=on_tokens, stop_fn=stop_fn, apply_fn=family.apply,
                      apply_cfg=cfg, prefill_inputs=prefill)
