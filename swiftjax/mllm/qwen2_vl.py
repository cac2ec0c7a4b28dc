"""Qwen2-VL (transformers' `Qwen2VLForConditionalGeneration`) as pure functions.

  patches    = pixel_values @ patch_kernel          [N, E]   N patches of all images, in order
  h          = ViT blocks (`vit.encode`): fused qkv, 2D RoPE over (row, column), attention
               within each image (frame), quick_gelu, LayerNorm eps 1e-6
  features   = fc2(gelu(fc1(ln_q(h) viewed [N / m^2, E * m^2])))        [N / m^2, D]
  logits     = Qwen2 decoder over the token embeddings with image tokens replaced by the
               features, rotated by multimodal RoPE (M-RoPE): positions `[3, B, T]`

Dynamic resolution: every image keeps (about) its aspect ratio and is cut into its own
`t x h x w` grid of patches (`image_grid_thw`). The processor has already flattened each
patch (channels x temporal_patch_size x patch x patch, the Conv3d weight's order) and ordered
the patches in `m x m` merge windows (m = `spatial_merge_size`), so the patch embedding is one
matmul and the merger's window is `m^2` consecutive patches.

M-RoPE: a text token has the same position on all three axes, counting on from the previous
token; an image's tokens sit at `start + (t, row, column)` of the merged grid, and the text
after it continues at `start + max(rows, columns)`. Generation with a cache continues from
the largest position + 1 (`cache["next_pos"]`, Hugging Face's position + `rope_deltas`).

Parameters (top level fixed for every MLLM family):

  vision/patch_embed/kernel         [C*tp*p*p, E]   (Hugging Face `[E, C, tp, p, p]`, flattened)
  vision/encoder/...                `vit.py`'s layer stack
  projector/ln_q/{scale,bias}       [E]
  projector/fc1/{kernel,bias}       [E*m^2, E*m^2], [E*m^2]
  projector/fc2/{kernel,bias}       [E*m^2, D], [D]
  language_model/...                `decoder.py`'s tree
"""

import dataclasses
import pathlib
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.linear import linear
from swiftjax.mllm import checkpoint
from swiftjax.mllm import inputs
from swiftjax.mllm import vit
from swiftjax.models import decoder
from swiftjax.models import safetensors_loader
from swiftjax.models.config import ModelConfig

Params = dict[str, Any]

