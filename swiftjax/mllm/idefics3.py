"""SmolVLM / Idefics3 (`Idefics3ForConditionalGeneration`): SigLIP tower, pixel-shuffle
connector, image splitting, Llama language model.

  sub-images  the image processor resizes each image, cuts it into `rows x cols` squares of
              `max_image_size` plus one global view (or only the global view when it fits)
  features    siglip.apply -> pixel_shuffle(scale_factor) -> proj (no bias)   per sub-image
              [n_sub, (n/s)^2, D_text], n = image_size // patch_size, s = scale_factor
  text        every image becomes
                <fake_token_around_image><row_1_col_1><image>*L ... (a "\\n" after each row)
                "\\n"<fake_token_around_image><global-img><image>*L<fake_token_around_image>
              (L = image_seq_len); the image tokens take the features in order.

Parameters: `{"vision": siglip tower, "projector": {"proj": {"kernel": [D_v*s*s, D_text]}},
"language_model": decoder params}`.

Padding sub-images (all-zero pixels: the processor pads each sample to the batch's largest
sub-image count) are dropped before the tower, as transformers does: on the host when the
pixels are concrete, so the tower runs on exactly the real sub-images (one compile per count);
under `jax.jit` they are moved behind the real ones instead (static shapes), and the extra
features are never gathered because only as many as there are image tokens are used.
"""

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.linear import linear
from swiftjax.mllm import checkpoint
from swiftjax.mllm import inputs
from swiftjax.mllm import siglip
from swiftjax.mllm import vit
from swiftjax.models import decoder
from swiftjax.models import safetensors_loader
from swiftjax.models.config import ModelConfig

Params = dict[str, Any]

MODEL_TYPES = ("idefics3",)

# Defaults of transformers' Idefics3VisionConfig / Idefics3Config for keys a config.json omits.
_VISION_DEFAULTS = dict(hidden_size=1152, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=16, num_channels=3, image_size=224, patch_size=32,
                        hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)

# Where each part's tensors live, most common first: transformers 4.46+ and 5.x and the
# published SmolVLM / Idefics3 checkpoints use the first; the others are the layouts other
# tools write (ms-swift-style `language_model` renames, a bare `Idefics3Model`).
_VISION_PREFIXES = ("model.vision_model.", "model.vision_tower.", "vision_model.")
_CONNECTOR_PREFIXES = ("model.connector.", "model.multi_modal_projector.", "connector.")
_TEXT_PREFIXES = ("model.text_model.", "model.language_model.", "text_model.",
                  "language_model.model.")
_HEAD_NAMES = ("lm_head.weight", "language_model.lm_head.weight")
_PATCH_KERNEL = ("vision", "embeddings", "patch_embedding", "kernel")


@dataclasses.dataclass(frozen=True)
class Config:
  """An Idefics3 model (hashable: a static jit argument).

  Attributes:
    text: the Llama language model.
    vision: the SigLIP encoder stack.
    patches: patch geometry of the tower (`image_size`, `patch_size`, `num_channels`).
    scale_factor: pixel-shuffle factor `s` (features per sub-image shrink by `s*s`).
    image_token_id: id of `<image>`.
  """
  text: ModelConfig
  vision: vit.VitConfig
  patches: siglip.PatchConfig
  scale_factor: int = 2
  image_token_id: int = 128257

  def __post_init__(self):
    n = self.patches.num_patches_per_side
    if self.scale_factor <= 0 or n % self.scale_factor:
      raise errors.ConfigError(f"scale_factor {self.scale_factor} does not divide the "
                               f"{n} patches per side (image_size // patch_size)")

  @property
  def image_seq_len(self) -> int:
    """Image tokens (features) per sub-image."""
    return (self.patches.num_patches_per_side // self.scale_factor) ** 2

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], where: str = "config.json") -> "Config":
    """From the composite `config.json` of `Idefics3ForConditionalGeneration`."""
    if d.get("model_type") not in MODEL_TYPES:
      raise errors.ConfigError(f"{where}: model_type {d.get('model_type')!r} is not an "
                               f"Idefics3 model (expected one of {MODEL_TYPES})")
    t = dict(d.get("text_config") or {})
    t.setdefault("model_type", "llama")
    t.setdefault("rms_norm_eps", 1e-5)  # Idefics3Config's default for its text model
    if "tie_word_embeddings" in d:  # transformers 5 ties by the top-level flag
      t["tie_word_embeddings"] = d["tie_word_embeddings"]
    v = {**_VISION_DEFAULTS, **(d.get("vision_config") or {})}
    try:
      text = ModelConfig.from_hf_dict(t)
      vision = vit.VitConfig(
          hidden_size=int(v["hidden_size"]), intermediate_size=int(v["intermediate_size"]),
          num_layers=int(v["num_hidden_layers"]), num_heads=int(v["num_attention_heads"]),
          layer_norm_eps=float(v["layer_norm_eps"]), activation=v["hidden_act"])
      patches = siglip.PatchConfig(image_size=_side(v["image_size"]),
                                   patch_size=_side(v["patch_size"]),
                                   num_channels=int(v["num_channels"]))
      return cls(text=text, vision=vision, patches=patches,
                 scale_factor=int(d.get("scale_factor", 2)),
                 image_token_id=int(d.get("image_token_id", 128257)))
    except errors.ConfigError as e:
      raise errors.ConfigError(f"{where}: {e}") from None
    except (ValueError, TypeError, KeyError) as e:
      raise errors.ConfigError(f"{where}: invalid Idefics3 config: {e}") from None


