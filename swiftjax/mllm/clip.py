"""CLIP's vision tower (transformers' `CLIPVisionModel`) as pure functions.

  embeddings = [class_embedding; patches @ patch_kernel] + position_embedding   [B, 1 + N, D]
  h_0        = pre_layrnorm(embeddings)
  h_k        = k encoder layers (`vit.encode`) applied to h_0

`hidden_states(...)` returns the `h_k` a caller asks for, with Hugging Face's indexing of
`output_hidden_states`: index 0 is `h_0`, index `L` (or -1) the last layer, -2 the penultimate
(what LLaVA reads). The patch convolution (kernel = stride = patch size, no bias) is `vit.py`'s
matmul over flattened patches. `post_layernorm` only feeds CLIP's pooled output, which no MLLM here uses, so
it is neither a parameter nor read from checkpoints.

Parameters:

  embeddings/patch_embedding/kernel        [C*p*p, D]  (Hugging Face `[D, C, p, p]`, flattened)
  embeddings/class_embedding               [D]
  embeddings/position_embedding/embedding  [1 + N, D]
  pre_layrnorm/{scale,bias}                [D]
  encoder/...                              `vit.py`'s layer stack
"""

import dataclasses
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax.mllm import vit
from swiftjax.models import decoder
from swiftjax.models import safetensors_loader

Params = dict[str, Any]

