"""GPTQ (Frantar et al., 2022): weight quantization that compensates each rounding error with
the columns not yet quantized, using second-order information from calibration activations.

For one linear layer with inputs X `[n, in]` and weights W (written here as rows = outputs,
columns = inputs, i.e. our `[in, out]` kernel transposed), GPTQ minimises `||X W^T - X Q^T||^2`
column by column. With H = 2 X^T X (dampened: `H + damp * mean(diag H) * I`) and U the upper
Cholesky factor of H^-1, quantizing column j to q_j moves the remaining columns by
  err = (w_j - q_j) / U[j, j],      W[:, k] -= err * U[j, k]   for k > j      (paper eq. 3-4)
Updates are applied lazily in blocks of columns (Algorithm 1): inside a block of B columns the
rank-1 updates touch only the block; the block's errors `E [out, B]` update the rest of the
matrix at once with `W[:, after] -= E @ U[block, after]`. Optionally columns go in order of
decreasing `diag(H)` ("act-order"); then group scales are fixed from the original weights
("static groups"), so the stored groups stay contiguous in the input axis, as RTN's.
The code sweeps our `[in, out]` kernel directly: the paper's columns are its rows.

Grids match the weight kinds the result is stored as: int8 per output channel, symmetric
(`swiftjax.int8.Int8Weight`); int4 group-wise, asymmetric (`swiftjax.int4.Int4Weight`),
group parameters taken at the first column of each group from the weights as updated so far.

Calibration runs the model one layer at a time over the calibration tokens (`quantize`):
layer l's inputs come from layers < l already quantized, as in the paper. Activations are
captured without touching the model code: every targeted kernel is wrapped in a `_Tap` weight
kind whose matmul sends `x^T x` to the host (`jax.debug.callback`), and the layer's output
comes back through `decoder.apply`'s `residual_hook`.
"""

import dataclasses
import functools
import re
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import int4
from swiftjax import int8
from swiftjax import linear as linear_lib
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

# Projections that read the same activations in a decoder block (q/k/v read norm(x); gate/up
# read the pre-MLP norm): one Hessian serves the whole group.
_SAME_INPUT = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}


# ---------------------------------------------------------------------------------------------
# The solve for one weight matrix.


def _grid(bits: int) -> tuple[int, int]:
  """(qmin, qmax) of the integer codes."""
  if bits == 8:
    return -127, 127
  if bits == 4:
    return 0, int4.MAXQ
  raise errors.ConfigError(f"bits must be 8 or 4, got {bits}")


def _minmax_params(w: jax.Array, qmax: int) -> tuple[jax.Array, jax.Array]:
  """Asymmetric min-max grid of `w [k, out]` over its rows -> `scale`, `zero` `[out]`."""
  lo = jnp.minimum(jnp.min(w, axis=0), 0.0)
  hi = jnp.maximum(jnp.max(w, axis=0), 0.0)
  scale = (hi - lo) / qmax
  scale = jnp.where(scale == 0, 1.0, scale)
  return scale, jnp.clip(jnp.round(-lo / scale), 0, qmax)


@functools.partial(jax.jit, static_argnames=("qmin", "qmax", "block_size", "dynamic_groups"))
def _sweep(w, u, scale_rows, zero_rows, *, qmin: int, qmax: int, block_size: int,
           dynamic_groups: bool):
  """The sweep with lazy block updates, in our `[in, out]` layout (the paper's columns are
  our rows, so each step reads and writes contiguous rows).

  Args:
    w: `[in, out]` float32, rows in processing order.
    u: `[in, in]` upper Cholesky factor of the dampened H^-1 (same order).
    scale_rows, zero_rows: `[in, out]` the grid of every row, or (with `dynamic_groups`)
      ignored: each block is one group whose grid is taken from the block as it stands when
      the sweep reaches it.
    qmin, qmax: code range.
    block_size: rows per lazy block (the group size with `dynamic_groups`).

  Returns:
    `(codes [in, out] float32, scales [G, out], zeros [G, out])`; scales/zeros are empty
    without `dynamic_groups`.
  """
  n_in = w.shape[0]
  codes, scales, zeros = [], [], []
  for i1 in range(0, n_in, block_size):
    i2 = min(i1 + block_size, n_in)
    w1, u1 = w[i1:i2], u[i1:i2, i1:i2]
    if dynamic_groups:
      s, z = _minmax_params(w1, qmax)
      scales.append(s)
      zeros.append(z)
      s1 = jnp.broadcast_to(s, w1.shape)
      z1 = jnp.broadcast_to(z, w1.shape)
    else:
      s1, z1 = scale_rows[i1:i2], zero_rows[i1:i2]

    def step(j, carry, s1=s1, z1=z1, u1=u1):
      w1, q1, e1 = carry
      row = w1[j]
      s, z = s1[j], z1[j]
      q = jnp.clip(jnp.round(row / s) + z, qmin, qmax)
      err = (row - (q - z) * s) / u1[j, j]
      # u1 is upper triangular: its row j is zero left of j, so only rows >= j move.
      w1 = w1 - u1[j][:, None] * err[None, :]
      return w1, q1.at[j].set(q), e1.at[j].set(err)

    zeros_block = jnp.zeros_like(w1)
    _, q1, e1 = jax.lax.fori_loop(0, i2 - i1, step, (w1, zeros_block, zeros_block))
    codes.append(q1)
    if i2 < n_in:
      w = w.at[i2:].add(-u[i1:i2, i2:].T @ e1)
  stack = (lambda xs: jnp.stack(xs)) if dynamic_groups else (lambda xs: jnp.zeros((0,)))
  return jnp.concatenate(codes, axis=0), stack(scales), stack(zeros)


