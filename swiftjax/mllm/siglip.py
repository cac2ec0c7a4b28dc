"""SigLIP vision tower with Idefics3's variable-resolution position embeddings, as pure functions.

  patches  = conv(pixel_values)            a `patch_size` stride-`patch_size` convolution, done
                                           as one matmul over flattened patches (`vit.py`)
  x        = patches + position_embedding[position_ids]
  hidden   = post_layernorm(vit.encode(x))  pre-LN blocks, gelu_pytorch_tanh

Idefics3 (NaViT-style) gives each image position ids from its `patch_attention_mask`: a patch
at row `i` of an image `n_h` valid patches tall sits at fractional height `i / n_h`, which is
bucketed into the `num_patches_per_side` rows of the learnt position grid (same for columns);
padded patches get position 0. An image of the full size therefore gets ids `0 .. n*n - 1`,
up to the float32 rounding transformers does (reproduced exactly, see `position_ids`).

Parameters:

  embeddings/patch_embedding/kernel        [C*p*p, D]   (HF conv weight [D, C, p, p] flattened)
  embeddings/patch_embedding/bias          [D]
  embeddings/position_embedding/embedding  [num_patches_per_side**2, D]
  encoder/...                              `vit` layers, stacked
  post_layernorm/{scale,bias}              [D]
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax.mllm import vit
from swiftjax.models import decoder

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PatchConfig:
  """How images become patches: `image_size` is the side the position grid was trained for."""
  image_size: int
  patch_size: int
  num_channels: int = 3

  def __post_init__(self):
    if self.patch_size <= 0 or self.image_size < self.patch_size:
      raise ValueError(f"patch_size {self.patch_size} must be in [1, image_size "
                       f"{self.image_size}]")

  @property
  def num_patches_per_side(self) -> int:
    return self.image_size // self.patch_size

  @property
  def patch_dim(self) -> int:
    return self.num_channels * self.patch_size ** 2


def _spec(vcfg: vit.VitConfig, pcfg: PatchConfig) -> decoder.Spec:
  D, n = vcfg.hidden_size, pcfg.num_patches_per_side
  return {
      ("embeddings", "patch_embedding", "kernel"): ((pcfg.patch_dim, D), (None, "embed"),
                                                    "normal"),
      ("embeddings", "patch_embedding", "bias"): ((D,), ("embed",), "zeros"),
      ("embeddings", "position_embedding", "embedding"): ((n * n, D), (None, "embed"), "normal"),
      ("post_layernorm", "scale"): ((D,), ("norm",), "ones"),
      ("post_layernorm", "bias"): ((D,), ("norm",), "zeros"),
  }


def param_axes(vcfg: vit.VitConfig, pcfg: PatchConfig) -> Params:
  """Logical axis names of every tower parameter."""
  tree = decoder.axes_from_spec(_spec(vcfg, pcfg))
  tree["encoder"] = vit.param_axes(vcfg)
  return tree


def param_shapes(vcfg: vit.VitConfig, pcfg: PatchConfig, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every tower parameter."""
  tree = decoder.shapes_from_spec(_spec(vcfg, pcfg), dtype)
  tree["encoder"] = vit.param_shapes(vcfg, dtype)
  return tree


def init(vcfg: vit.VitConfig, pcfg: PatchConfig, rng: jax.Array,
         dtype: Any = jnp.float32) -> Params:
  """Random tower parameters (normal, std 0.02; norms identity, biases zero)."""
  spec = _spec(vcfg, pcfg)
  keys = jax.random.split(rng, len(spec) + 1)
  tree = decoder.init_from_spec(spec, keys[1:], dtype)
  tree["encoder"] = vit.init(vcfg, keys[0], dtype)
  return tree


