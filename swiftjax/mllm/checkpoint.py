"""Where each part of a multimodal checkpoint keeps its tensors (the family reads its
`config.json` with `safetensors_loader.read_config_json`).

A multimodal checkpoint puts its parts (vision tower, projector, language model) under module
prefixes that depend on who wrote it: published checkpoints, transformers 5 (whose in-memory
names differ from what it saves), other tools' renames. Each family names its parts' known
prefixes (or a word the prefix must contain) and a probe tensor; `find_prefix` picks the prefix
this checkpoint uses from its tensor names.
"""

from typing import Any, Iterable, Sequence

from swiftjax import errors
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

TensorTable = dict[str, tuple[tuple[str, ...], int | None, bool]]


def find_prefix(names: Iterable[str], probe: str, where: Any, what: str, *,
                candidates: Sequence[str] | None = None, containing: str = "") -> str:
  """The prefix under which a checkpoint holds the tensor `probe` (a name suffix, e.g.
  `embed_tokens.weight`).

  Args:
    names: the checkpoint's tensor names.
    probe: a tensor every layout of the part has, without its prefix.
    where: how errors name the checkpoint (its directory).
    what: how errors name the part (`vision tower`, `connector`, ...).
    candidates: the known prefixes, most preferred first: the first `c` with `c + probe` among
      `names` is returned. Without them the search is open: the shortest prefix of a name that
      ends in `probe` and contains `containing` (ties: the first in sorted order).
    containing: with an open search, a word the name must contain (`vision_tower`).

  Raises:
    CheckpointError: no such tensor (naming `where`, `what` and what was looked for).
  """
  if candidates is not None:
    names = set(names)
    prefix = next((c for c in candidates if c + probe in names), None)
    if prefix is None:
      raise errors.CheckpointError(
          f"{where}: no {what} tensors found (looked for "
          f"{', '.join(repr(c + probe) for c in candidates)})")
    return prefix
  found = sorted(n[:len(n) - len(probe)] for n in names
                 if n.endswith(probe) and containing in n)
  if not found:
    raise errors.CheckpointError(f"{where}: no {what} tensors (no name ending in "
                                 f"{probe!r} containing {containing!r})")
  return min(found, key=len)


def language_model_names(text: ModelConfig, prefix: str, head: str | None = "lm_head.weight"
                         ) -> TensorTable:
  """`decoder.hf_tensor_names(text)` as a multimodal checkpoint names them: `model.*` under
  `prefix` (e.g. `language_model.model.`), the LM head as `head`; param paths under
  `language_model`. A tied `text` has no head entry (`head` may then be None)."""
  table = {}
  for name, (path, layer, transpose) in decoder.hf_tensor_names(text).items():
    name = head if name == "lm_head.weight" else prefix + name[len("model."):]
    table[name] = (("language_model",) + path, layer, transpose)
  return table