def _inverse_cholesky(h: jax.Array, damp: float) -> jax.Array:
  """Upper-triangular U with `U^T U = (H + damp * mean(diag H) I)^-1` (NaN if not definite).

  GPTQ computes it as Cholesky(inverse(Cholesky-inverse(H))). One Cholesky and one triangular
  inverse suffice: with J the order-reversing permutation and `J H J = L L^T`,
  `H^-1 = (J L^-1 J)^T (J L^-1 J)` and `J L^-1 J` is upper triangular.
  """
  eye = jnp.eye(h.shape[0], dtype=h.dtype)
  h = h + damp * jnp.mean(jnp.diag(h)) * eye
  lower = jnp.linalg.cholesky(h[::-1, ::-1])
  return jax.scipy.linalg.solve_triangular(lower, eye, lower=True)[::-1, ::-1]


@functools.partial(jax.jit, static_argnames=("bits", "group_size", "act_order", "block_size"))
def _solve(kernel, h, damp, *, bits: int, group_size: int, act_order: bool, block_size: int):
  """`solve` for a float32 `kernel [in, out]` -> `(codes [in, out], scale, zero, ok)`."""
  qmin, qmax = _grid(bits)
  n_in = kernel.shape[0]
  dead = jnp.diag(h) == 0          # inputs that are always zero: any weight fits, use 0
  h = jnp.where(jnp.diag(dead), 1.0, h)
  w = jnp.where(dead[:, None], 0.0, kernel)                        # [in, out]
  if bits == 8:
    scale = jnp.max(jnp.abs(kernel), axis=0) / 127.0                # [out], as int8.quantize
    scale = jnp.where(scale == 0, 1.0, scale)
    zero = jnp.zeros_like(scale)
    s_rows = jnp.broadcast_to(scale, w.shape)
    z_rows = jnp.zeros_like(w)
  elif act_order:
    # Static groups: grids from the original weights, contiguous in the input axis.
    scale, zero = int4.group_params(w, group_size)                   # [G, out]
    s_rows = int4.expand_groups(scale, group_size, n_in)             # [in, out]
    z_rows = int4.expand_groups(zero, group_size, n_in)
  else:
    s_rows = z_rows = jnp.zeros((0,))
  if act_order:
    perm = jnp.argsort(-jnp.diag(h), stable=True)
    w, h = w[perm], h[perm][:, perm]
    s_rows, z_rows = s_rows[perm], z_rows[perm]
  u = _inverse_cholesky(h, damp)
  dynamic = bits == 4 and not act_order
  codes, g_s, g_z = _sweep(w, u, s_rows, z_rows, qmin=qmin, qmax=qmax, block_size=block_size,
                           dynamic_groups=dynamic)
  if dynamic:
    scale, zero = g_s, g_z
  if act_order:
    codes = codes[jnp.argsort(perm)]
  return codes, scale, zero, jnp.all(jnp.isfinite(u))


