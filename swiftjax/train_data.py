"""Training rows: read, split into training and validation rows, rendered to examples.

    rows, val_rows, stats = train_data.read_splits(cfg, formats.read_rows)
    examples, val_examples, stats = train_data.build_splits(cfg, tokenizer)   # rendered

Datasets are `path` or `path#N` (N rows sampled with the seed); validation rows come from
`cfg.val_dataset` or a seeded `cfg.split_dataset_ratio` of the training rows. Rendering uses
the chat template (or `cfg.agent_template`) and `cfg.loss_scale`, then truncates to
`cfg.max_length`; examples left without a trained token are dropped. The `read` function is a
parameter, so multimodal rows (`swiftjax.data.multimodal.read_rows`) go through the same
sampling and splitting.
"""

from typing import Callable, Sequence

import numpy as np

from swiftjax import errors
from swiftjax.agent import templates
from swiftjax.data import formats
from swiftjax.data import packing
from swiftjax.data import render
from swiftjax.train_config import TrainConfig


def read_datasets(cfg: TrainConfig, read: Callable[..., tuple[list, int]],
                  specs: Sequence[str] | None = None) -> tuple[list, dict]:
  """Rows of every dataset (`path`, or `path#N` to take N rows), read with `read`.

  `specs` are the datasets to read (default: `cfg.dataset`).
  """
  rng = np.random.default_rng(cfg.seed)
  rows, stats = [], {"skipped_rows": 0}
  for spec in cfg.dataset if specs is None else specs:
    path, _, count = str(spec).partition("#")
    got, skipped = read(path, skip_bad_rows=cfg.skip_bad_rows)
    stats["skipped_rows"] += skipped
    if count:
      n = int(count)
      idx = rng.permutation(len(got))[:n] if n <= len(got) else rng.integers(0, len(got), n)
      got = [got[i] for i in idx]
    rows += got
  return rows, stats


def render_row(cfg: TrainConfig, tokenizer, row: dict) -> render.Example:
  """One normalised row rendered with the config's agent template and loss scale."""
  messages, tools = row["messages"], row["tools"]
  if cfg.agent_template is not None:
    messages, tools = templates.to_chat(messages, tools, cfg.agent_template), None
  return render.render(tokenizer, messages, tools, loss_scale=cfg.loss_scale)


def split_rows(rows: Sequence, ratio: float, seed: int) -> tuple[list, list]:
  """`(train rows, held-out rows)`: a seeded random `ratio` of the rows (at least one) held out.

  Raises:
    ConfigError: the split would leave no training row.
  """
  n_val = max(1, round(ratio * len(rows)))
  if n_val >= len(rows):
    raise errors.ConfigError(f"split_dataset_ratio={ratio} holds out {n_val} of {len(rows)} "
                             "rows and leaves none to train on")
  order = np.random.default_rng([seed, 1]).permutation(len(rows))
  held = set(order[:n_val].tolist())
  return ([r for i, r in enumerate(rows) if i not in held],
          [r for i, r in enumerate(rows) if i in held])


def read_splits(cfg: TrainConfig, read: Callable[..., tuple[list, int]]
                ) -> tuple[list, list, dict]:
  """`(train rows, validation rows, stats)`: `cfg.dataset`'s rows, and `cfg.val_dataset`'s or
  the `cfg.split_dataset_ratio` held out of them (empty when neither is set)."""
  rows, stats = read_datasets(cfg, read)
  val = []
  if cfg.val_dataset:
    val, val_stats = read_datasets(cfg, read, cfg.val_dataset)
    stats["skipped_rows"] += val_stats["skipped_rows"]
  elif cfg.split_dataset_ratio > 0:
    rows, val = split_rows(rows, cfg.split_dataset_ratio, cfg.seed)
  if val:
    stats["val_rows"] = len(val)
  return rows, val, stats


def _render_examples(cfg: TrainConfig, tokenizer, rows: Sequence[dict], what: str
                     ) -> tuple[list[render.Example], int]:
  """Renders and truncates rows; `(examples with a trained token, rows truncated)`."""
  examples = [render_row(cfg, tokenizer, r) for r in rows]
  examples, truncated = packing.truncate(examples, cfg.max_length, cfg.truncation_strategy)
  examples = [e for e in examples if e.weights[1:].sum() > 0]
  if not examples:
    raise errors.ConfigError(f"after rendering and truncation no {what}example has a trained "
                             f"token (max_length={cfg.max_length}, truncation="
                             f"{cfg.truncation_strategy})")
  return examples, truncated


def build_splits(cfg: TrainConfig, tokenizer
                 ) -> tuple[list[render.Example], list[render.Example], dict]:
  """`(training examples, validation examples, stats)`: every dataset read (`path` or
  `path#N` to take N rows; see `read_splits` for the validation rows), rendered, truncated.

  Raises:
    ConfigError: no example of a split has a trained token after truncation.
  """
  rows, val_rows, stats = read_splits(cfg, formats.read_rows)
  examples, stats["truncated"] = _render_examples(cfg, tokenizer, rows, "")
  stats["examples"] = len(examples)
  val = []
  if val_rows:
    val, stats["val_truncated"] = _render_examples(cfg, tokenizer, val_rows,
                                                          "validation ")
    stats["val_examples"] = len(val)
  return examples, val, stats


def build_examples(cfg: TrainConfig, tokenizer) -> tuple[list[render.Example], dict]:
  """Reads every dataset (`path` or `path#N` to take N rows), renders and truncates (the
  training split of `build_splits`)."""
  examples, _, stats = build_splits(cfg, tokenizer)
  return examples, stats