def _side(x) -> int:
  if isinstance(x, (list, tuple)):
    if len(set(x)) != 1:
      raise ValueError(f"non-square size {x} is not supported")
    x = x[0]
  return int(x)


def read_config(directory: str | pathlib.Path) -> Config:
  """Reads `config.json` of a checkpoint directory."""
  d, path = safetensors_loader.read_config_json(directory)
  return Config.from_hf_dict(d, where=str(path))


# --------------------------------------------------------------------------- parameters


def _projector_dims(cfg: Config) -> tuple[int, int]:
  return cfg.vision.hidden_size * cfg.scale_factor ** 2, cfg.text.hidden_size


def param_axes(cfg: Config) -> Params:
  """Logical axis names of every parameter."""
  return {"vision": siglip.param_axes(cfg.vision, cfg.patches),
          "projector": {"proj": {"kernel": ("mlp", "embed")}},
          "language_model": decoder.param_axes(cfg.text)}


def param_shapes(cfg: Config, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter."""
  return {"vision": siglip.param_shapes(cfg.vision, cfg.patches, dtype),
          "projector": {"proj": {"kernel": jax.ShapeDtypeStruct(_projector_dims(cfg), dtype)}},
          "language_model": decoder.param_shapes(cfg.text, dtype)}


def init(cfg: Config, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random parameters (normal std 0.02 kernels, identity norms, zero biases)."""
  kv, kp, kt = jax.random.split(rng, 3)
  proj = 0.02 * jax.random.normal(kp, _projector_dims(cfg), jnp.float32)
  return {"vision": siglip.init(cfg.vision, cfg.patches, kv, dtype),
          "projector": {"proj": {"kernel": proj.astype(dtype)}},
          "language_model": decoder.init(cfg.text, kt, dtype)}


def hf_tensor_names(cfg: Config, files: dict[str, pathlib.Path], directory: Any = ""
                    ) -> tuple[dict[str, tuple[tuple[str, ...], int | None, bool]], str, bool]:
  """The table from the tensor names present in `files` to our parameter paths.

  Returns:
    `(table, patch_kernel_name, tied)`: the table covers every tensor except the patch
    convolution (named separately, it needs a reshape); `tied` is True when the checkpoint has
    no LM head (the head is the embedding table).
  """
  vision = checkpoint.find_prefix(files, "embeddings.patch_embedding.weight", directory,
                                  "vision tower", candidates=_VISION_PREFIXES)
  connector = checkpoint.find_prefix(files, "modality_projection.proj.weight", directory,
                                     "connector", candidates=_CONNECTOR_PREFIXES)
  text = checkpoint.find_prefix(files, "embed_tokens.weight", directory, "language model",
                                candidates=_TEXT_PREFIXES)
  head = next((h for h in _HEAD_NAMES if h in files), None)
  table = {f"{connector}modality_projection.proj.weight": (("projector", "proj", "kernel"),
                                                          None, True)}
  for name, (path, layer, transpose) in siglip.hf_tensor_names(cfg.vision, vision).items():
    table[name] = (("vision",) + path, layer, transpose)
  table.update(checkpoint.language_model_names(
      dataclasses.replace(cfg.text, tie_word_embeddings=head is None), text, head))
  return table, siglip.patch_kernel_name(vision), head is None


def load(directory: str | pathlib.Path, dtype: Any = jnp.float32,
         shardings: Any = None) -> tuple[Config, Params]:
  """Reads a Hugging Face Idefics3 / SmolVLM safetensors directory into `(cfg, params)`.

  Tensor names are detected (see `hf_tensor_names`); without an LM head tensor the embeddings
  are tied (`cfg.text.tie_word_embeddings` is set accordingly).

  Args:
    directory: holds `config.json` and `*.safetensors`.
    dtype: parameter dtype.
    shardings: optional tree of `NamedSharding` like `param_shapes(cfg)`.

  Raises:
    CheckpointError: missing files or tensors (named), shape mismatches.
    ConfigError: not an Idefics3 config.
  """
  directory = pathlib.Path(directory)
  cfg = read_config(directory)
  files = safetensors_loader.tensor_files(directory)
  table, conv_name, tied = hf_tensor_names(cfg, files, directory)
  cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, tie_word_embeddings=tied))
  params = safetensors_loader.read_tensors(directory, table, param_shapes(cfg, dtype), dtype,
                                           shardings, files)
  D, (C, p) = cfg.vision.hidden_size, (cfg.patches.num_channels, cfg.patches.patch_size)
  params["vision"]["embeddings"]["patch_embedding"]["kernel"] = vit.read_patch_kernel(
      directory, conv_name, (D, C, p, p), dtype, shardings, _PATCH_KERNEL, files)
  return cfg, params