# Hugging Face module names inside one vision block.
VISION_NAMES = {"layer_norm1": "norm1", "layer_norm2": "norm2", "qkv": "attn.qkv",
                "o_proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
PATCH_KERNEL = ("vision", "patch_embed", "kernel")
IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
# Hugging Face's default when a config names no sections (Qwen2-VL's head_dim 128).
DEFAULT_MROPE_SECTION = (16, 24, 24)
MERGER_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Config:
  """A Qwen2-VL model: language model, vision encoder and the geometry between them."""
  text: ModelConfig
  vision: vit.VitConfig
  image_token_id: int = 151655
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  patch_size: int = 14
  temporal_patch_size: int = 2
  in_channels: int = 3
  spatial_merge_size: int = 2
  vision_rope_theta: float = 10000.0

  def __post_init__(self):
    if self.text.mrope_section is None:
      raise errors.ConfigError("the Qwen2-VL language model needs mrope_section")
    if self.vision.head_dim % 4:
      raise errors.ConfigError(f"vision head_dim {self.vision.head_dim} is not a multiple of 4 "
                               "(2D RoPE splits it over rows and columns)")

  @property
  def patch_dim(self) -> int:
    """Width of one flattened patch: channels x temporal_patch_size x patch x patch."""
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merged_dim(self) -> int:
    """Width of one merge window, the merger's input: E x m^2."""
    return self.vision.hidden_size * self.spatial_merge_size ** 2

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], where: Any = "config.json") -> "Config":
    """From the composite `config.json`: transformers >= 5 nest the language model under
    `text_config` (with `rope_parameters`); published checkpoints keep its keys at the top level
    (with `rope_scaling: {type: mrope, mrope_section}`). Both are read."""
    if d.get("model_type") not in ("qwen2_vl", None):
      raise errors.ConfigError(f"{where}: model_type {d.get('model_type')!r} is not qwen2_vl")
    nested = d.get("text_config") or {}
    text = {k: v for k, v in d.items() if k not in ("text_config", "vision_config")}
    text.update(nested)
    text["model_type"] = "qwen2"
    text["tie_word_embeddings"] = bool(d.get("tie_word_embeddings")
                                       or nested.get("tie_word_embeddings"))
    v = d.get("vision_config") or {}
    try:
      text_cfg = ModelConfig.from_hf_dict(text)
      if text_cfg.mrope_section is None:
        text_cfg = dataclasses.replace(text_cfg, mrope_section=DEFAULT_MROPE_SECTION)
      embed_dim = int(v.get("embed_dim", 1280))
      vision = vit.VitConfig(
          hidden_size=embed_dim,
          intermediate_size=int(embed_dim * float(v.get("mlp_ratio", 4))),
          num_layers=int(v.get("depth", 32)),
          num_heads=int(v.get("num_heads", 16)),
          layer_norm_eps=1e-6,
          activation=v.get("hidden_act", "quick_gelu"),
          fused_qkv=True)
      merged_out = int(v.get("hidden_size", text_cfg.hidden_size))
      if merged_out != text_cfg.hidden_size:
        raise errors.ConfigError(
            f"vision_config.hidden_size {merged_out} differs from the language model's "
            f"hidden_size {text_cfg.hidden_size}")
      return cls(
          text=text_cfg, vision=vision,
          image_token_id=int(d.get("image_token_id", 151655)),
          vision_start_token_id=int(d.get("vision_start_token_id", 151652)),
          vision_end_token_id=int(d.get("vision_end_token_id", 151653)),
          patch_size=int(v.get("patch_size", 14)),
          temporal_patch_size=int(v.get("temporal_patch_size", 2)),
          in_channels=int(v.get("in_channels", v.get("in_chans", 3))),
          spatial_merge_size=int(v.get("spatial_merge_size", 2)),
          vision_rope_theta=float((v.get("rope_parameters") or {}).get(
              "rope_theta", v.get("rope_theta", 10000.0))))
    except (ValueError, TypeError, errors.ConfigError) as e:
      raise errors.ConfigError(f"{where}: {e}") from None


def read_config(directory: str | pathlib.Path) -> Config:
  """Reads `config.json` of a Qwen2-VL checkpoint directory."""
  d, path = safetensors_loader.read_config_json(directory)
  return Config.from_hf_dict(d, path)


# ----------------------------------------------------------------------------- parameters

def _spec(cfg: Config) -> decoder.Spec:
  """Patch embedding and merger parameters: path -> (shape, logical axes, init kind)."""
  E, M, D = cfg.vision.hidden_size, cfg.merged_dim, cfg.text.hidden_size
  return {
      PATCH_KERNEL: ((cfg.patch_dim, E), ("patch", "embed"), "normal"),
      ("projector", "ln_q", "scale"): ((E,), ("norm",), "ones"),
      ("projector", "ln_q", "bias"): ((E,), ("norm",), "zeros"),
      ("projector", "fc1", "kernel"): ((M, M), ("embed", "mlp"), "normal"),
      ("projector", "fc1", "bias"): ((M,), ("mlp",), "zeros"),
      ("projector", "fc2", "kernel"): ((M, D), ("mlp", "embed"), "normal"),
      ("projector", "fc2", "bias"): ((D,), ("embed",), "zeros"),
  }


def _assemble(own: Params, encoder: Params, language_model: Params) -> Params:
  own["vision"]["encoder"] = encoder
  own["language_model"] = language_model
  return own


def param_axes(cfg: Config) -> Params:
  """Logical axis names of every parameter."""
  own = decoder.axes_from_spec(_spec(cfg))
  return _assemble(own, vit.param_axes(cfg.vision), decoder.param_axes(cfg.text))