def solve(kernel: jax.Array, hessian: Any, *, bits: int = 4, group_size: int = 128,
          damp: float = 0.01, act_order: bool = False, block_size: int = 128) -> Any:
  """GPTQ-quantizes one kernel.

  Args:
    kernel: `[in, out]` float weights.
    hessian: `[in, in]` H = 2 X^T X / n of the layer's calibration inputs X `[n, in]`.
    bits: 8 (per output channel, symmetric) or 4 (groups of `group_size` input rows,
      asymmetric).
    group_size: int4 group size (ignored for int8).
    damp: dampening, as a fraction of the mean diagonal of H.
    act_order: process columns in order of decreasing `diag(H)`.
    block_size: columns per lazy update block for int8 (int4 uses the group size, so that a
      group's grid is taken once its block has received every earlier update).

  Returns:
    an `Int8Weight` or `Int4Weight` with the kernel's shape.

  Raises:
    ConfigError: bad bits/group size or Hessian shape; H not positive definite after
      dampening.
  """
  _grid(bits)
  n_in = kernel.shape[0]
  if tuple(hessian.shape) != (n_in, n_in):
    raise errors.ConfigError(f"GPTQ: Hessian of shape {tuple(hessian.shape)} for a kernel "
                             f"with {n_in} inputs")
  if bits == 4:
    if group_size < 1:
      raise errors.ConfigError(f"group_size must be >= 1, got {group_size}")
    group_size = block_size = min(group_size, n_in)
  else:
    group_size = 0
  codes, scale, zero, ok = _solve(jnp.asarray(kernel, jnp.float32),
                                  jnp.asarray(hessian, jnp.float32), damp, bits=bits,
                                  group_size=group_size, act_order=act_order,
                                  block_size=block_size)
  if not bool(ok):
    raise errors.ConfigError(f"GPTQ: the Hessian is not positive definite even with "
                             f"damp={damp}; raise the dampening or add calibration data")
  if bits == 8:
    return int8.Int8Weight(codes.astype(jnp.int8), scale, kernel.dtype)
  return int4.from_codes(codes, scale, zero, group_size, kernel.dtype)


# ---------------------------------------------------------------------------------------------
# Calibration: layer by layer over the model.


@flax.struct.dataclass
class _Tap:
  """A dense kernel that reports `x^T x` of its inputs to `sink(key, xtx, n)` when applied."""
  kernel: jax.Array
  key: str = flax.struct.field(pytree_node=False)
  sink: Callable[..., None] = flax.struct.field(pytree_node=False)


def _tap_matmul(x, w: _Tap, dtype):
  x2 = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  xtx = jnp.einsum("ni,nj->ij", x2, x2, precision=jax.lax.Precision.HIGHEST)
  jax.debug.callback(functools.partial(w.sink, w.key), xtx, x2.shape[0])
  return linear_lib.linear(x, w.kernel, dtype)


linear_lib.register_kind(_Tap, _tap_matmul)


def _one_layer_config(cfg: ModelConfig, layer: int) -> ModelConfig:
  """`cfg` for running layer `layer` alone on hidden states: no embedding scale, a 1-wide
  untied head (the logits are not used)."""
  return dataclasses.replace(
      cfg, num_layers=1, vocab_size=1, tie_word_embeddings=False, embed_scale=False,
      final_logit_softcap=None,
      layer_windows=(cfg.windows[layer],) if cfg.layer_windows is not None else None)


def _proj_paths(layer_params: Any, pattern: re.Pattern) -> list[tuple[str, ...]]:
  """Paths (below `layers`) of the kernels to quantize, e.g. `("mlp", "up_proj", "kernel")`."""
  out = []
  for path, _ in jax.tree_util.tree_flatten_with_path(
      layer_params, is_leaf=linear_lib.is_weight_kind)[0]:
    keys = tuple(str(getattr(k, "key", k)) for k in path)
    if keys[-1] == "kernel" and pattern.fullmatch("/".join(("layers",) + keys)):
      out.append(keys)
  return out


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  """A copy of the nested dict `tree` with `path` set to `value`."""
  if not path:
    return value
  return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def _representative(path: tuple[str, ...], paths: list[tuple[str, ...]]) -> tuple[str, ...]:
  """The targeted path whose inputs `path` shares (itself if none)."""
  other = _SAME_INPUT.get(path[-2])
  if other is not None:
    cand = path[:-2] + (other, path[-1])
    if cand in paths:
      return cand
  return path


