"""Multimodal rows (ms-swift's format) -> rendered examples with their images -> static batches.

A row is a conversation whose message contents mark images with `<image>` placeholders, matched
in order (over all messages) to the row's top-level `images` list:

    {"messages": [{"role": "user", "content": "<image>What is this?"},
                  {"role": "assistant", "content": "A cat."}],
     "images": ["cat.jpg"]}

An image is a path (relative to the dataset file's directory, or absolute), a `data:image/...;
base64,` URI, or `{"path": ...}` / `{"bytes": <base64 or raw bytes>}`. Rows without images
(text only) mix freely with the others. Every problem names the dataset file and the row
(`file:line` for JSONL, `file[index]` for JSON): a missing image file, a number of images that
differs from the number of placeholders, an image that cannot be decoded.

Building an example: the images are decoded (RGB), preprocessed by the model family's own image
processor (`family.preprocess_images`), each placeholder is replaced by the exact text the
family's processor puts there (`family.image_text`: the run of image tokens and any wrapper
tokens), and the conversation is rendered with the chat template by `swiftjax.data.render`
(loss on assistant turns only; image tokens never are targets).

Batching keeps static shapes: every example is whole in one row (rows are padded, or several
whole examples are packed into one row, keeping their order, with `segment_ids`), and a batch's
image inputs have a fixed number of slots per input (`Rows.slots`, axis 0 of e.g.
`pixel_values`): the images of the batch's rows in token order, then zero padding. The model
gives features for the padding slots too, but the image tokens only ever take the first ones.
Zero padding must be something the family reads as "no image": LLaVA's zero pixels are just
unused images, Idefics3 drops all-zero sub-images. Qwen2-VL's `image_grid_thw` describes how
the patches split into images, and zero grid rows do not describe empty images, so inputs with a
grid (`UNPADDED_INPUTS`) are concatenated unpadded: those batches compile once per distinct
shape (one shape when every row has the same number of same-sized images).
"""

import base64
import collections
import dataclasses
import io
import pathlib
from typing import Any, Callable, Sequence

import numpy as np

from swiftjax import errors
from swiftjax.data import formats
from swiftjax.data import render

IMAGE_PLACEHOLDER = "<image>"
IMAGE_KEY_PREFIX = "image/"  # batch keys of the image inputs: `image/pixel_values`, ...
# Image inputs whose zero rows would not read as empty images (see the module docstring).
UNPADDED_INPUTS = ("image_grid_thw",)


class ImageError(formats.RowError):
  """A row's images do not fit it: missing or unreadable file, or a count that does not match
  the placeholders. The message names the dataset file and the row."""


class _ImageProblem(ValueError):
  """A row's images do not fit it (`read_rows` turns it into an `ImageError`)."""


@dataclasses.dataclass(frozen=True)
class ImageSource:
  """Where an image comes from: a file `path`, or encoded `data` (PNG/JPEG/... bytes)."""
  path: pathlib.Path | None = None
  data: bytes | None = None

  def __str__(self):
    return str(self.path) if self.path is not None else f"<{len(self.data)} bytes>"


def _decode_b64(text: str) -> bytes:
  try:
    return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text,
                            validate=True)
  except (ValueError, IndexError):
    raise ValueError("image bytes are not valid base64") from None


def image_source(entry: Any, base_dir: pathlib.Path) -> ImageSource:
  """One `images` entry as an `ImageSource`; relative paths are under `base_dir`."""
  if isinstance(entry, dict):
    data = entry.get("bytes")
    if data is not None:
      return ImageSource(data=bytes(data) if isinstance(data, (bytes, bytearray))
                         else _decode_b64(str(data)))
    entry = entry.get("path", entry.get("image"))
  if not isinstance(entry, str) or not entry:
    raise ValueError(f"an image must be a path, a data URI or {{'path'|'bytes': ...}}, got "
                     f"{type(entry).__name__}")
  if entry.startswith("data:image"):
    return ImageSource(data=_decode_b64(entry))
  if entry.startswith(("http://", "https://")):
    raise ValueError(f"image URLs are not fetched ({entry}); download the file first")
  path = pathlib.Path(entry).expanduser()
  return ImageSource(path=path if path.is_absolute() else base_dir / path)