# --------------------------------------------------------------------------- the model


def pixel_shuffle(x: jax.Array, scale_factor: int) -> jax.Array:
  """Idefics3's space-to-depth: `[M, n*n, D]` -> `[M, (n/s)^2, D*s*s]`, in transformers' order
  (each output vector concatenates an `s x s` block of neighbouring patches)."""
  M, seq, D = x.shape
  n = int(round(seq ** 0.5))
  s = scale_factor
  if n * n != seq or n % s:
    raise errors.ConfigError(f"pixel shuffle needs a square patch grid divisible by "
                             f"{s}; got {seq} patches")
  x = x.reshape(M, n, n // s, D * s)
  x = x.transpose(0, 2, 1, 3).reshape(M, n // s, n // s, D * s * s)
  return x.transpose(0, 2, 1, 3).reshape(M, seq // (s * s), D * s * s)


def _features(params: Params, pixel_values: jax.Array, patch_mask: jax.Array | None,
              cfg: Config, compute_dtype: Any) -> jax.Array:
  hidden = siglip.apply(params["vision"], pixel_values, cfg.vision, cfg.patches,
                        patch_mask=patch_mask, compute_dtype=compute_dtype)
  x = pixel_shuffle(hidden, cfg.scale_factor)
  x = linear(x, params["projector"]["proj"]["kernel"], x.dtype)
  return x.reshape(-1, x.shape[-1])


_features_jit = jax.jit(_features, static_argnames=("cfg", "compute_dtype"))


def _concrete(x) -> np.ndarray | None:
  try:
    return np.asarray(x)
  except jax.errors.TracerArrayConversionError:
    return None


def encode_images(params: Params, cfg: Config, pixel_values: Any,
                  pixel_attention_mask: Any = None, rows: Any = None, cols: Any = None, *,
                  compute_dtype: Any = None) -> jax.Array:
  """Features for the image tokens, in order.

  Args:
    params: model parameters.
    cfg: model config.
    pixel_values: `[B, n_sub, C, H, W]` (the processor's batch) or `[n_sub, C, H, W]`
      (`preprocess_images`); all-zero sub-images are padding and are dropped.
    pixel_attention_mask: `[B, n_sub, H, W]` or `[n_sub, H, W]` (all valid when absent).
    rows, cols: the split grid of each image (used by `image_text`, ignored here).
    compute_dtype: activation dtype (default: the parameters' dtype).

  Returns:
    `[N, D_text]`: with concrete inputs `N = real sub-images * image_seq_len`, exactly the
    image tokens' count. Under jit `N` counts padding sub-images too; their features come last.
  """
  del rows, cols
  C, H, W = pixel_values.shape[-3:]
  pv = _concrete(pixel_values)
  pm = None if pixel_attention_mask is None else _concrete(pixel_attention_mask)
  if pv is not None and (pixel_attention_mask is None or pm is not None):
    pv = pv.reshape(-1, C, H, W)
    real = np.any(pv != 0, axis=(1, 2, 3))
    pv = pv[real]
    patch_mask = None
    if pm is not None:
      pm = pm.reshape(-1, H, W)[real]
      patch_mask = np.asarray(siglip.patch_attention_mask(pm, cfg.patches.patch_size))
      if patch_mask.all():
        patch_mask = None
    if not len(pv):
      return jnp.zeros((0, cfg.text.hidden_size), compute_dtype or jnp.float32)
    return _features_jit(params, jnp.asarray(pv), patch_mask, cfg, compute_dtype)
  pixel_values = jnp.reshape(pixel_values, (-1, C, H, W))
  if pixel_attention_mask is None:
    pixel_attention_mask = jnp.ones((pixel_values.shape[0], H, W), bool)
  pixel_attention_mask = jnp.reshape(pixel_attention_mask, (-1, H, W))
  real = jnp.any(pixel_values != 0, axis=(1, 2, 3))
  order = jnp.argsort(~real, stable=True)  # real sub-images first, in their order
  patch_mask = siglip.patch_attention_mask(pixel_attention_mask[order], cfg.patches.patch_size)
  return _features(params, pixel_values[order], patch_mask, cfg, compute_dtype)


def apply(params: Params, input_ids: jax.Array, cfg: Config, *,
          image_inputs: dict[str, Any] | None = None, mask: jax.Array | None = None,
          positions: jax.Array | None = None, cache: decoder.Cache | None = None,
          compute_dtype: Any = None, last_only: bool = False,
          segment_ids: jax.Array | None = None) -> tuple[jax.Array, decoder.Cache | None]:
  """Runs the model: image features replace the `<image>` token embeddings, then the decoder.

  Args:
    params: model parameters.
    input_ids: `[B, T]` tokens with the processor's image-token expansion.
    cfg: model config.
    image_inputs: `encode_images` keyword arguments (`preprocess_images`' output or the
      processor's `pixel_values` / `pixel_attention_mask`); `None` for text only (and for the
      decoding steps after a prefill with images).
    mask, positions, cache, compute_dtype, last_only, segment_ids: as `decoder.apply`
      (`segment_ids` with per-sample `positions` for packed rows).

  Returns:
    `(logits [B, T, V] float32, cache)`.

  Raises:
    ConfigError: (concrete inputs) image tokens and features do not pair up.
  """
  lm = params["language_model"]
  embeds = decoder.embed(lm, input_ids)
  if image_inputs:
    features = encode_images(params, cfg, **image_inputs, compute_dtype=compute_dtype)
    ids = _concrete(input_ids)
    if ids is not None and not isinstance(features, jax.core.Tracer):
      inputs.check_feature_count(ids, cfg.image_token_id, features.shape[0])
    if features.shape[0]:
      embeds = inputs.merge_image_features(embeds, input_ids, cfg.image_token_id, features)
  return decoder.apply(lm, None, cfg.text, embeds=embeds, mask=mask, positions=positions,
                       cache=cache, compute_dtype=compute_dtype, last_only=last_only,
                       segment_ids=segment_ids)


# --------------------------------------------------------------------------- processing


def preprocess_images(processor: Any, images: list[Any]) -> dict[str, np.ndarray]:
  """Runs the model's own image processor on one sample's images.

  Args:
    processor: an `Idefics3Processor` (or its image processor).
    images: PIL images, in placeholder order.

  Returns:
    `pixel_values [n_sub, C, H, W]` float32 (every image's sub-images then its global view,
    image after image), `pixel_attention_mask [n_sub, H, W]` bool, `rows [n_images]`,
    `cols [n_images]` int32 (the split grid; 0, 0 for an unsplit image). Samples batch by
    concatenating every entry along axis 0.
  """
  ip = getattr(processor, "image_processor", processor)
  out = ip([list(images)], return_row_col_info=True, return_tensors="np")
  pv = np.asarray(out["pixel_values"], np.float32)
  pv = pv.reshape(-1, *pv.shape[-3:])
  if "pixel_attention_mask" in out:
    pm = np.asarray(out["pixel_attention_mask"]).reshape(-1, *pv.shape[-2:]).astype(bool)
  else:
    pm = np.ones((pv.shape[0], *pv.shape[-2:]), bool)
  real = np.any(pv != 0, axis=(1, 2, 3))
  return {"pixel_values": pv[real], "pixel_attention_mask": pm[real],
          "rows": np.asarray(out["rows"], np.int32).reshape(-1),
          "cols": np.asarray(out["cols"], np.int32).reshape(-1)}


def image_text(processor: Any, image_inputs: dict[str, Any], index: int) -> str:
  """The text that replaces the `index`-th `<image>` placeholder, as `Idefics3Processor` builds
  it from that image's split grid (`rows`, `cols` of `preprocess_images`)."""
  rows = np.asarray(image_inputs["rows"]).reshape(-1)
  cols = np.asarray(image_inputs["cols"]).reshape(-1)
  if not 0 <= index < len(rows):
    raise errors.ConfigError(f"image index {index} is out of range: the image inputs hold "
                             f"{len(rows)} image(s)")
  fake = getattr(processor, "fake_image_token", "<fake_token_around_image>")
  image = getattr(processor, "image_token", "<image>")
  global_tag = getattr(processor, "global_image_tag", "<global-img>")
  seq_len = getattr(processor, "image_seq_len", None)
  if seq_len is None:
    raise errors.ConfigError(f"{type(processor).__name__} has no image_seq_len: image_text "
                             "needs the model's Idefics3Processor (AutoProcessor)")
  run = image * int(seq_len)
  glob = f"{fake}{global_tag}{run}{fake}"
  r, c = int(rows[index]), int(cols[index])
  if r == 0 and c == 0:
    return glob
  text = ""
  for i in range(r):
    for j in range(c):
      text += f"{fake}<row_{i + 1}_col_{j + 1}>{run}"
    text += "\n"
  return text + "\n" + glob