PATCH_KERNEL = ("embeddings", "patch_embedding", "kernel")


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Image side, patch side and channels of a CLIP tower (square images, as CLIP's)."""
  image_size: int
  patch_size: int
  num_channels: int = 3

  def __post_init__(self):
    if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
      raise errors.ConfigError(f"image_size {self.image_size} is not a positive multiple of "
                               f"patch_size {self.patch_size}")

  @property
  def grid(self) -> int:
    """Patches along each side."""
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    """N, patches per image (the tower's sequence is N + 1 with the class token)."""
    return self.grid * self.grid


def _spec(vision: vit.VitConfig, geo: Geometry) -> decoder.Spec:
  """Embedding and pre-norm parameters: path -> (shape, logical axes, init std or kind)."""
  D = vision.hidden_size
  patch = geo.num_channels * geo.patch_size * geo.patch_size
  return {
      PATCH_KERNEL: ((patch, D), ("patch", "embed"), 0.02),
      ("embeddings", "class_embedding"): ((D,), ("embed",), D ** -0.5),
      ("embeddings", "position_embedding", "embedding"): ((geo.num_patches + 1, D),
                                                          ("positions", "embed"), 0.02),
      ("pre_layrnorm", "scale"): ((D,), ("norm",), "ones"),
      ("pre_layrnorm", "bias"): ((D,), ("norm",), "zeros"),
  }


def param_axes(vision: vit.VitConfig, geo: Geometry) -> Params:
  """Logical axis names of every tower parameter."""
  tree = decoder.axes_from_spec(_spec(vision, geo))
  tree["encoder"] = vit.param_axes(vision)
  return tree


def param_shapes(vision: vit.VitConfig, geo: Geometry, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every tower parameter."""
  tree = decoder.shapes_from_spec(_spec(vision, geo), dtype)
  tree["encoder"] = vit.param_shapes(vision, dtype)
  return tree


def init(vision: vit.VitConfig, geo: Geometry, rng: jax.Array,
         dtype: Any = jnp.float32) -> Params:
  """Random tower parameters (stds as transformers' CLIP init: 0.02, class token D**-0.5)."""
  spec = _spec(vision, geo)
  keys = jax.random.split(rng, len(spec) + 1)
  tree = decoder.init_from_spec(spec, keys[1:], dtype)
  tree["encoder"] = vit.init(vision, keys[0], dtype)
  return tree


def hf_tensor_names(vision: vit.VitConfig, prefix: str
                    ) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Hugging Face names -> `(param path, layer, transpose)` of every tower tensor but the patch
  kernel (which needs a reshape: see `read`).

  Args:
    vision: the encoder config.
    prefix: the tower's module name with a trailing dot, e.g. `vision_tower.vision_model.`
      (published checkpoints) or `model.vision_tower.` (transformers 5 in memory).
  """
  table = {
      f"{prefix}embeddings.class_embedding": (("embeddings", "class_embedding"), None, False),
      f"{prefix}embeddings.position_embedding.weight": (
          ("embeddings", "position_embedding", "embedding"), None, False),
      f"{prefix}pre_layrnorm.weight": (("pre_layrnorm", "scale"), None, False),
      f"{prefix}pre_layrnorm.bias": (("pre_layrnorm", "bias"), None, False),
  }
  for name, (path, layer, t) in vit.hf_tensor_names(vision, f"{prefix}encoder.layers").items():
    table[name] = (("encoder",) + path, layer, t)
  return table


def read(directory: str | pathlib.Path, prefix: str, vision: vit.VitConfig, geo: Geometry,
         dtype: Any = jnp.float32, shardings: Any = None,
         files: dict[str, pathlib.Path] | None = None) -> Params:
  """Reads the tower's tensors (named under `prefix`) from a safetensors directory.

  Raises:
    CheckpointError: a tensor is missing or has the wrong shape (named).
  """
  directory = pathlib.Path(directory)
  files = safetensors_loader.tensor_files(directory) if files is None else files
  shapes = param_shapes(vision, geo, dtype)
  params = safetensors_loader.read_tensors(directory, hf_tensor_names(vision, prefix), shapes,
                                           dtype, shardings, files)
  conv_shape = (vision.hidden_size, geo.num_channels, geo.patch_size, geo.patch_size)
  params["embeddings"]["patch_embedding"] = {"kernel": vit.read_patch_kernel(
      directory, f"{prefix}embeddings.patch_embedding.weight", conv_shape, dtype, shardings,
      PATCH_KERNEL, files)}
  return params


def embed(params: Params, pixel_values: jax.Array, vision: vit.VitConfig, geo: Geometry,
          compute_dtype: Any = None) -> jax.Array:
  """Patch + class + position embeddings after `pre_layrnorm` (`h_0`).

  Args:
    params: tower parameters.
    pixel_values: `[B, C, H, W]` from the model's image processor; H = W = `geo.image_size`.
    vision: the encoder config.
    geo: the tower's geometry.
    compute_dtype: activation dtype (default: the patch kernel's dtype).

  Returns:
    `[B, 1 + N, D]`.
  """
  want = (geo.num_channels, geo.image_size, geo.image_size)
  if tuple(pixel_values.shape[1:]) != want:
    raise errors.ConfigError(f"pixel_values have shape {tuple(pixel_values.shape)}, the vision "
                             f"tower takes [batch, {want[0]}, {want[1]}, {want[2]}]")
  e = params["embeddings"]
  dtype = compute_dtype or getattr(e["patch_embedding"]["kernel"], "dtype", jnp.float32)
  patches = vit.embed_patches(e["patch_embedding"], pixel_values, geo.patch_size, dtype)
  B = patches.shape[0]
  cls = jnp.broadcast_to(e["class_embedding"].astype(dtype), (B, 1, vision.hidden_size))
  x = jnp.concatenate([cls, patches.astype(dtype)], axis=1)
  x = x + e["position_embedding"]["embedding"].astype(dtype)[None]
  return vit.layer_norm(x, params["pre_layrnorm"], vision.layer_norm_eps)


def hidden_states(params: Params, pixel_values: jax.Array, vision: vit.VitConfig,
                  geo: Geometry, layers: Sequence[int], compute_dtype: Any = None
                  ) -> list[jax.Array]:
  """The tower's hidden states at the requested `layers` (Hugging Face indexing: 0 is the
  embeddings, -1 the last layer, -2 the penultimate), running no layer past the deepest one.

  Returns:
    one `[B, 1 + N, D]` array per entry of `layers`, in that order.
  """
  L = vision.num_layers
  depths = []
  for i in layers:
    d = i + L + 1 if i < 0 else i
    if not 0 <= d <= L:
      raise errors.ConfigError(f"vision feature layer {i} is out of range for a tower of {L} "
                               "layers")
    depths.append(d)
  h = embed(params, pixel_values, vision, geo, compute_dtype)
  states = {0: h}
  done = 0
  for d in sorted(set(depths) - {0}):
    part = jax.tree.map(lambda a, lo=done, hi=d: a[lo:hi], params["encoder"])
    h = vit.encode(part, h, vision, num_layers=d - done)
    states[d] = h
    done = d
  return [states[d] for d in depths]
