"""LoRA and its family as pure transforms of parameter pytrees.

    adapters = lora.init(params, rng, cfg)            # trainable leaves only
    y = model.apply(lora.apply(params, adapters, cfg), x)   # efficient: x@W + (x@A)@B*s
    merged = lora.merged(params, adapters, cfg)        # any model: W + s*A@B, differentiable

Variants (switches of `LoraConfig`):
  * LoRA (Hu et al. 2021): A `[in, r]` fan-in uniform (PEFT's kaiming-uniform(a=sqrt 5),
    i.e. U(-1/sqrt(in), 1/sqrt(in))), B `[r, out]` zeros, scale alpha / r.
  * rsLoRA (Kalajdzievski 2023): scale alpha / sqrt(r).
  * DoRA (Liu et al. 2024): a learned magnitude m `[out]` and direction W + s*A@B normalised per
    output column; the norm is treated as a constant in the backward pass (paper sec. 4.3).
  * PiSSA (Meng et al. 2024): A, B from the top-r singular triplets of W, and the base becomes
    the residual W - s*B@A, so the output is unchanged at init.
  * OLoRA (Buyukakyuz 2024): A, B from the QR decomposition of W, base residualised likewise.
PiSSA and OLoRA rewrite the base, so `init` returns `(params, adapters)` for every variant.

Adapters mirror the params tree at each targeted module: `{"lora_a", "lora_b"[, "magnitude"]}`,
with the layer axis kept when the base kernel is layer-stacked (`[L, in, r]`).
"""

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from swiftjax import errors
from swiftjax import linear as linear_lib
from swiftjax.lora import paths

INITS = ("default", "gaussian", "pissa", "olora")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """LoRA-family hyper-parameters, named as PEFT / ms-swift name them.

  Attributes:
    r: rank.
    alpha: `lora_alpha`; the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA).
    dropout: `lora_dropout` on the adapter's input during training.
    target_modules: `"all-linear"`, module names, or a regex over paths (see `paths`).
    use_rslora: rank-stabilised scaling.
    use_dora: weight-decomposed LoRA.
    init_lora_weights: `default`, `gaussian`, `pissa` or `olora`.
  """
  r: int = 8
  alpha: float = 32.0
  dropout: float = 0.0
  target_modules: str | tuple[str, ...] = "all-linear"
  use_rslora: bool = False
  use_dora: bool = False
  init_lora_weights: str = "default"

  def __post_init__(self):
    if self.r < 1:
      raise errors.ConfigError(f"LoRA rank r must be >= 1, got {self.r}")
    if not 0 <= self.dropout < 1:
      raise errors.ConfigError(f"lora dropout must be in [0, 1), got {self.dropout}")
    if self.init_lora_weights not in INITS:
      raise errors.ConfigError(f"init_lora_weights {self.init_lora_weights!r} is not one of "
                               f"{', '.join(INITS)}")
    if isinstance(self.target_modules, list):
      object.__setattr__(self, "target_modules", tuple(self.target_modules))

  @property
  def scale(self) -> float:
    return self.alpha / (self.r ** 0.5 if self.use_rslora else self.r)


@flax.struct.dataclass
class LoraWeight:
  """A frozen base kernel with its low-rank update, as `linear` sees it.

  Fields (shapes for one layer; a leading layer axis is sliced off by `lax.scan`):
    kernel: base `[in, out]` (any weight kind `linear` understands).
    lora_a: `[in, r]`; lora_b: `[r, out]`.
    magnitude: DoRA magnitude `[out]`, or None.
    dropout_key: PRNG key for dropout during training, or None (no dropout).
  """
  kernel: Any
  lora_a: jax.Array
  lora_b: jax.Array
  magnitude: jax.Array | None = None
  dropout_key: jax.Array | None = None
  scale: float = flax.struct.field(pytree_node=False, default=1.0)
  dropout: float = flax.struct.field(pytree_node=False, default=0.0)


def _dense(kernel: Any) -> jax.Array:
  """The base kernel as a dense array (quantized kinds are dequantized)."""
  return linear_lib.densify(kernel)


