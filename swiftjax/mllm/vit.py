"""The transformer encoder of vision towers (CLIP, SigLIP, Qwen2-VL's ViT) as pure functions.

Every tower these models use is the same pre-LayerNorm block

  x += o_proj(attention(q, k, v of layer_norm1(x)))      biases everywhere, full attention
  x += fc2(act(fc1(layer_norm2(x))))

and differs only in the activation, the LayerNorm epsilon, whether q/k/v are one fused matrix,
and (Qwen2-VL) rotary position angles and attention restricted to each image. Position
embeddings, the final norm and what follows the encoder belong to the family modules; the patch
embedding (a stride-`p` convolution, done as one matmul over flattened patches) and reading its
convolution weight are shared here.

Parameters, layers stacked on a leading `layers` axis and run with `jax.lax.scan`:

  layer_norm1/{scale,bias}        [L, D]
  self_attn/{q,k,v}_proj/kernel   [L, D, D]   (+ bias [L, D]); fused: self_attn/qkv/kernel [L, D, 3D]
  self_attn/o_proj/kernel         [L, D, D]   (+ bias)
  layer_norm2/{scale,bias}        [L, D]
  mlp/fc1/kernel                  [L, D, F]   (+ bias [L, F])
  mlp/fc2/kernel                  [L, F, D]   (+ bias [L, D])

Kernels are `[in, out]` and go through `swiftjax.linear.linear`, so LoRA can wrap them.
"""

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import sharding
from swiftjax.linear import linear
from swiftjax.models import decoder
from swiftjax.models import safetensors_loader

Params = dict[str, Any]

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}

# Our module path -> the Hugging Face module name inside one layer, per naming scheme.
CLIP_NAMES = {"layer_norm1": "layer_norm1", "layer_norm2": "layer_norm2",
              "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
              "v_proj": "self_attn.v_proj", "o_proj": "self_attn.out_proj",
              "qkv": "self_attn.qkv", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


@dataclasses.dataclass(frozen=True)
class VitConfig:
  """Shape and switches of a vision encoder stack."""
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  layer_norm_eps: float = 1e-5
  activation: str = "quick_gelu"
  fused_qkv: bool = False

  def __post_init__(self):
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"vision activation {self.activation!r} is not supported "
                       f"(supported: {', '.join(sorted(_ACTIVATIONS))})")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                       f"{self.num_heads}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


def _spec(cfg: VitConfig) -> decoder.Spec:
  """path -> (shape, logical axes, init kind)."""
  L, D, F = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
  spec = {}
  for n in ("layer_norm1", "layer_norm2"):
    spec[(n, "scale")] = ((L, D), ("layers", "norm"), "ones")
    spec[(n, "bias")] = ((L, D), ("layers", "norm"), "zeros")
  projs = {"o_proj": (D, D, ("q_heads", "embed"))}
  if cfg.fused_qkv:
    projs["qkv"] = (D, 3 * D, ("embed", "q_heads"))
  else:
    projs.update({n: (D, D, ("embed", "q_heads")) for n in ("q_proj", "k_proj", "v_proj")})
  for n, (i, o, axes) in projs.items():
    spec[("self_attn", n, "kernel")] = ((L, i, o), ("layers",) + axes, "normal")
    spec[("self_attn", n, "bias")] = ((L, o), ("layers", axes[1]), "zeros")
  spec[("mlp", "fc1", "kernel")] = ((L, D, F), ("layers", "embed", "mlp"), "normal")
  spec[("mlp", "fc1", "bias")] = ((L, F), ("layers", "mlp"), "zeros")
  spec[("mlp", "fc2", "kernel")] = ((L, F, D), ("layers", "mlp", "embed"), "normal")
  spec[("mlp", "fc2", "bias")] = ((L, D), ("layers", "embed"), "zeros")
  return spec


def param_axes(cfg: VitConfig) -> Params:
  """Logical axis names of every encoder parameter."""
  return decoder.axes_from_spec(_spec(cfg))