def quantize(params: Any, cfg: ModelConfig, calibration: np.ndarray, *, bits: int = 4,
             group_size: int = 128, damp: float = 0.01, act_order: bool = True,
             batch_size: int = 8, targets: str = int4.DEFAULT_TARGETS,
             compute_dtype: Any = None,
             progress: Callable[[int, int], None] | None = None) -> Any:
  """GPTQ-quantizes a decoder's layer-stack kernels, calibrating layer by layer.

  Args:
    params: float decoder parameters (`swiftjax.models.decoder` layout).
    cfg: the model config.
    calibration: `[N, T]` int token ids (full rows, no padding).
    bits: 8 (`Int8Weight`, per channel) or 4 (`Int4Weight`, groups of `group_size`).
    group_size: int4 group size.
    damp: Hessian dampening (fraction of its mean diagonal).
    act_order: quantize columns in order of decreasing activation energy (on by default; see
      `swiftjax.quantize.quantize_model` for the measurement behind that).
    batch_size: calibration rows per forward pass.
    targets: regex over `/`-joined parameter paths; only `layers/...` kernels can be targets.
    compute_dtype: activation dtype (default: the embedding's dtype).
    progress: `progress(layers_done, num_layers)`.

  Returns:
    params with the targeted kernels replaced by quantized weight kinds (stacked over layers).
  """
  _grid(bits)
  calibration = np.asarray(calibration)
  if calibration.ndim != 2 or calibration.size == 0:
    raise errors.ConfigError(f"GPTQ calibration must be [rows, tokens] ids, got shape "
                             f"{calibration.shape}")
  pattern = re.compile(targets)
  layers = params["layers"]
  paths = _proj_paths(layers, pattern)
  if not paths:
    raise errors.ConfigError(f"GPTQ: no layer kernel matches targets {targets!r}")
  dtype = compute_dtype or params["embed_tokens"]["embedding"].dtype
  D = cfg.hidden_size

  # Hidden states entering layer 0, as `decoder.apply` makes them.
  hidden = []
  for b in range(0, len(calibration), batch_size):
    x = decoder.embed(params, jnp.asarray(calibration[b:b + batch_size])).astype(dtype)
    hidden.append(x * jnp.asarray(D ** 0.5, dtype) if cfg.embed_scale else x)

  stats: dict[str, list] = {}

  def sink(key, xtx, n):
    acc = stats.setdefault(key, [0.0, 0])
    acc[0] = acc[0] + np.asarray(xtx, np.float64)
    acc[1] += int(n)

  outputs: list[np.ndarray] = []

  def hook(_, x, __):
    jax.debug.callback(lambda v: outputs.append(np.asarray(v)), x)
    return x

  @functools.partial(jax.jit, static_argnames=("cfg1", "capture"))
  def run_block(layer_params, x, cfg1, capture):
    shell = {"embed_tokens": {"embedding": jnp.zeros((1, D), dtype)},
             "norm": {"scale": jnp.ones((D,), dtype)},
             "lm_head": {"kernel": jnp.zeros((D, 1), dtype)},
             "layers": layer_params}
    logits, _ = decoder.apply(shell, None, cfg1, embeds=x, compute_dtype=dtype,
                              residual_hook=None if capture else hook)
    return logits

  quantized: dict[tuple[str, ...], list] = {p: [] for p in paths}
  for layer in range(cfg.num_layers):
    cfg1 = _one_layer_config(cfg, layer)
    one = jax.tree.map(lambda a: a[layer:layer + 1], layers)
    # Pass 1: float layer, collect x^T x of every distinct input.
    tapped = one
    for p in paths:
      if _representative(p, paths) == p:
        tapped = _set(tapped, p, _Tap(_get(one, p), "/".join(p), sink))
    stats.clear()
    for x in hidden:
      run_block(tapped, x, cfg1, True)
    jax.effects_barrier()
    # Solve every target, then pass 2: the quantized layer's outputs feed the next layer.
    qlayer = one
    for p in paths:
      xtx, n = stats["/".join(_representative(p, paths))]
      q = solve(linear_lib.densify(_get(one, p))[0], 2.0 * xtx / n, bits=bits,
                group_size=group_size, damp=damp, act_order=act_order)
      quantized[p].append(q)
      qlayer = _set(qlayer, p, jax.tree.map(lambda a: a[None], q))
    outputs.clear()
    for x in hidden:
      run_block(qlayer, x, cfg1, False)
      jax.effects_barrier()
    hidden = [jnp.asarray(o) for o in outputs]
    if progress is not None:
      progress(layer + 1, cfg.num_layers)

  out = dict(params)
  for p, per_layer in quantized.items():
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    out["layers"] = _set(out["layers"], p, stacked)
  return out
