"""Packing rendered examples into fixed-length rows without cross-sample attention.

Best-fit-decreasing: examples sorted by length, longest first, each placed in the open row
with the least room that still fits it (a new row when none does). Every row carries
`segment_ids` (1, 2, ... per example, 0 on padding) and per-segment `positions`, which
`decoder.apply(segment_ids=..., positions=...)` uses so no token attends across examples and
RoPE restarts at 0 for each one.
"""

import dataclasses
from typing import Sequence

import numpy as np

from swiftjax import errors
from swiftjax.data.render import Example


@dataclasses.dataclass
class Batch:
  """Packed rows, all `[N, L]`: `tokens` int32, `weights` float32 (target weights),
  `segment_ids` int32 (0 = padding), `positions` int32."""
  tokens: np.ndarray
  weights: np.ndarray
  segment_ids: np.ndarray
  positions: np.ndarray


def truncate(examples: Sequence[Example], max_length: int, strategy: str = "delete"
             ) -> tuple[list[Example], int]:
  """Applies `delete` (drop), `left` (keep the end) or `right` (keep the start) to examples
  longer than `max_length`; returns the kept examples and how many were affected."""
  if strategy not in ("delete", "left", "right"):
    raise errors.ConfigError(f"truncation strategy {strategy!r} is not delete, left or right")
  out, affected = [], 0
  for ex in examples:
    n = len(ex.input_ids)
    if n <= max_length:
      out.append(ex)
      continue
    affected += 1
    if strategy == "delete":
      continue
    sl = slice(n - max_length, n) if strategy == "left" else slice(0, max_length)
    out.append(Example(ex.input_ids[sl], ex.weights[sl], ex.text))
  return out, affected


def pack(examples: Sequence[Example], max_length: int) -> Batch:
  """Packs examples (each at most `max_length` tokens) into as few rows as BFD finds."""
  lengths = [len(e.input_ids) for e in examples]
  if any(n > max_length for n in lengths):
    raise errors.ConfigError(f"an example of {max(lengths)} tokens exceeds max_length="
                             f"{max_length}; truncate first")
  rows: list[list[int]] = []
  room: list[int] = []
  for i in sorted(range(len(examples)), key=lambda i: -lengths[i]):
    best = min((r for r in range(len(rows)) if room[r] >= lengths[i]),
               key=lambda r: room[r], default=None)
    if best is None:
      rows.append([])
      room.append(max_length)
      best = len(rows) - 1
    rows[best].append(i)
    room[best] -= lengths[i]
  return _assemble([[examples[i] for i in row] for row in rows], max_length)


def pad(examples: Sequence[Example], max_length: int) -> Batch:
  """One example per row, right-padded (the unpacked layout)."""
  return _assemble([[e] for e in examples], max_length)


def _assemble(rows: Sequence[Sequence[Example]], max_length: int) -> Batch:
  n = len(rows)
  tokens = np.zeros((n, max_length), np.int32)
  weights = np.zeros((n, max_length), np.float32)
  segments = np.zeros((n, max_length), np.int32)
  positions = np.zeros((n, max_length), np.int32)
  for r, row in enumerate(rows):
    at = 0
    for s, ex in enumerate(row, 1):
      k = len(ex.input_ids)
      tokens[r, at:at + k] = ex.input_ids
      weights[r, at:at + k] = ex.weights
      segments[r, at:at + k] = s
      positions[r, at:at + k] = np.arange(k)
      at += k
  return Batch(tokens, weights, segments, positions)