def param_shapes(cfg: VitConfig, dtype: Any = jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every encoder parameter."""
  return decoder.shapes_from_spec(_spec(cfg), dtype)


def init(cfg: VitConfig, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
  """Random encoder parameters (normal, std 0.02; LayerNorms identity, biases zero)."""
  spec = _spec(cfg)
  return decoder.init_from_spec(spec, jax.random.split(rng, len(spec)), dtype)


def hf_tensor_names(cfg: VitConfig, prefix: str, names: dict[str, str] | None = None
                    ) -> dict[str, tuple[tuple[str, ...], int | None, bool]]:
  """Hugging Face tensor names of the encoder layers -> `(param path, layer, transpose)`.

  Args:
    cfg: the encoder config.
    prefix: the layer list's name, e.g. `vision_tower.vision_model.encoder.layers` (layer `i`
      is `{prefix}.{i}`).
    names: our module name -> the module name inside one Hugging Face layer (`CLIP_NAMES` by
      default; SigLIP uses the same).
  """
  names = names or CLIP_NAMES
  table = {}
  for path in _spec(cfg):
    module = names[path[-2]]
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
    for i in range(cfg.num_layers):
      table[f"{prefix}.{i}.{module}.{leaf}"] = (path, i, path[-1] == "kernel")
  return table


def patch_kernel_from_hf(weight: np.ndarray) -> np.ndarray:
  """A patch convolution weight `[D, C, p, p]` (or Conv3d `[D, C, tp, p, p]`) as our matmul
  kernel `[C*p*p, D]` (`[C*tp*p*p, D]`): patches flatten in the weight's `(c, [t,] y, x)`
  order."""
  return np.ascontiguousarray(np.asarray(weight).reshape(weight.shape[0], -1).T)


def read_patch_kernel(directory: str | pathlib.Path, name: str, conv_shape: tuple[int, ...],
                      dtype: Any = jnp.float32, shardings: Any = None,
                      path: tuple[str, ...] = (),
                      files: dict[str, pathlib.Path] | None = None) -> jax.Array:
  """Reads the patch convolution weight `name` (`conv_shape`, e.g. `[D, C, p, p]`) from a
  safetensors directory as our kernel (`patch_kernel_from_hf`).

  Args:
    directory: the checkpoint directory.
    name: the weight's tensor name.
    conv_shape: its Hugging Face shape.
    dtype: parameter dtype.
    shardings: optional tree of `NamedSharding`; the kernel's is at `path` in it.
    path: where the kernel sits in `shardings`.
    files: tensor name -> file, when the caller already listed the directory.

  Raises:
    CheckpointError: the weight is missing or has another shape (named).
  """
  raw = safetensors_loader.read_tensors(
      directory, {name: (("w",), None, False)}, {"w": jax.ShapeDtypeStruct(conv_shape, dtype)},
      dtype, None, files)["w"]
  target = shardings
  for key in path if shardings is not None else ():
    target = target[key]
  return sharding.put(patch_kernel_from_hf(np.asarray(raw)), target)


def patchify(pixel_values: jax.Array, patch_size: int) -> jax.Array:
  """`[B, C, H, W]` -> `[B, (H//p) * (W//p), C*p*p]`, patches row-major, each flattened
  `(c, y, x)` like the convolution weight; a remainder narrower than a patch is dropped (as the
  stride-`p` convolution drops it)."""
  B, C, H, W = pixel_values.shape
  p = patch_size
  h, w = H // p, W // p
  x = pixel_values[:, :, :h * p, :w * p].reshape(B, C, h, p, w, p)
  return x.transpose(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * p * p)


def embed_patches(params: Params, pixel_values: jax.Array, patch_size: int,
                  dtype: Any) -> jax.Array:
  """The patch convolution: `patchify` then `kernel [C*p*p, D]` (+ `bias [D]` when `params`
  has one).

  Returns:
    `[B, (H//p) * (W//p), D]` in `dtype`.
  """
  x = linear(patchify(pixel_values.astype(dtype), patch_size), params["kernel"], dtype)
  if "bias" in params:
    x = x + params["bias"].astype(dtype)
  return x


def layer_norm(x: jax.Array, p: Params, eps: float) -> jax.Array:
  """LayerNorm over the last axis in float32 (`p`: `scale`, `bias` of `[D]`)."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  return (y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(x.dtype)


