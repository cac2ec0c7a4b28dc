"""Parameter paths: how tuners name and select leaves of a parameter pytree.

A path is the `/`-joined dict keys from the root, e.g. `layers/self_attn/q_proj/kernel`.
Targets are chosen like PEFT's `target_modules`, over these paths:
  * `"all-linear"`: every 2-D (or layer-stacked 3-D) `kernel` except the output head;
  * a list of module names (`["q_proj", "v_proj"]`): kernels whose parent module has that name;
  * any other string: a regex that must match the whole path (`.*/(q|v)_proj/kernel`).
"""

import re
from typing import Any, Iterable, Sequence

import jax

from swiftjax import errors
from swiftjax import linear

# Kernels that `all-linear` leaves alone, as PEFT does with the output layer.
_NOT_LINEAR_TARGETS = ("lm_head",)


def key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path: Sequence[Any]) -> str:
  return "/".join(key_name(k) for k in path)


def flatten(tree: Any, *, kinds_as_leaves: bool = False) -> dict[str, Any]:
  """`{path: leaf}` for every leaf (None leaves are dropped). With `kinds_as_leaves`, weight
  kinds registered with `swiftjax.linear` (quantized kernels, ...) count as single leaves."""
  is_leaf = linear.is_weight_kind if kinds_as_leaves else None
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {path_str(p): leaf for p, leaf in leaves}


def get(tree: Any, path: str) -> Any:
  for key in path.split("/"):
    tree = tree[key]
  return tree


def set_in(tree: dict, path: str, value: Any) -> None:
  """Sets `tree[a][b]... = value`, creating dicts on the way (mutates `tree`)."""
  keys = path.split("/")
  for key in keys[:-1]:
    tree = tree.setdefault(key, {})
  tree[keys[-1]] = value


def copy_dicts(tree: Any) -> Any:
  """A copy of the nested-dict structure that shares the leaves."""
  if isinstance(tree, dict):
    return {k: copy_dicts(v) for k, v in tree.items()}
  return tree


def match_targets(params: Any, target_modules: str | Iterable[str]) -> list[str]:
  """Paths of the kernels `target_modules` selects (see the module docstring).

  Raises:
    ConfigError: nothing matches (the message lists the kernels that exist).
  """
  kernels = {p: leaf for p, leaf in flatten(params, kinds_as_leaves=True).items()
             if p.endswith("kernel") and getattr(leaf, "ndim", 0) >= 2}
  if target_modules == "all-linear":
    found = [p for p in kernels if not any(n in p.split("/") for n in _NOT_LINEAR_TARGETS)]
  elif isinstance(target_modules, str):
    try:
      pattern = re.compile(target_modules)
    except re.error as e:
      raise errors.ConfigError(f"target_modules regex {target_modules!r} is invalid: {e}") from None
    found = [p for p in kernels if pattern.fullmatch(p)]
  else:
    names = set(target_modules)
    found = [p for p in kernels if len(p.split("/")) >= 2 and p.split("/")[-2] in names]
  if not found:
    modules = sorted({p.split("/")[-2] for p in kernels if "/" in p})
    raise errors.ConfigError(
        f"target_modules={target_modules!r} matches no kernel; kernels are "
        f"{sorted(kernels)[:8]}{' ...' if len(kernels) > 8 else ''} "
        f"(module names: {', '.join(modules)})")
  return sorted(found)
