"""LLaVA-1.5 (transformers' `LlavaForConditionalGeneration`, `model_type: llava`).

  image -> CLIP ViT (`clip.py`) -> hidden states of `vision_feature_layer` (default -2, the
  penultimate layer) -> drop the class token ("default" strategy; "full" keeps it) ->
  projector: linear_1 -> act (gelu) -> linear_2 -> one feature per image token.

The processor expands each `<image>` in the text to `num_image_tokens` copies of the image token;
`apply` swaps their embeddings for the features, in order, and runs the Llama decoder.

Parameters (top-level keys shared by every MLLM family):

  vision/...                          `clip.py` (embeddings, pre_layrnorm, encoder)
  projector/linear_1/{kernel,bias}    [Dv * len(feature layers), Dt], [Dt]
  projector/linear_2/{kernel,bias}    [Dt, Dt], [Dt]
  language_model/...                  `decoder.py`
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
from swiftjax.mllm import clip
from swiftjax.mllm import inputs
from swiftjax.mllm import vit
from swiftjax.models import decoder
from swiftjax.models import families
from swiftjax.models import safetensors_loader
from swiftjax.models.config import ModelConfig

Params = dict[str, Any]

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}

# transformers' defaults for keys an older composite config.json may leave out (published
# llava-hf configs list only what differs from these).
_LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, rms_norm_eps=1e-6,
                       max_position_embeddings=2048, model_type="llama")
_CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, image_size=224, patch_size=32,
                             num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5)


@dataclasses.dataclass(frozen=True)
class Config:
  """A LLaVA model (hashable: a static jit argument).

  Attributes:
    text: the language model.
    vision: the CLIP encoder stack.
    image_token_id: the token the processor repeats once per image feature.
    image_size, patch_size, num_channels: the CLIP tower's input geometry.
    vision_feature_layer: hidden-state index read from the tower (Hugging Face indexing: -2 is
      the penultimate layer, 0 the embeddings); a tuple concatenates several along features.
    vision_feature_select_strategy: "default" drops the class token, "full" keeps it.
    projector_hidden_act: the projector's activation.
    projector_bias: the projector's linears have biases (`multimodal_projector_bias`).
  """
  text: ModelConfig
  vision: vit.VitConfig
  image_token_id: int
  image_size: int = 336
  patch_size: int = 14
  num_channels: int = 3
  vision_feature_layer: int | tuple[int, ...] = -2
  vision_feature_select_strategy: str = "default"
  projector_hidden_act: str = "gelu"
  projector_bias: bool = True

  def __post_init__(self):
    if isinstance(self.vision_feature_layer, list):
      object.__setattr__(self, "vision_feature_layer", tuple(self.vision_feature_layer))
    if self.vision_feature_select_strategy not in ("default", "full"):
      raise errors.ConfigError(f"vision_feature_select_strategy "
                               f"{self.vision_feature_select_strategy!r} is not supported "
                               "(supported: default, full)")
    if self.projector_hidden_act not in _ACTIVATIONS:
      raise errors.ConfigError(f"projector_hidden_act {self.projector_hidden_act!r} is not "
                               f"supported (supported: {', '.join(sorted(_ACTIVATIONS))})")
    clip.Geometry(self.image_size, self.patch_size, self.num_channels)  # validates

  @property
  def geometry(self) -> clip.Geometry:
    return clip.Geometry(self.image_size, self.patch_size, self.num_channels)

  @property
  def feature_layers(self) -> tuple[int, ...]:
    v = self.vision_feature_layer
    return (v,) if isinstance(v, int) else tuple(v)

  @property
  def num_image_tokens(self) -> int:
    """Image tokens (= features) per image: the patches, plus the class token when "full"."""
    return self.geometry.num_patches + (self.vision_feature_select_strategy == "full")

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], where: Any = "config.json") -> "Config":
    """From the composite `config.json` of `LlavaForConditionalGeneration`."""
    if d.get("model_type") != "llava":
      raise errors.ConfigError(f"{where}: model_type {d.get('model_type')!r} is not a LLaVA "
                               "model (expected 'llava')")
    t = dict(_LLAMA_DEFAULTS, **(d.get("text_config") or {}))
    families.check_supported(t.get("model_type"), f"{where} (text_config)")
    v = dict(_CLIP_VISION_DEFAULTS, **(d.get("vision_config") or {}))
    if v.get("model_type", "clip_vision_model") != "clip_vision_model":
      raise errors.ConfigError(f"{where}: vision_config model_type {v['model_type']!r} is not "
                               "supported (supported: clip_vision_model)")
    try:
      text = ModelConfig.from_hf_dict(t)
      tie = bool(d.get("tie_word_embeddings", False)) or text.tie_word_embeddings
      text = dataclasses.replace(text, tie_word_embeddings=tie)
      vision = vit.VitConfig(
          hidden_size=int(v["hidden_size"]), intermediate_size=int(v["intermediate_size"]),
          num_layers=int(v["num_hidden_layers"]), num_heads=int(v["num_attention_heads"]),
          layer_norm_eps=float(v["layer_norm_eps"]), activation=v["hidden_act"])
      layer = d.get("vision_feature_layer", -2)
      return cls(
          text=text, vision=vision,
          image_token_id=int(d.get("image_token_id", d.get("image_token_index", 32000))),
          image_size=int(v["image_size"]), patch_size=int(v["patch_size"]),
          num_channels=int(v["num_channels"]),
          vision_feature_layer=int(layer) if isinstance(layer, int) else tuple(layer),
          vision_feature_select_strategy=d.get("vision_feature_select_strategy", "default"),
          projector_hidden_act=d.get("projector_hidden_act", "gelu"),
          projector_bias=bool(d.get("multimodal_projector_bias", True)))
    except errors.SwiftJaxError as e:
      raise errors.ConfigError(f"{where}: {e}") from None
    except ValueError as e:  # VitConfig's own checks.
      raise errors.ConfigError(f"{where}: vision_config: {e}") from None


def read_config(directory: str | pathlib.Path) -> Config:
  """Reads and validates a LLaVA `config.json`."""
  d, path = safetensors_loader.read_config_json(directory)
  return Config.from_hf_dict(d, path)


# ----------------------------------------------------------------------------- parameters

def _projector_spec(cfg: Config) -> decoder.Spec:
  dv = cfg.vision.hidden_size * len(cfg.feature_layers)
  dt = cfg.text.hidden_size
  spec = {("linear_1", "kernel"): ((dv, dt), ("embed", "mlp"), "normal"),
          ("linear_2", "kernel"): ((dt, dt), ("mlp", "embed"), "normal")}
  if cfg.projector_bias:
    spec[("linear_1", "bias")] = ((dt,), ("mlp",), "zeros")
    spec[("linear_2", "bias")] = ((dt,), ("embed",), "zeros")
  return spec


def param_axes(cfg: Config) -> Params:
  """Logical axis names of every parameter."""
  return {"vision": clip.param_axes(cfg.vision, cfg.geometry),
          "projector": decoder.axes_from_spec(_projector_spec(cfg)),
          "language_model": decoder.param_axes(cfg.text)}


def param_shapes(cfg: Config, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter."""
  return {"vision": clip.param_shapes(cfg.vision, cfg.geometry, dtype),
          "projector": decoder.shapes_from_spec(_projector_spec(cfg), dtype),
          "language_model": decoder.param_shapes(cfg.text, dtype)}


