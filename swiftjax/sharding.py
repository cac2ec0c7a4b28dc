"""Sharding written once: logical axis names -> mesh axes -> `NamedSharding`.

Every parameter carries logical axis names (`("embed", "mlp")`, see `decoder.param_axes`). One
rules table maps logical names to the mesh axes `data`, `fsdp`, `tensor` (flax's
`logical_axis_rules`; maxtext keeps activation axes such as `activation_batch` apart from weight
axes). Scaling from a laptop to a pod changes the mesh shape, not the model code.
"""

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from swiftjax import errors

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("layers", None),
    ("norm", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("head_dim", None),
)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `(data, fsdp, tensor)` mesh; one size may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise errors.ConfigError("at most one mesh axis size may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise errors.ConfigError(f"{len(devices)} devices do not divide into mesh {sizes}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise errors.ConfigError(f"mesh data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} needs "
                             f"{int(np.prod(sizes))} devices, found {len(devices)}")
  return Mesh(np.array(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None,
                    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> PartitionSpec:
  """PartitionSpec for one array from its logical axis names.

  A mesh axis is used at most once per array (the first logical axis that claims it wins), and a
  dimension that the mesh axes do not divide evenly is replicated instead of failing.
  """
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(axes):
    target = table.get(name) if name is not None else None
    mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
    mesh_axes = tuple(a for a in mesh_axes if a not in used)
    if mesh is not None:
      mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
      if shape is not None and mesh_axes:
        size = int(np.prod([mesh.shape[a] for a in mesh_axes]))
        if shape[i] % size:
          mesh_axes = ()
    used.update(mesh_axes)
    spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
  return PartitionSpec(*spec)


def _is_axes(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)





def tree_shardings(axes_tree: Any, shapes_tree: Any, mesh: Mesh,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """`NamedSharding` for every leaf of `shapes_tree` (arrays or `ShapeDtypeStruct`s)."""
  return jax.tree.map(
      lambda axes, s: NamedSharding(mesh, logical_to_spec(axes, s.shape, mesh, rules)),
      axes_tree, shapes_tree, is_leaf=_is_axes)


def shard(tree: Any, axes_tree: Any, mesh: Mesh,
          rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """Places every array of `tree` in the layout its logical axes ask for on `mesh`."""
  return jax.device_put(tree, tree_shardings(axes_tree, tree, mesh, rules))


def put(host: np.ndarray, target: NamedSharding | None = None) -> jax.Array:
  """Moves one host array to devices: whole onto the default device, or only the shards each
  addressable device owns under `target` (so a sharded load never gathers on one device, and
  each process of a multi-host job supplies just its own shards)."""
  if target is None:
    return jax.device_put(host)
  return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


def replicated(mesh: Mesh) -> NamedSharding:
  """The layout of a value every device holds whole (scalars, metrics, small trees)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, shape: Sequence[int],
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> NamedSharding:
  """The layout of one batch array `[batch, ...]`: its leading axis split over the mesh axes
  `activation_batch` maps to (`data` x `fsdp`), the rest replicated; an array whose leading
  axis they do not divide stays replicated."""
  axes = ("activation_batch",) + (None,) * (len(shape) - 1)
  return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


def batch_axes_size(mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> int:
  """How many ways a batch is split: the product of the mesh axes `activation_batch` maps to."""
  target = dict(rules).get("activation_batch")
  names = (target,) if isinstance(target, str) else tuple(target or ())
  return int(np.prod([mesh.shape[a] for a in names]))


def put_batch(batch: Any, mesh: Mesh,
              rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """Places a host batch (numpy arrays `[batch, ...]`, the same global batch in every process)
  split along its leading axis; each process copies only the rows its own devices hold."""
  return jax.tree.map(
      lambda x: put(np.asarray(x), batch_sharding(mesh, np.shape(x), rules)), batch)


def tree_shardings_or_replicated(axes_tree: Any, tree: Any, mesh: Mesh,
                                 rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """`tree_shardings`, or every leaf replicated when `axes_tree` is None.

  Raises:
    ConfigError: `axes_tree` does not mirror `tree`.
  """
  if axes_tree is None:
    return jax.tree.map(lambda _: replicated(mesh), tree)
  try:
    return tree_shardings(axes_tree, tree, mesh, rules)
  except (ValueError, TypeError, AttributeError, IndexError) as e:
    raise errors.ConfigError(f"logical axes do not mirror the tree they describe: {e}") from None