def hf_tensor_names(vcfg: vit.VitConfig, prefix: str
                    ) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Hugging Face tensor names under `prefix` (e.g. `model.vision_model.`) -> `(param path,
  layer, transpose)`, for every tensor except the patch convolution (`patch_kernel_name`),
  whose 4-D weight `vit.read_patch_kernel` reshapes."""
  table = {
      f"{prefix}embeddings.patch_embedding.bias": (
          ("embeddings", "patch_embedding", "bias"), None, False),
      f"{prefix}embeddings.position_embedding.weight": (
          ("embeddings", "position_embedding", "embedding"), None, False),
      f"{prefix}post_layernorm.weight": (("post_layernorm", "scale"), None, False),
      f"{prefix}post_layernorm.bias": (("post_layernorm", "bias"), None, False),
  }
  for name, (path, layer, transpose) in vit.hf_tensor_names(
      vcfg, f"{prefix}encoder.layers").items():
    table[name] = (("encoder",) + path, layer, transpose)
  return table


def patch_kernel_name(prefix: str) -> str:
  """The Hugging Face name of the patch convolution weight `[D, C, p, p]`."""
  return f"{prefix}embeddings.patch_embedding.weight"


def patch_attention_mask(pixel_attention_mask: jax.Array, patch_size: int) -> jax.Array:
  """`[M, H, W]` pixel mask -> `[M, H//p, W//p]` bool: a patch is valid when any of its pixels
  is (transformers' `unfold(...).sum() > 0`; a remainder narrower than a patch is dropped)."""
  M, H, W = pixel_attention_mask.shape
  h, w = H // patch_size, W // patch_size
  m = pixel_attention_mask[:, :h * patch_size, :w * patch_size].astype(bool)
  return m.reshape(M, h, patch_size, w, patch_size).any(axis=(2, 4))


def _torch_cpu_arange(start: float, end: float, step: float) -> np.ndarray:
  """`torch.arange(start, end, step)` in float32 exactly as torch's CPU kernel computes it.

  The length is `ceil((end - start) / step)` in double. Values are computed in double and
  rounded to float32, except that full pairs of 8-wide vectors start from a float32-rounded
  base (`Vectorized<float>::arange(base, step)`); the tail uses `start + step * i`. The
  bucket boundaries below depend on these last-bit differences (checked against torch 2.13
  for every grid side 1..399).
  """
  n = math.ceil((end - start) / step)
  out = np.empty(n, np.float32)
  vec = 8
  n_vec = (n // (2 * vec)) * 2 * vec
  for i in range(n):
    if i < n_vec:
      c = (i // vec) * vec
      base = np.float64(np.float32(start + step * c))
      out[i] = np.float32(base + (i - c) * step)
    else:
      out[i] = np.float32(start + step * i)
  return out


def position_ids(patch_mask: jax.Array, num_patches_per_side: int) -> jax.Array:
  """Idefics3's position ids `[M, h*w]` int32 from a `[M, h, w]` bool patch mask.

  Row `i` of an image with `n_h` valid rows has fractional coordinate
  `min(i * float32(1 / n_h), 1 - 1e-6)`, bucketed (`right=True`) by the boundaries
  `arange(1/n, 1, 1/n)` of the `n`-per-side grid; id = row bucket * n + column bucket; invalid
  patches get 0. float32 throughout, as transformers computes it.
  """
  n = num_patches_per_side
  boundaries = jnp.asarray(_torch_cpu_arange(1.0 / n, 1.0, 1.0 / n))
  M, h, w = patch_mask.shape
  clamp = jnp.float32(1.0 - 1e-6)

  def buckets(valid_count, size):
    step = jnp.float32(1.0) / valid_count.astype(jnp.float32)  # [M]
    coords = jnp.minimum(jnp.arange(size, dtype=jnp.float32)[None] * step[:, None], clamp)
    return jnp.sum(boundaries[None, None, :] <= coords[:, :, None], axis=-1, dtype=jnp.int32)

  rows = buckets(jnp.sum(patch_mask[:, :, 0], axis=1), h)  # [M, h]
  cols = buckets(jnp.sum(patch_mask[:, 0, :], axis=1), w)  # [M, w]
  ids = (rows[:, :, None] * n + cols[:, None, :]).reshape(M, h * w)
  return jnp.where(patch_mask.reshape(M, h * w), ids, 0)


def embed(params: Params, pixel_values: jax.Array, pcfg: PatchConfig,
          patch_mask: jax.Array | None = None, compute_dtype: Any = None) -> jax.Array:
  """Patch embeddings plus position embeddings.

  Args:
    params: the tower's parameters (`embeddings/...` is used).
    pixel_values: `[M, C, H, W]` images.
    pcfg: patch geometry.
    patch_mask: `[M, H//p, W//p]` bool valid patches (all valid by default).
    compute_dtype: activation dtype (default: the position table's dtype).

  Returns:
    `[M, (H//p) * (W//p), D]`.
  """
  p = pcfg.patch_size
  e = params["embeddings"]
  dtype = compute_dtype or e["position_embedding"]["embedding"].dtype
  M, _, H, W = pixel_values.shape
  h, w = H // p, W // p
  x = vit.embed_patches(e["patch_embedding"], pixel_values, p, dtype)
  if patch_mask is None:
    patch_mask = jnp.ones((M, h, w), bool)
  ids = position_ids(patch_mask, pcfg.num_patches_per_side)
  return x + jnp.take(e["position_embedding"]["embedding"], ids, axis=0).astype(dtype)


def apply(params: Params, pixel_values: jax.Array, vcfg: vit.VitConfig, pcfg: PatchConfig, *,
          patch_mask: jax.Array | None = None, compute_dtype: Any = None) -> jax.Array:
  """The tower's last hidden state (after `post_layernorm`).

  Args:
    params: tower parameters.
    pixel_values: `[M, C, H, W]` images.
    vcfg: the encoder config.
    pcfg: patch geometry.
    patch_mask: `[M, H//p, W//p]` bool; `None` when every patch is valid. Every patch attends
      only to the valid patches of its image, as in transformers.
    compute_dtype: activation dtype.

  Returns:
    `[M, N, D]` with `N = (H//p) * (W//p)`.
  """
  x = embed(params, pixel_values, pcfg, patch_mask, compute_dtype)
  key_mask = None
  if patch_mask is not None:
    key_mask = patch_mask.reshape(x.shape[0], -1)
  x = vit.encode(params["encoder"], x, vcfg, key_mask=key_mask, compute_dtype=x.dtype)
  return vit.layer_norm(x, params["post_layernorm"], vcfg.layer_norm_eps)