def param_shapes(cfg: Config, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter."""
  own = decoder.shapes_from_spec(_spec(cfg), dtype)
  return _assemble(own, vit.param_shapes(cfg.vision, dtype), decoder.param_shapes(cfg.text, dtype))


def init(cfg: Config, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random parameters (normal, std 0.02; LayerNorms identity, biases zero)."""
  spec = _spec(cfg)
  keys = jax.random.split(rng, len(spec) + 2)
  return _assemble(decoder.init_from_spec(spec, keys[2:], dtype),
                   vit.init(cfg.vision, keys[0], dtype),
                   decoder.init(cfg.text, keys[1], dtype))


# ----------------------------------------------------------------------------- loading

# Vision prefix -> language-model prefix: transformers >= 5 module names, then published
# checkpoints (and transformers' save_pretrained).
_NAMINGS = {"model.visual.": "model.language_model.", "visual.": "model."}
_PATCH_CONV = "patch_embed.proj.weight"


def hf_tensor_names(cfg: Config, vision_prefix: str = "visual.", lm_prefix: str = "model."
                    ) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Hugging Face tensor names -> `(param path, layer, transpose)` of every tensor but the
  patch kernel (a 5-D convolution weight: see `load`).

  Args:
    cfg: the model config.
    vision_prefix: `visual.` (published checkpoints) or `model.visual.` (transformers 5).
    lm_prefix: `model.` (published) or `model.language_model.` (transformers 5); the LM head
      is `lm_head.weight` in both.
  """
  table = checkpoint.language_model_names(cfg.text, lm_prefix)
  for name, (path, layer, t) in vit.hf_tensor_names(cfg.vision, f"{vision_prefix}blocks",
                                                    VISION_NAMES).items():
    table[name] = (("vision", "encoder") + path, layer, t)
  merger = f"{vision_prefix}merger."
  for ours, theirs in (("ln_q", "ln_q"), ("fc1", "mlp.0"), ("fc2", "mlp.2")):
    weight = "scale" if ours == "ln_q" else "kernel"
    table[f"{merger}{theirs}.weight"] = (("projector", ours, weight), None, weight == "kernel")
    table[f"{merger}{theirs}.bias"] = (("projector", ours, "bias"), None, False)
  return table


def load(directory: str | pathlib.Path, dtype: Any = jnp.float32,
         shardings: Any = None) -> tuple[Config, Params]:
  """Reads a Hugging Face Qwen2-VL directory (`config.json` + safetensors) into
  `(config, params)`, with either naming scheme (detected).

  Raises:
    CheckpointError: missing files or tensors (named), shape mismatches.
    ConfigError: an unsupported config.
  """
  directory = pathlib.Path(directory)
  cfg = read_config(directory)
  files = safetensors_loader.tensor_files(directory)
  vision_prefix = checkpoint.find_prefix(files, _PATCH_CONV, directory, "Qwen2-VL vision",
                                         candidates=tuple(_NAMINGS))
  params = safetensors_loader.read_tensors(
      directory, hf_tensor_names(cfg, vision_prefix, _NAMINGS[vision_prefix]),
      param_shapes(cfg, dtype), dtype, shardings, files)
  # The Conv3d weight `[E, C, tp, p, p]` flattens in the processor's patch order.
  conv = (cfg.vision.hidden_size, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size,
          cfg.patch_size)
  params["vision"]["patch_embed"] = {"kernel": vit.read_patch_kernel(
      directory, vision_prefix + _PATCH_CONV, conv, dtype, shardings, PATCH_KERNEL, files)}
  return cfg, params


# ----------------------------------------------------------------------------- vision side

def _grid(image_grid_thw: Any) -> jax.Array:
  grid = jnp.asarray(image_grid_thw, jnp.int32)
  if grid.ndim != 2 or grid.shape[1] != 3:
    raise errors.ConfigError(f"image_grid_thw must be [images, 3], got shape {grid.shape}")
  return grid


def patch_layout(image_grid_thw: Any, num_patches: int, merge: int
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Where each of the `num_patches` processor patches sits in its image (jit-friendly).

  Args:
    image_grid_thw: `[I, 3]` (temporal, rows, columns) patches per image.
    num_patches: N = sum of `t * h * w` (the rows of `pixel_values`).
    merge: spatial_merge_size m; the processor orders each image's patches by `m x m` window.

  Returns:
    `(rows [N], columns [N], segments [N])`: the patch's row and column in its image and the
    attention segment (one per image frame, Hugging Face's `cu_seqlens`).
  """
  grid = _grid(image_grid_thw)
  t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
  sizes = t * h * w
  ends = jnp.cumsum(sizes)
  j = jnp.arange(num_patches, dtype=jnp.int32)
  img = jnp.minimum(jnp.searchsorted(ends, j, side="right"), grid.shape[0] - 1)
  local = j - (ends - sizes)[img]
  hh, ww = h[img], w[img]
  frame, r = local // (hh * ww), local % (hh * ww)
  window, inner = r // (merge * merge), r % (merge * merge)
  rows = (window // (ww // merge)) * merge + inner // merge
  cols = (window % (ww // merge)) * merge + inner % merge
  segments = (jnp.cumsum(t) - t)[img] + frame
  return rows, cols, segments


def vision_rope_angles(rows: jax.Array, cols: jax.Array, cfg: Config) -> jax.Array:
  """2D RoPE angles `[N, head_dim // 2]`: a quarter of the head turns with the row, a quarter
  with the column (then both repeated over the halves, inside `vit.encode`)."""
  quarter = cfg.vision.head_dim // 2
  inv_freq = 1.0 / (cfg.vision_rope_theta ** (
      jnp.arange(0, quarter, 2, dtype=jnp.float32) / quarter))
  return jnp.concatenate([rows[:, None].astype(jnp.float32) * inv_freq,
                          cols[:, None].astype(jnp.float32) * inv_freq], axis=-1)


def encode_images(params: Params, cfg: Config, pixel_values: jax.Array,
                  image_grid_thw: Any, compute_dtype: Any = None) -> jax.Array:
  """Image features for the language model.

  Args:
    params: the full model parameters (`vision` and `projector` are used).
    cfg: the model config.
    pixel_values: `[N, C*tp*p*p]` flattened patches of all images (`preprocess_images`).
    image_grid_thw: `[I, 3]` patches per image (temporal, rows, columns).
    compute_dtype: activation dtype (default: the patch kernel's dtype).

  Returns:
    `[N / m^2, D_text]`: one feature per image token, images in order.
  """
  kernel = params["vision"]["patch_embed"]["kernel"]
  dtype = compute_dtype or getattr(kernel, "dtype", jnp.float32)
  N = pixel_values.shape[0]
  m2 = cfg.spatial_merge_size ** 2
  if pixel_values.ndim != 2 or pixel_values.shape[1] != cfg.patch_dim or N % m2:
    raise errors.ConfigError(
        f"pixel_values have shape {tuple(pixel_values.shape)}; the vision tower takes "
        f"[patches (a multiple of {m2}), {cfg.patch_dim}] from the Qwen2-VL image processor")
  if not isinstance(image_grid_thw, jax.core.Tracer):
    total = int(np.prod(np.asarray(image_grid_thw), axis=-1).sum())
    if total != N:
      raise errors.ConfigError(f"image_grid_thw accounts for {total} patches but pixel_values "
                               f"has {N}")
  rows, cols, segments = patch_layout(image_grid_thw, N, cfg.spatial_merge_size)
  x = linear(jnp.asarray(pixel_values).astype(dtype), kernel, dtype)
  h = vit.encode(params["vision"]["encoder"], x[None], cfg.vision, segment_ids=segments[None],
                 rope_angles=vision_rope_angles(rows, cols, cfg)[None], compute_dtype=dtype)[0]
  p = params["projector"]
  y = vit.layer_norm(h, p["ln_q"], MERGER_EPS).reshape(N // m2, cfg.merged_dim)
  y = linear(y, p["fc1"]["kernel"], dtype) + p["fc1"]["bias"].astype(dtype)
  y = jax.nn.gelu(y, approximate=False)
  return linear(y, p["fc2"]["kernel"], dtype) + p["fc2"]["bias"].astype(dtype)


# ----------------------------------------------------------------------------- M-RoPE

def rope_index(input_ids: jax.Array, image_grid_thw: Any, cfg: Config,
               mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Multimodal RoPE positions, as transformers' `Qwen2VLModel.get_rope_index` (jit-friendly).

  Text tokens count up by one on all three axes; the tokens of an image with a merged grid of
  `t x h x w` sit at `start + (t_i, h_i, w_i)`, and the next text token at
  `start + max(h, w)`. Padding (mask False) is skipped and gets position 0.

  Args:
    input_ids: `[B, T]` token ids with every image already expanded to its image tokens.
    image_grid_thw: `[I, 3]` patch grids of the images in row-major order of appearance, or
      None for text only.
    cfg: the model config.
    mask: `[B, T]` bool, False on padding.

  Returns:
    `(positions [3, B, T] int32, rope_deltas [B] int32)`: `rope_deltas` = largest position + 1
    - number of real tokens, so a token appended after the `n`-th real one sits at
    `n + rope_deltas` (Hugging Face's decoding rule).
  """
  ids = jnp.asarray(input_ids)
  mask = jnp.ones(ids.shape, bool) if mask is None else jnp.asarray(mask, bool)
  valid = mask.astype(jnp.int32)
  if image_grid_thw is None or np.shape(image_grid_thw)[0] == 0:
    pos = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0) * valid
    positions = jnp.broadcast_to(pos[None], (3,) + ids.shape)
  else:
    grid = _grid(image_grid_thw)
    m = cfg.spatial_merge_size
    gt, gh, gw = grid[:, 0], grid[:, 1] // m, grid[:, 2] // m
    ntok = gt * gh * gw
    ends = jnp.cumsum(ntok)
    is_img = (ids == cfg.image_token_id) & mask
    count = (jnp.cumsum(is_img.reshape(-1)) - 1).reshape(ids.shape)  # image-token index
    img = jnp.clip(jnp.searchsorted(ends, count, side="right"), 0, grid.shape[0] - 1)
    local = count - (ends - ntok)[img]
    hb, wb = gh[img], gw[img]
    last = is_img & (local == ntok[img] - 1)
    step = jnp.where(is_img, jnp.where(last, jnp.maximum(hb, wb), 0), valid)
    start = jnp.cumsum(step, axis=1) - step  # position where the current run began
    offsets = jnp.stack([local // (hb * wb), (local // wb) % hb, local % wb])
    positions = (start[None] + jnp.where(is_img[None], offsets, 0)) * valid[None]
  top = jnp.max(jnp.where(mask[None], positions, -1), axis=(0, 2))
  deltas = top + 1 - jnp.sum(valid, axis=1)
  return positions.astype(jnp.int32), deltas.astype(jnp.int32)


# ----------------------------------------------------------------------------- the model

def apply(params: Params, input_ids: jax.Array, cfg: Config, *,
          image_inputs: dict | None = None, mask: jax.Array | None = None,
          positions: jax.Array | None = None, cache: decoder.Cache | None = None,
          compute_dtype: Any = None, last_only: bool = False
          ) -> tuple[jax.Array, decoder.Cache | None]:
  """Runs Qwen2-VL.

  Args:
    params: from `init` or `load`.
    input_ids: `[B, T]` with each image expanded to its image tokens (`image_text`).
    cfg: the model config.
    image_inputs: `{"pixel_values", "image_grid_thw"}` of the images in the batch, in order
      (`preprocess_images`); None for text only and for decoding steps after the prefill.
    mask: `[B, T]` bool, False on (left) padding.
    positions: `[3, B, T]` M-RoPE positions (or `[B, T]`, the same on all axes); by default
      `rope_index` when there are images, else counted over the mask from `cache["next_pos"]`.
    cache: KV cache from `decoder.init_cache(cfg.text, ...)`. After a call with 3D
      positions its `next_pos` is the largest position + 1, so text-only decoding steps
      continue as Hugging Face's `position + rope_deltas`.
    compute_dtype: activation dtype.
    last_only: logits of the last position only.

  Returns:
    `(logits [B, T, V] float32, updated cache or None)`.
  """
  lm = params["language_model"]
  embeds = decoder.embed(lm, input_ids)
  if image_inputs is not None:
    pixel_values = image_inputs["pixel_values"]
    grid = image_inputs["image_grid_thw"]
    n_features = pixel_values.shape[0] // cfg.spatial_merge_size ** 2
    if not isinstance(input_ids, jax.core.Tracer):
      inputs.check_feature_count(np.asarray(input_ids), cfg.image_token_id, n_features)
    features = encode_images(params, cfg, pixel_values, grid, compute_dtype)
    embeds = inputs.merge_image_features(embeds, input_ids, cfg.image_token_id, features)
    if positions is None:
      positions, _ = rope_index(input_ids, grid, cfg, mask)
      if cache is not None:  # continue after what the cache already holds
        positions = positions + cache["next_pos"][None, :, None]
  logits, new_cache = decoder.apply(lm, None, cfg.text, embeds=embeds, mask=mask,
                                    positions=positions, cache=cache,
                                    compute_dtype=compute_dtype, last_only=last_only)
  if new_cache is not None and positions is not None and positions.ndim == 3:
    real = jnp.ones(input_ids.shape, bool) if mask is None else mask
    top = jnp.max(jnp.where(real[None], positions, -1), axis=(0, 2))
    new_cache["next_pos"] = jnp.where(jnp.any(real, axis=1), top + 1,
                                      cache["next_pos"]).astype(jnp.int32)
  return logits, new_cache


# ----------------------------------------------------------------------------- processing

def _image_processor(processor: Any) -> Any:
  return getattr(processor, "image_processor", processor)


def preprocess_images(processor: Any, images: list) -> dict[str, np.ndarray]:
  """Pixel values of `images` by the model's own transformers image processor.

  Args:
    processor: the checkpoint's processor (`AutoProcessor`) or its image processor.
    images: PIL images, in the order their placeholders appear.

  Returns:
    `{"pixel_values": [N, C*tp*p*p] float32, "image_grid_thw": [I, 3] int64}`.
  """
  if not images:
    raise errors.ConfigError("preprocess_images needs at least one image")
  out = _image_processor(processor)(images=list(images), return_tensors="np")
  return {"pixel_values": np.asarray(out["pixel_values"], np.float32),
          "image_grid_thw": np.asarray(out["image_grid_thw"], np.int64)}


def num_image_tokens(processor: Any, image_inputs: dict, index: int) -> int:
  """Image tokens of the `index`-th image: its patches / merge_size^2."""
  grid = np.asarray(image_inputs["image_grid_thw"])
  if not 0 <= index < len(grid):
    raise errors.ConfigError(f"image {index} requested but the inputs hold {len(grid)} images")
  merge = int(_image_processor(processor).merge_size)
  return int(np.prod(grid[index])) // merge ** 2


def image_text(processor: Any, image_inputs: dict, index: int) -> str:
  """The text that replaces the `index`-th `<image>` placeholder: the chat template's
  `<|vision_start|><|image_pad|><|vision_end|>` with the pad expanded as the processor does."""
  pad = getattr(processor, "image_token", None) or IMAGE_PAD
  return VISION_START + pad * num_image_tokens(processor, image_inputs, index) + VISION_END


def load_processor(directory: str | pathlib.Path) -> Any:
  """The checkpoint's processor (`AutoProcessor`). transformers 5 builds Qwen2-VL's video
  processor with torchvision; without it this returns the parts images and text need: an
  object with `image_processor` (`AutoImageProcessor`, the PIL backend), `tokenizer`,
  `image_token` and `chat_template`."""
  import transformers  # pylint: disable=g-import-not-at-top
  try:
    processor = transformers.AutoProcessor.from_pretrained(str(directory))
  except ImportError:
    processor = None
  if hasattr(processor, "image_processor"):
    return processor
  # No processor config (AutoProcessor then gives the tokenizer), or no torchvision.
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  return types.SimpleNamespace(
      image_processor=transformers.AutoImageProcessor.from_pretrained(str(directory)),
      tokenizer=tokenizer, image_token=IMAGE_PAD,
      chat_template=getattr(tokenizer, "chat_template", None))