def count_placeholders(messages: Sequence[dict]) -> int:
  """Number of `<image>` placeholders over all message contents."""
  return sum(str(m.get("content") or "").count(IMAGE_PLACEHOLDER) for m in messages)


def normalize(row: Any, base_dir: pathlib.Path) -> dict:
  """A row as `{"messages", "tools", "images": [ImageSource]}`.

  Raises:
    ValueError: a malformed row, a missing image file, or a number of images that differs from
      the number of `<image>` placeholders (`read_rows` adds the file and row).
  """
  out = formats.normalize(row)
  images = row.get("images") or []
  if isinstance(images, (str, dict)):
    images = [images]
  if not isinstance(images, list):
    raise _ImageProblem(f"`images` must be a list, got {type(images).__name__}")
  sources = []
  for i, entry in enumerate(images):
    try:
      sources.append(image_source(entry, base_dir))
    except ValueError as e:
      raise _ImageProblem(f"image {i}: {e}") from None
  n = count_placeholders(out["messages"])
  if n != len(sources):
    raise _ImageProblem(f"{n} {IMAGE_PLACEHOLDER} placeholder(s) in the messages but "
                     f"{len(sources)} image(s) in `images`")
  for i, src in enumerate(sources):
    if src.path is not None and not src.path.is_file():
      raise _ImageProblem(f"image {i}: file {src.path} does not exist")
  out["images"] = sources
  return out


def read_rows(path: str | pathlib.Path, *, skip_bad_rows: bool = False
              ) -> tuple[list[dict], int]:
  """Reads a `.json`/`.jsonl(.gz)` dataset of (possibly) multimodal rows.

  Returns:
    `(rows, skipped)`: rows as `normalize` gives them plus `"where"` (`file:line` or
    `file[index]`), and the number of bad rows dropped with `skip_bad_rows`.

  Raises:
    ImageError: a row whose images do not fit (missing file, count mismatch).
    RowError: any other malformed row, naming the file and row; no usable rows.
  """
  path = pathlib.Path(path)
  rows, skipped = [], 0
  for where, row in formats.iter_rows(path):
    try:
      if isinstance(row, Exception):
        raise row
      rows.append(dict(normalize(row, path.parent), where=where))
    except (ValueError, KeyError, TypeError) as e:
      if skip_bad_rows:
        skipped += 1
        continue
      msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
      error = ImageError if isinstance(e, _ImageProblem) else formats.RowError
      raise error(f"{where}: {msg}") from None
  if not rows:
    raise formats.RowError(f"{path}: no usable rows" + (f" ({skipped} bad rows skipped)"
                                                         if skipped else ""))
  return rows, skipped