def _column_norm(w: jax.Array) -> jax.Array:
  """L2 norm of each output column of `w [..., in, out]` -> `[..., out]` (float32)."""
  return jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=-2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def low_rank(x: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
  """`s (x A) B` for `x [..., in]`, `a [in, r]`, `b [r, out]` -> `[..., out]`.

  The forward is the plain product; the backward is written out so that every large operand
  (`x [T, in]`, the output gradient `g [T, out]`) is read in its stored layout and only the
  rank-r matrices are transposed. Autodiff of the plain product gives `dB` as `(g^T (xA))^T`,
  and XLA:CPU then materialises `g^T` (`[out, T]`, strided) before the product: with
  SmolLM2-135M at 8 x 256 tokens those copies were ~25% of a LoRA training step.
  """
  return (x @ a * scale) @ b


def _low_rank_fwd(x, a, b, scale):
  xa = x @ a
  return (xa * scale) @ b, (x, a, b, xa)


def _low_rank_bwd(scale, res, g):
  x, a, b, xa = res
  rows = (((0,), (0,)), ((), ()))   # contract the flattened token axis of both operands
  cols = (((1,), (1,)), ((), ()))   # contract the last axis of both operands
  x2 = x.reshape(-1, x.shape[-1])
  g2 = g.reshape(-1, g.shape[-1])
  xa2 = (xa * scale).reshape(-1, xa.shape[-1])
  db = jax.lax.dot_general(xa2, g2, rows, preferred_element_type=jnp.float32)        # [r, out]
  gxa = jax.lax.dot_general(g2, b * scale, cols, preferred_element_type=jnp.float32)  # [T, r]
  gxa = gxa.astype(x.dtype)
  da = jax.lax.dot_general(gxa, x2, rows, preferred_element_type=jnp.float32).T      # [in, r]
  dx = jax.lax.dot_general(gxa, a, cols, preferred_element_type=jnp.float32)         # [T, in]
  return (dx.reshape(x.shape).astype(x.dtype), da.astype(a.dtype), db.astype(b.dtype))


low_rank.defvjp(_low_rank_fwd, _low_rank_bwd)


def _lora_matmul(x: jax.Array, w: LoraWeight, dtype: Any) -> jax.Array:
  """`x W + s (d(x) A) B`, and for DoRA PEFT's `x W + (m/n - 1) d(x) W + (m/n) s d(x) A B`."""
  base = linear_lib.linear(x, w.kernel, dtype)
  xd = x
  if w.dropout_key is not None and w.dropout > 0:
    keep = jax.random.bernoulli(w.dropout_key, 1.0 - w.dropout, x.shape)
    xd = jnp.where(keep, x / (1.0 - w.dropout), 0).astype(x.dtype)
  lora_a, lora_b = w.lora_a.astype(dtype), w.lora_b.astype(dtype)
  if lora_a.ndim == 2 and lora_b.ndim == 2:
    update = low_rank(xd.astype(dtype), lora_a, lora_b, w.scale)
  else:  # adapters with leading axes of their own (none of the built-in models)
    update = (xd.astype(dtype) @ lora_a) @ lora_b * w.scale
  if w.magnitude is None:
    return base + update.astype(base.dtype)
  kernel = _dense(w.kernel).astype(jnp.float32)
  norm = jax.lax.stop_gradient(
      _column_norm(kernel + w.scale * (w.lora_a.astype(jnp.float32) @ w.lora_b)))
  ratio = (w.magnitude.astype(jnp.float32) / norm).astype(dtype)
  base_d = base if w.dropout_key is None or w.dropout == 0 else linear_lib.linear(
      xd, w.kernel, dtype)
  return base + ((ratio - 1) * base_d + ratio * update).astype(base.dtype)


linear_lib.register_kind(LoraWeight, _lora_matmul)


def _init_one(kernel: jax.Array, key: jax.Array, cfg: LoraConfig, path: str):
  """Adapters for one kernel `[..., in, out]` and the (possibly residualised) kernel."""
  *lead, d_in, d_out = kernel.shape
  if cfg.r > min(d_in, d_out):
    raise errors.ConfigError(f"LoRA rank r={cfg.r} exceeds min(in, out)={min(d_in, d_out)} of "
                             f"{path} {tuple(kernel.shape)}")
  init = cfg.init_lora_weights
  if init in ("pissa", "olora") and not isinstance(kernel, jax.Array):
    raise errors.ConfigError(f"{init} initialisation rewrites the base weight; {path} is a "
                             f"{type(kernel).__name__}: initialise before quantizing")
  if init in ("default", "gaussian"):
    if init == "default":
      bound = d_in ** -0.5
      a = jax.random.uniform(key, (*lead, d_in, cfg.r), jnp.float32, -bound, bound)
    else:
      a = jax.random.normal(key, (*lead, d_in, cfg.r), jnp.float32) / cfg.r
    b = jnp.zeros((*lead, cfg.r, d_out), jnp.float32)
    new_kernel = kernel
  else:
    w32 = kernel.astype(jnp.float32)
    w_t = jnp.swapaxes(w32, -1, -2)  # PEFT's [out, in] layout, where the recipes are stated
    if init == "pissa":
      u, s, vh = jnp.linalg.svd(w_t, full_matrices=False)
      sr = s[..., :cfg.r] / cfg.scale
      lora_a = jnp.sqrt(sr)[..., :, None] * vh[..., :cfg.r, :]        # [r, in]
      lora_b = u[..., :, :cfg.r] * jnp.sqrt(sr)[..., None, :]         # [out, r]
    else:  # olora
      q, rr = jnp.linalg.qr(w_t)
      lora_a, lora_b = rr[..., :cfg.r, :], q[..., :, :cfg.r]
    a, b = jnp.swapaxes(lora_a, -1, -2), jnp.swapaxes(lora_b, -1, -2)
    new_kernel = (w32 - cfg.scale * a @ b).astype(kernel.dtype)
  adapter = {"lora_a": a, "lora_b": b}
  if cfg.use_dora:
    adapter["magnitude"] = _column_norm(_dense(new_kernel).astype(jnp.float32) +
                                        cfg.scale * a @ b)
  return new_kernel, adapter


def init(params: Any, rng: jax.Array, cfg: LoraConfig) -> tuple[Any, Any]:
  """Creates adapters for every kernel `cfg.target_modules` selects.

  Returns:
    `(params, adapters)`: params unchanged (the same leaves) except for PiSSA/OLoRA, which
    residualise the targeted kernels; adapters in float32, mirroring the params tree.
  """
  targets = paths.match_targets(params, cfg.target_modules)
  new_params = paths.copy_dicts(params)
  adapters: dict = {}
  for i, path in enumerate(targets):
    kernel = paths.get(params, path)
    new_kernel, adapter = _init_one(kernel, jax.random.fold_in(rng, i), cfg, path)
    paths.set_in(new_params, path, new_kernel)
    paths.set_in(adapters, path.rsplit("/", 1)[0], adapter)
  return new_params, adapters


def adapter_paths(adapters: Any) -> list[str]:
  """Module paths that carry an adapter (e.g. `layers/self_attn/q_proj`)."""
  return sorted({p.rsplit("/", 1)[0] for p in paths.flatten(adapters)})


def apply(params: Any, adapters: Any, cfg: LoraConfig, *, rng: jax.Array | None = None) -> Any:
  """Params whose targeted kernels are `LoraWeight`s, for models that call `linear`.

  Args:
    params: base params (frozen).
    adapters: from `init` (trainable).
    cfg: the config used for `init`.
    rng: dropout key; `None` means no dropout (evaluation).
  """
  out = paths.copy_dicts(params)
  for i, module in enumerate(adapter_paths(adapters)):
    a = paths.get(adapters, module)
    kernel = paths.get(params, module + "/kernel")
    key = None
    if rng is not None and cfg.dropout > 0:
      key = jax.random.fold_in(rng, i)
      if kernel.ndim == 3:  # one key per stacked layer, sliced by lax.scan
        key = jax.random.split(key, kernel.shape[0])
    paths.set_in(out, module + "/kernel", LoraWeight(
        kernel=kernel, lora_a=a["lora_a"], lora_b=a["lora_b"], magnitude=a.get("magnitude"),
        dropout_key=key, scale=cfg.scale, dropout=cfg.dropout if key is not None else 0.0))
  return out


def delta(adapter: dict, cfg: LoraConfig) -> jax.Array:
  """`s * A @ B` `[..., in, out]` in float32."""
  return cfg.scale * adapter["lora_a"].astype(jnp.float32) @ adapter["lora_b"].astype(jnp.float32)


def merged(params: Any, adapters: Any, cfg: LoraConfig) -> Any:
  """Params with every update folded into its kernel; differentiable w.r.t. the adapters, so
  `apply_fn(merged(params, adapters, cfg), x)` trains adapters of any model."""
  out = paths.copy_dicts(params)
  for module in adapter_paths(adapters):
    a = paths.get(adapters, module)
    kernel = paths.get(params, module + "/kernel")
    w = _dense(kernel).astype(jnp.float32) + delta(a, cfg)
    if "magnitude" in a:
      w = w * (a["magnitude"].astype(jnp.float32) /
               jax.lax.stop_gradient(_column_norm(w)))[..., None, :]
    paths.set_in(out, module + "/kernel", w.astype(kernel.dtype))
  return out


merge = merged


def unmerge(merged_params: Any, adapters: Any, cfg: LoraConfig) -> Any:
  """Inverse of `merge` for LoRA/rsLoRA/PiSSA/OLoRA: `W - s A @ B`.

  Raises:
    ConfigError: for DoRA, whose merge divides by norms of the unmerged weight that the merged
      weight no longer determines; keep the base params instead.
  """
  if cfg.use_dora:
    raise errors.ConfigError("DoRA merge cannot be undone from the merged weights alone; "
                             "keep the base params and merge again instead")
  out = paths.copy_dicts(merged_params)
  for module in adapter_paths(adapters):
    kernel = paths.get(merged_params, module + "/kernel")
    w = kernel.astype(jnp.float32) - delta(paths.get(adapters, module), cfg)
    paths.set_in(out, module + "/kernel", w.astype(kernel.dtype))
  return out


def count_params(tree: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def trainable_summary(params: Any, adapters: Any) -> str:
  """PEFT's `print_trainable_parameters` line for base params plus adapters."""
  trainable = count_params(adapters)
  total = count_params(params) + trainable
  return (f"trainable params: {trainable:,d} || all params: {total:,d} || "
          f"trainable%: {100 * trainable / total:.4f}")


def adapter_axes(adapters: Any, param_axes: Any) -> Any:
  """Logical axes of every adapter leaf, inherited from its base kernel's axes (qwix): A is
  sharded like the kernel's input axis, B like its output axis, the rank axis is replicated."""
  out: dict = {}
  for module in adapter_paths(adapters):
    *lead, ax_in, ax_out = paths.get(param_axes, module + "/kernel")
    entry = {"lora_a": (*lead, ax_in, None), "lora_b": (*lead, None, ax_out)}
    if "magnitude" in paths.get(adapters, module):
      entry["magnitude"] = (*lead, ax_out)
    paths.set_in(out, module, entry)
  return out
