"""One dispatching matmul that understands every weight kind.

Model code calls `linear(x, w)` and never branches on how `w` is stored. A plain array is a dense
kernel laid out `[in, out]`; tuners and quantizers define their own weight kinds (pytree classes
such as a LoRA-wrapped kernel or an NF4-packed kernel) and register a matmul for them with
`register_kind`. Models therefore never import tuners: the dependency points the other way.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# type -> fn(x, w, compute_dtype) -> y
_KINDS: dict[type, Callable[..., jax.Array]] = {}
# type -> fn(w, dtype) -> dense kernel [..., in, out]
_DENSIFY: dict[type, Callable[..., jax.Array]] = {}
# type -> fn(w, ids) -> rows of an embedding table stored as that kind
_TAKE: dict[type, Callable[..., jax.Array]] = {}
# type -> fn(w) -> the same weight kind standing for the transposed matrix
_TRANSPOSE: dict[type, Callable[..., Any]] = {}
# type -> fn(w, i) -> the same kind standing for layer i of a layer-stacked w, without slicing
_LAYER_VIEW: dict[type, Callable[..., Any]] = {}
# type -> fn(w) -> whether this instance takes a layer view (absent: every instance does)
_VIEWABLE: dict[type, Callable[[Any], bool]] = {}


def register_kind(kind: type, matmul: Callable[..., jax.Array],
                  densify: Callable[..., jax.Array] | None = None,
                  take: Callable[..., jax.Array] | None = None,
                  transpose: Callable[..., Any] | None = None,
                  layer_view: Callable[..., Any] | None = None,
                  viewable: Callable[[Any], bool] | None = None) -> None:
  """Registers `matmul(x, w, compute_dtype)` as the way to apply weights of type `kind`.

  Args:
    kind: the pytree class of the weight (must be registered with JAX as a pytree).
    matmul: computes `x @ W_effective` for `x` of shape `[..., in]`, returning `[..., out]`.
    densify: `densify(w, dtype)` returns `W_effective` as a dense `[..., in, out]` array (for
      merging, export and tuners that need the full matrix, such as DoRA's norms).
    take: `take(w, ids)` gathers rows, for kinds that can also store embedding tables.
    transpose: `transpose(w)` returns a weight of the same kind for the transposed matrix
      (tied output heads use the embedding table transposed).
    layer_view: `layer_view(w, i)` returns a weight standing for layer `i` (a traced int32
      scalar) of a layer-stacked `w [L, ...]` that still holds the whole stack, for kinds whose
      matmul can read one layer in place (the layer scan then does not copy that layer out).
    viewable: `viewable(w)`: whether this instance takes a layer view (e.g. only the layouts
      the in-place matmul reads); by default every instance of a kind with `layer_view` does.
  """
  _KINDS[kind] = matmul
  if densify is not None:
    _DENSIFY[kind] = densify
  if take is not None:
    _TAKE[kind] = take
  if transpose is not None:
    _TRANSPOSE[kind] = transpose
  if layer_view is not None:
    _LAYER_VIEW[kind] = layer_view
  if viewable is not None:
    _VIEWABLE[kind] = viewable


def has_layer_view(w: Any) -> bool:
  """Whether `w` takes a layer view: its kind registered a `layer_view` (and `w` is viewable)."""
  return type(w) in _LAYER_VIEW and _VIEWABLE.get(type(w), lambda _: True)(w)


def layer_view(w: Any, i: jax.Array) -> Any:
  """Layer `i` of a layer-stacked weight of a kind with a registered `layer_view`."""
  return _LAYER_VIEW[type(w)](w, i)


def transpose(w: Any) -> Any:
  """`w` transposed on its last two axes, for arrays and kinds that register `transpose`."""
  if isinstance(w, (jax.Array, np.ndarray)):
    return jnp.swapaxes(w, -1, -2)
  if type(w) in _TRANSPOSE:
    return _TRANSPOSE[type(w)](w)
  return jnp.swapaxes(densify(w), -1, -2)


def embedding_lookup(table: Any, ids: jax.Array) -> jax.Array:
  """Rows `table[ids]` of an embedding table `[V, D]` of any registered kind -> `[..., D]`."""
  if isinstance(table, (jax.Array, np.ndarray)):
    return jnp.take(table, ids, axis=0)
  if type(table) in _TAKE:
    return _TAKE[type(table)](table, ids)
  return jnp.take(densify(table), ids, axis=0)



def densify(w: Any, dtype: Any | None = None) -> jax.Array:
  """The dense `[..., in, out]` kernel any registered weight kind stands for."""
  if isinstance(w, (jax.Array, np.ndarray)):
    return w if dtype is None else w.astype(dtype)
  fn = _DENSIFY.get(type(w))
  if fn is None:
    raise TypeError(f"weight kind {type(w).__name__} cannot be densified")
  return fn(w, dtype)


def registered_kinds() -> tuple[type, ...]:
  """The weight kinds `linear` understands besides plain arrays."""
  return tuple(_KINDS)


def is_weight_kind(x: Any) -> bool:
  """True for instances of a registered weight kind (used as `is_leaf` in tree maps)."""
  return type(x) in _KINDS


def linear(x: jax.Array, w: Any, compute_dtype: Any | None = None) -> jax.Array:
  """Computes `x @ w` for any registered weight kind.

  Args:
    x: activations `[..., in]`.
    w: a dense kernel `[in, out]` or an instance of a registered weight kind.
    compute_dtype: dtype of the matmul inputs (e.g. `jnp.bfloat16`); `None` keeps `x.dtype`.
      Accumulation is in at least float32.

  Returns:
    `[..., out]` in `compute_dtype` (or `x.dtype`).
  """
  dtype = compute_dtype or x.dtype
  if isinstance(w, (jax.Array, np.ndarray)):
    return jnp.einsum("...i,io->...o", x.astype(dtype), w.astype(dtype),
                      preferred_element_type=jnp.promote_types(dtype, jnp.float32)).astype(dtype)
  matmul = _KINDS.get(type(w))
  if matmul is None:
    raise TypeError(f"linear() got a weight of unregistered kind {type(w).__name__}; "
                    f"known kinds: array, {', '.join(k.__name__ for k in _KINDS) or '(none)'}")
  return matmul(x, w, dtype)