def _proj(x, p, dtype):
  return linear(x, p["kernel"], dtype) + p["bias"].astype(dtype)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Half-split rotary embedding of `x [B, N, H, hd]` by `cos/sin [B, N, hd]`."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x.astype(jnp.float32) * cos[:, :, None] + rotated * sin[:, :, None]).astype(x.dtype)


def encode(params: Params, x: jax.Array, cfg: VitConfig, *, num_layers: int | None = None,
           segment_ids: jax.Array | None = None, key_mask: jax.Array | None = None,
           rope_angles: jax.Array | None = None, compute_dtype: Any = None) -> jax.Array:
  """Runs the first `num_layers` encoder layers (all by default).

  Args:
    params: encoder parameters (`init` or a loader).
    x: `[B, N, D]` patch embeddings (positions already added when the tower adds them).
    cfg: the encoder config.
    num_layers: run only this many layers (LLaVA reads the penultimate layer's output: pass
      `cfg.num_layers - 1`).
    segment_ids: `[B, N]` int; tokens attend only to tokens with the same id (several images
      packed into one sequence, as Qwen2-VL's `cu_seqlens`).
    key_mask: `[B, N]` bool; False keys are attended by no one (padding patches, as
      transformers' SigLIP attention mask: padded queries still attend to the valid keys).
    rope_angles: `[B, N, head_dim // 2]` rotary angles applied to q and k (Qwen2-VL's 2D RoPE;
      the angles are repeated over the two halves of each head, Hugging Face's layout).
    compute_dtype: activation dtype (default: `x.dtype`).

  Returns:
    `[B, N, D]` hidden states after the last layer run (no final norm).
  """
  dtype = compute_dtype or x.dtype
  B, N, D = x.shape
  H, hd = cfg.num_heads, cfg.head_dim
  act = _ACTIVATIONS[cfg.activation]
  n = cfg.num_layers if num_layers is None else num_layers
  layers = jax.tree.map(lambda a: a[:n], params)
  allowed = None
  if segment_ids is not None:
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # [B, 1, N, N]
  if key_mask is not None:
    keys = key_mask[:, None, None, :]
    allowed = keys if allowed is None else allowed & keys
  if rope_angles is not None:
    angles = jnp.concatenate([rope_angles, rope_angles], axis=-1).astype(jnp.float32)
    cos, sin = jnp.cos(angles), jnp.sin(angles)

  def block(h, p):
    a = p["self_attn"]
    y = layer_norm(h, p["layer_norm1"], cfg.layer_norm_eps)
    if cfg.fused_qkv:
      q, k, v = jnp.split(_proj(y, a["qkv"], dtype), 3, axis=-1)
    else:
      q, k, v = (_proj(y, a[name], dtype) for name in ("q_proj", "k_proj", "v_proj"))
    q, k, v = (t.reshape(B, N, H, hd) for t in (q, k, v))
    if rope_angles is not None:
      q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * hd ** -0.5
    if allowed is not None:
      scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    o = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32)
    h = h + _proj(o.reshape(B, N, D).astype(dtype), a["o_proj"], dtype)
    y = layer_norm(h, p["layer_norm2"], cfg.layer_norm_eps)
    y = _proj(act(_proj(y, p["mlp"]["fc1"], dtype)), p["mlp"]["fc2"], dtype)
    return h + y, None

  out, _ = jax.lax.scan(block, x.astype(dtype), layers)
  return out