def init_projector(cfg: Config, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random projector (normal, std 0.02; biases zero)."""
  spec = _projector_spec(cfg)
  return decoder.init_from_spec(spec, jax.random.split(rng, len(spec)), dtype)


def init(cfg: Config, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random parameters for the whole model."""
  kv, kp, kt = jax.random.split(rng, 3)
  return {"vision": clip.init(cfg.vision, cfg.geometry, kv, dtype),
          "projector": init_projector(cfg, kp, dtype),
          "language_model": decoder.init(cfg.text, kt, dtype)}


def assemble(text_cfg: ModelConfig, text_params: Params, vision: vit.VitConfig,
             image_size: int, patch_size: int, rng: jax.Array, image_token_id: int, *,
             num_channels: int = 3, vision_feature_layer: int | tuple[int, ...] = -2,
             vision_feature_select_strategy: str = "default",
             projector_hidden_act: str = "gelu", projector_bias: bool = True,
             dtype: Any = jnp.float32) -> tuple[Config, Params]:
  """A LLaVA-style model around an existing language model: a randomly initialised CLIP tower
  and projector, the given decoder params used as they are.

  Args:
    text_cfg, text_params: the language model (e.g. from `swiftjax.infer.load`).
    vision: the tower's encoder stack (e.g. `vit.VitConfig(192, 768, 3, 3)`).
    image_size, patch_size: input side and patch side in pixels.
    rng: key for the random tower and projector.
    image_token_id: a token id of the tokenizer that marks image positions (its embedding row
      is never read: features replace it).
    num_channels, vision_feature_layer, vision_feature_select_strategy, projector_hidden_act,
      projector_bias: as in `Config` (-2 reads the penultimate layer; pass -1 for a tower
      trained from scratch to use all its layers).
    dtype: dtype of the new parameters.

  Returns:
    `(cfg, params)`; `params["language_model"]` is `text_params` itself.
  """
  if not 0 <= image_token_id < text_cfg.vocab_size:
    raise errors.ConfigError(f"image_token_id {image_token_id} is outside the language "
                             f"model's vocabulary of {text_cfg.vocab_size}")
  cfg = Config(text=text_cfg, vision=vision, image_token_id=image_token_id,
               image_size=image_size, patch_size=patch_size, num_channels=num_channels,
               vision_feature_layer=vision_feature_layer,
               vision_feature_select_strategy=vision_feature_select_strategy,
               projector_hidden_act=projector_hidden_act, projector_bias=projector_bias)
  kv, kp = jax.random.split(rng)
  return cfg, {"vision": clip.init(vision, cfg.geometry, kv, dtype),
               "projector": init_projector(cfg, kp, dtype),
               "language_model": text_params}


# ----------------------------------------------------------------------------- loading

def vision_prefix(files: dict, where: Any = "checkpoint") -> str:
  """The CLIP tower's name prefix in a checkpoint (`vision_tower.vision_model.`, ...)."""
  return checkpoint.find_prefix(files, "embeddings.patch_embedding.weight", where,
                                "vision tower", containing="vision_tower")


def hf_tensor_names(cfg: Config, files: dict, where: Any = "checkpoint"
                    ) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Checkpoint name -> `(param path, layer, transpose)` for every tensor but the CLIP patch
  kernel (`clip.read` reshapes that one).

  The naming is detected from `files` (the checkpoint's tensor names): transformers 5 in memory
  (`model.language_model.*`, `model.vision_tower.*`, `model.multi_modal_projector.*`,
  `lm_head.*`), what transformers 5 saves and published llava-hf checkpoints hold
  (`language_model.model.*`, `language_model.lm_head.*`, `vision_tower[.vision_model].*`,
  `multi_modal_projector.*`). A tied model has no head tensor.
  """
  vis = vision_prefix(files, where)
  proj = checkpoint.find_prefix(files, "linear_1.weight", where, "projector",
                                containing="multi_modal_projector")
  lm = checkpoint.find_prefix(files, "embed_tokens.weight", where, "language model",
                              containing="language_model")
  head = next((h for h in ("lm_head.weight", "language_model.lm_head.weight") if h in files),
              "lm_head.weight")
  table = checkpoint.language_model_names(cfg.text, lm, head)
  for name, (path, layer, t) in clip.hf_tensor_names(cfg.vision, vis).items():
    table[name] = (("vision",) + path, layer, t)
  for path in _projector_spec(cfg):
    leaf = "weight" if path[-1] == "kernel" else "bias"
    table[f"{proj}{path[0]}.{leaf}"] = (("projector",) + path, None, path[-1] == "kernel")
  return table


def load(directory: str | pathlib.Path, dtype: Any = jnp.float32,
         shardings: Any = None) -> tuple[Config, Params]:
  """Reads a Hugging Face LLaVA directory (`config.json` + `*.safetensors`).

  Args:
    directory: the checkpoint directory (sharded with an index, or not).
    dtype: parameter dtype.
    shardings: optional tree of `NamedSharding` like `param_shapes(cfg)`.

  Raises:
    CheckpointError: missing files, a missing tensor (named) or a shape mismatch.
    ConfigError: not a LLaVA config, or an unsupported part.
  """
  directory = pathlib.Path(directory)
  cfg = read_config(directory)
  files = safetensors_loader.tensor_files(directory)
  table = hf_tensor_names(cfg, files, directory)
  vis = vision_prefix(files, directory)
  shapes = param_shapes(cfg, dtype)
  rest = {n: e for n, e in table.items() if e[0][0] != "vision"}
  params = safetensors_loader.read_tensors(
      directory, rest, {k: shapes[k] for k in ("projector", "language_model")}, dtype,
      shardings and {k: shardings[k] for k in ("projector", "language_model")}, files)
  params["vision"] = clip.read(directory, vis, cfg.vision, cfg.geometry, dtype,
                               shardings and shardings["vision"], files)
  return cfg, params


# ----------------------------------------------------------------------------- model

def encode_images(params: Params, cfg: Config, *, pixel_values: Any,
                  compute_dtype: Any = None) -> jax.Array:
  """Features for every image token of a batch of images.

  Args:
    params: model parameters.
    cfg: the model config.
    pixel_values: `[num_images, C, H, W]` from `preprocess_images`.
    compute_dtype: activation dtype (default: the vision parameters' dtype).

  Returns:
    `[num_images * num_image_tokens, D_text]`, image-major (the order of image tokens in text).
  """
  states = clip.hidden_states(params["vision"], jnp.asarray(pixel_values), cfg.vision,
                              cfg.geometry, cfg.feature_layers, compute_dtype)
  if cfg.vision_feature_select_strategy == "default":
    states = [s[:, 1:] for s in states]
  x = jnp.concatenate(states, axis=-1) if len(states) > 1 else states[0]
  p = params["projector"]
  dtype = x.dtype

  def proj(h, q):
    y = linear(h, q["kernel"], dtype)
    return y + q["bias"].astype(dtype) if "bias" in q else y

  x = proj(_ACTIVATIONS[cfg.projector_hidden_act](proj(x, p["linear_1"])), p["linear_2"])
  return x.reshape(-1, x.shape[-1])


def apply(params: Params, input_ids: jax.Array, cfg: Config, *,
          image_inputs: dict | None = None, mask: jax.Array | None = None,
          positions: jax.Array | None = None, cache: decoder.Cache | None = None,
          compute_dtype: Any = None, last_only: bool = False,
          segment_ids: jax.Array | None = None) -> tuple[jax.Array, decoder.Cache | None]:
  """Runs the model on token ids with images at their image tokens.

  Args:
    params: model parameters.
    input_ids: `[B, T]` with each image already expanded to `cfg.num_image_tokens` image
      tokens (`image_text`).
    cfg: the model config.
    image_inputs: `preprocess_images`' output for the images of the batch, in the order their
      image tokens appear (row-major), or None for text only (and for decoding steps after an
      image prefill).
    mask, positions, cache, compute_dtype, last_only, segment_ids: as `decoder.apply`
      (`segment_ids` with per-sample `positions` for packed rows).

  Returns:
    `(logits [B, T, V] float32, cache)`.
  """
  lm = params["language_model"]
  is_image = input_ids == cfg.image_token_id
  # The image token's own row is never used; id 0 keeps an out-of-vocabulary id in range.
  embeds = decoder.embed(lm, jnp.where(is_image, 0, input_ids))
  if compute_dtype is not None:
    embeds = embeds.astype(compute_dtype)
  n_images = np.shape(image_inputs["pixel_values"])[0] if image_inputs else 0
  if n_images:
    host_ids = _on_host(input_ids)
    if host_ids is not None:  # under jit the caller checks (`inputs.check_feature_count`)
      inputs.check_feature_count(host_ids, cfg.image_token_id, n_images * cfg.num_image_tokens)
    features = encode_images(params, cfg, compute_dtype=compute_dtype, **image_inputs)
    embeds = inputs.merge_image_features(embeds, input_ids, cfg.image_token_id, features)
  return decoder.apply(lm, None, cfg.text, embeds=embeds, mask=mask, positions=positions,
                       cache=cache, compute_dtype=compute_dtype, last_only=last_only,
                       segment_ids=segment_ids)


def _on_host(x: Any) -> np.ndarray | None:
  """`x` as a numpy array, or None when it is traced (inside jit)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


# ----------------------------------------------------------------------------- processor

def make_processor(cfg: Config, tokenizer: Any, image_token: str = "<image>",
                   chat_template: str | None = None) -> Any:
  """A `transformers.LlavaProcessor` for `cfg` (e.g. an `assemble`d model): a CLIP image
  processor resizing to `cfg.image_size`, and the image token expanded to
  `cfg.num_image_tokens` copies (`num_additional_image_tokens=1`: the class token).

  Args:
    cfg: the model config.
    tokenizer: a transformers tokenizer in which `image_token` is one token, `cfg.image_token_id`.
    image_token: the placeholder text of one image token.
    chat_template: defaults to the tokenizer's.

  Raises:
    ConfigError: `image_token` is not the single token `cfg.image_token_id`.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  ids = tokenizer.encode(image_token, add_special_tokens=False)
  if ids != [cfg.image_token_id]:
    raise errors.ConfigError(f"image token {image_token!r} tokenises to {ids}, expected the "
                             f"single id {cfg.image_token_id} (add it as a special token)")
  size = cfg.image_size
  image_processor = transformers.CLIPImageProcessor(
      size={"shortest_edge": size}, crop_size={"height": size, "width": size})
  return transformers.LlavaProcessor(
      image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
      vision_feature_select_strategy=cfg.vision_feature_select_strategy,
      num_additional_image_tokens=1, image_token=image_token,
      chat_template=chat_template or getattr(tokenizer, "chat_template", None))


def preprocess_images(processor: Any, images: list) -> dict[str, np.ndarray]:
  """Pixel values of `images` (PIL) by the model's own image processor.

  Args:
    processor: a `LlavaProcessor` (or its `image_processor`, or any CLIP image processor).
    images: PIL images.

  Returns:
    `{"pixel_values": [num_images, C, H, W] float32}`.
  """
  image_processor = getattr(processor, "image_processor", processor)
  out = image_processor(images=list(images), return_tensors="np")
  return {"pixel_values": np.asarray(out["pixel_values"], np.float32)}


def image_text(processor: Any, image_inputs: dict, index: int) -> str:
  """The text that replaces the `index`-th `<image>` placeholder: the image token repeated once
  per feature, exactly as `LlavaProcessor` expands it (patches, plus
  `num_additional_image_tokens`, minus one when the strategy is "default")."""
  if hasattr(processor, "replace_image_token"):
    try:
      return processor.replace_image_token(image_inputs, index)
    except NotImplementedError:
      pass
  h, w = np.asarray(image_inputs["pixel_values"][index]).shape[-2:]
  n = (h // processor.patch_size) * (w // processor.patch_size)
  n += getattr(processor, "num_additional_image_tokens", 0) or 0
  if processor.vision_feature_select_strategy == "default":
    n -= 1
  return processor.image_token * n