def load_image(src: ImageSource, where: str = "", index: int = 0):
  """Decodes one image as an RGB `PIL.Image`.

  Raises:
    ImageError: a missing file or bytes PIL cannot decode, naming `where` and the image.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  prefix = f"{where}: image {index}" if where else f"image {index}"
  if src.path is not None and not src.path.is_file():
    raise ImageError(f"{prefix}: file {src.path} does not exist")
  try:
    with Image.open(src.path if src.path is not None else io.BytesIO(src.data)) as im:
      return im.convert("RGB")  # forces the full decode: a truncated file fails here
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ImageError(f"{prefix} ({src}) is not a readable image: {e}") from None


def expand(messages: Sequence[dict], texts: Sequence[str]) -> list[dict]:
  """Messages with the i-th `<image>` placeholder (in message order) replaced by `texts[i]`.

  Training rows (`Builder.build`) and prompts (`swiftjax.mllm.chat`) both expand with this;
  each checks the count first with its own error.

  Raises:
    ValueError: fewer placeholders than `texts`.
  """
  out, i = [], 0
  for m in messages:
    content = m.get("content")
    if isinstance(content, str) and IMAGE_PLACEHOLDER in content:
      pieces = content.split(IMAGE_PLACEHOLDER)
      parts = [pieces[0]]
      for piece in pieces[1:]:
        parts += [texts[i], piece]
        i += 1
      m = dict(m, content="".join(parts))
    out.append(m)
  if i != len(texts):
    raise ValueError(f"{i} placeholders for {len(texts)} images")
  return out


@dataclasses.dataclass
class Example(render.Example):
  """A rendered conversation with its images.

  Attributes (besides `render.Example`'s `input_ids [n]`, `weights [n]`, `text`):
    image_inputs: `family.preprocess_images` of the row's images (each array's axis 0 runs
      over the images, or their patches), or None for a text-only row.
    num_images: images in the row.
    where: the dataset file and row.
  """
  image_inputs: dict[str, np.ndarray] | None = None
  num_images: int = 0
  where: str = ""


class Builder:
  """Turns rows into `Example`s for one model family, caching decoded and preprocessed images
  (datasets ask many questions about the same image).

  Args:
    tokenizer: the tokenizer with the chat template.
    family: the family module (`swiftjax.mllm.llava`, ...): `preprocess_images`, `image_text`.
    processor: the model's processor.
    image_token_id: the id the family replaces with image features.
    render_fn: `render_fn(row) -> render.Example` for a row whose placeholders are expanded
      (default: `render.render(tokenizer, messages, tools)`: assistant turns trained).
  """

  def __init__(self, tokenizer, family: Any, processor: Any, image_token_id: int,
               render_fn: Callable[[dict], render.Example] | None = None):
    self.tokenizer, self.family, self.processor = tokenizer, family, processor
    self.image_token_id = int(image_token_id)
    self.render_fn = render_fn or (lambda r: render.render(tokenizer, r["messages"],
                                                           r.get("tools")))
    self._inputs: dict[tuple[ImageSource, ...], tuple[dict, list[str]]] = {}

  def images(self, sources: Sequence[ImageSource], where: str = ""
             ) -> tuple[dict[str, np.ndarray], list[str]]:
    """`(image inputs, placeholder texts)` of a row's images (cached per tuple of sources).

    Raises:
      ImageError: an image that cannot be read.
    """
    sources = tuple(sources)
    if sources not in self._inputs:
      images = [load_image(s, where, i) for i, s in enumerate(sources)]
      inputs = {k: np.asarray(v) for k, v in
                self.family.preprocess_images(self.processor, images).items()}
      texts = [self.family.image_text(self.processor, inputs, i) for i in range(len(images))]
      self._inputs[sources] = inputs, texts
    return self._inputs[sources]

  def build(self, row: dict) -> Example:
    """One row (from `read_rows`, or any dict with `messages` and `images`) as an `Example`.

    Raises:
      ImageError: an unreadable image, or image tokens that do not come out of rendering as
        many as the processor's text holds (a chat template that alters them).
    """
    where = row.get("where", "row")
    sources = tuple(row.get("images") or ())
    messages = row["messages"]
    if count_placeholders(messages) != len(sources):
      raise ImageError(f"{where}: {count_placeholders(messages)} {IMAGE_PLACEHOLDER} "
                       f"placeholder(s) but {len(sources)} image(s)")
    inputs, texts = self.images(sources, where) if sources else (None, [])
    ex = self.render_fn(dict(row, messages=expand(messages, texts)))
    ids = ex.input_ids
    is_image = ids == self.image_token_id
    want = sum(t.count(self.image_token_text) for t in texts) if texts else 0
    if int(is_image.sum()) != want:
      raise ImageError(f"{where}: the rendered conversation holds {int(is_image.sum())} image "
                       f"tokens, the processor's image text {want}")
    weights = np.where(is_image, 0.0, ex.weights).astype(np.float32)  # never a target
    return Example(ids, weights, ex.text, inputs, len(sources), where)

  @property
  def image_token_text(self) -> str:
    return self.tokenizer.convert_ids_to_tokens(self.image_token_id)


def truncate(examples: Sequence[Example], max_length: int, strategy: str, image_token_id: int
             ) -> tuple[list[Example], int]:
  """`packing.truncate` for examples with images: `left`/`right` cut text only; an example
  whose cut would remove any of its image tokens is dropped (counted as affected)."""
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
    keep = slice(n - max_length, n) if strategy == "left" else slice(0, max_length)
    if (ex.input_ids[keep] == image_token_id).sum() != (ex.input_ids == image_token_id).sum():
      continue
    out.append(dataclasses.replace(ex, input_ids=ex.input_ids[keep], weights=ex.weights[keep]))
  return out, affected


def _best_fit(lengths: Sequence[int], max_length: int) -> list[list[int]]:
  """Best-fit-decreasing bins of example indices (as `packing.pack`); each bin's examples are
  then put in index order, so a row's images follow the dataset's order."""
  bins: list[list[int]] = []
  room: list[int] = []
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    best = min((b for b in range(len(bins)) if room[b] >= lengths[i]), key=lambda b: room[b],
               default=None)
    if best is None:
      bins.append([])
      room.append(max_length)
      best = len(bins) - 1
    bins[best].append(i)
    room[best] -= lengths[i]
  return [sorted(b) for b in bins]


@dataclasses.dataclass
class Rows:
  """Examples laid out in fixed-length rows, with what a batch's image inputs look like.

  Attributes:
    tokens: `[N, L]` int32; weights `[N, L]` float32 (target weights); segment_ids `[N, L]`
      int32 (1, 2, ... per example, 0 = padding); positions `[N, L]` int32 (per example).
    members: per row, the indices of its examples in `examples`, in token order.
    examples: the examples.
    slots: per image input (e.g. `pixel_values`), axis 0 of every batch's padded array: enough
      for the `batch_size` rows with the most images; empty when the inputs are not padded.
    image_shapes: per image input, `(trailing shape, dtype)` of the padded arrays.
  """
  tokens: np.ndarray
  weights: np.ndarray
  segment_ids: np.ndarray
  positions: np.ndarray
  members: list[list[int]]
  examples: list[Example]
  slots: dict[str, int]
  image_shapes: dict[str, tuple[tuple[int, ...], np.dtype]]

  @property
  def max_segments(self) -> int:
    """Most examples in one row (1: unpacked)."""
    return max(len(m) for m in self.members)

  def batch(self, idx: Sequence[int]) -> dict[str, np.ndarray]:
    """The rows `idx` as one batch: `tokens`, `weights`, `segment_ids`, `positions` `[B, L]`
    and `image/<input>` for each image input, `[slots, ...]`: the rows' images in token order,
    then zeros.

    Raises:
      ConfigError: more images than slots (rows chosen from another layout).
    """
    idx = np.asarray(idx)
    out = {"tokens": self.tokens[idx], "weights": self.weights[idx],
           "segment_ids": self.segment_ids[idx], "positions": self.positions[idx]}
    if not self.slots:  # not padded: the rows' image inputs, concatenated
      found = [self.examples[e].image_inputs for r in idx for e in self.members[r]
               if self.examples[e].image_inputs]
      for key in self.image_shapes:
        if found:
          out[IMAGE_KEY_PREFIX + key] = np.concatenate([f[key] for f in found])
      return out
    for key, slots in self.slots.items():
      trailing, dtype = self.image_shapes[key]
      padded = np.zeros((slots, *trailing), dtype)
      at = 0
      for r in idx:
        for e in self.members[r]:
          x = (self.examples[e].image_inputs or {}).get(key)
          if x is None:
            continue
          if at + len(x) > slots:
            raise errors.ConfigError(f"batch image input {key!r} needs more than its {slots} "
                                     "slots")
          padded[(slice(at, at + len(x)),) + tuple(slice(0, d) for d in x.shape[1:])] = x
          at += len(x)
      out[IMAGE_KEY_PREFIX + key] = padded
    return out


def layout(examples: Sequence[Example], max_length: int, batch_size: int, *,
           packing: bool = True, pad_images: bool | None = None) -> Rows:
  """Lays examples out in rows of `max_length` tokens (packed whole, or one per row).

  Args:
    examples: examples of at most `max_length` tokens (`truncate` first).
    max_length: tokens per row.
    batch_size: rows per batch (sets the image slots).
    packing: pack several whole examples per row (no example is split, so its image tokens
      stay with it); otherwise one example per row, right-padded.
    pad_images: zero-pad every batch's image inputs to fixed slots (static shapes); None:
      unless an input is one of `UNPADDED_INPUTS`.

  Raises:
    ConfigError: an example longer than `max_length`, or image inputs whose trailing
      dimensions differ in rank between examples.
  """
  examples = list(examples)
  lengths = [len(e.input_ids) for e in examples]
  if not examples:
    raise errors.ConfigError("no examples to lay out")
  if max(lengths) > max_length:
    raise errors.ConfigError(f"an example of {max(lengths)} tokens exceeds max_length="
                             f"{max_length}; truncate first")
  members = _best_fit(lengths, max_length) if packing else [[i] for i in range(len(examples))]
  n = len(members)
  tokens = np.zeros((n, max_length), np.int32)
  weights = np.zeros((n, max_length), np.float32)
  segments = np.zeros((n, max_length), np.int32)
  positions = np.zeros((n, max_length), np.int32)
  for r, row in enumerate(members):
    at = 0
    for s, e in enumerate(row, 1):
      k = lengths[e]
      tokens[r, at:at + k] = examples[e].input_ids
      weights[r, at:at + k] = examples[e].weights
      segments[r, at:at + k] = s
      positions[r, at:at + k] = np.arange(k)
      at += k
  # Image inputs: per key, the largest trailing shape, and axis-0 slots for the batch_size
  # rows that need the most.
  shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
  for ex in examples:
    for key, x in (ex.image_inputs or {}).items():
      if key not in shapes:
        shapes[key] = (x.shape[1:], x.dtype)
      elif len(shapes[key][0]) != x.ndim - 1:
        raise errors.ConfigError(f"{ex.where}: image input {key!r} has rank {x.ndim}, other "
                                 f"rows' {len(shapes[key][0]) + 1}")
      else:
        shapes[key] = (tuple(max(a, b) for a, b in zip(shapes[key][0], x.shape[1:])),
                       shapes[key][1])
  slots = {}
  if pad_images is None:
    pad_images = not any(key in UNPADDED_INPUTS for key in shapes)
  for key in shapes if pad_images else ():
    per_row = sorted(sum(len((examples[e].image_inputs or {}).get(key, ())) for e in row)
                     for row in members)
    slots[key] = max(int(sum(per_row[-batch_size:])), 1)
  return Rows(tokens, weights, segments, positions, members, examples, slots, shapes)


def build_examples(rows: Sequence[dict], builder: Builder, *, max_length: int,
                   truncation_strategy: str = "delete", skip_bad_rows: bool = False
                   ) -> tuple[list[Example], dict]:
  """Builds, truncates and filters examples (those with no trained token are dropped).

  Returns:
    `(examples, stats)`: stats count `examples`, `images`, `text_only`, `truncated` and
    `skipped_images` (rows dropped for unreadable images with `skip_bad_rows`).

  Raises:
    ImageError: an unreadable image (unless `skip_bad_rows`).
    ConfigError: no example left with a trained token.
  """
  examples, stats = [], collections.Counter()
  for row in rows:
    try:
      examples.append(builder.build(row))
    except ImageError:
      if not skip_bad_rows:
        raise
      stats["skipped_images"] += 1
  examples, stats["truncated"] = truncate(examples, max_length, truncation_strategy,
                                          builder.image_token_id)
  examples = [e for e in examples if e.weights[1:].sum() > 0]
  if not examples:
    raise errors.ConfigError("after rendering and truncation no example has a trained token "
                             f"(max_length={max_length}, truncation={truncation_strategy})")
  stats["examples"] = len(examples)
  stats["images"] = sum(e.num_images for e in examples)
  stats["text_only"] = sum(e.num_images == 0 for e in examples)
  return examples, dict(stats)
