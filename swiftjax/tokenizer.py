"""Tokenizers and chat templates, from `transformers.AutoTokenizer` (which reads GGUF too)."""

import pathlib
from typing import Any, Sequence

from swiftjax import errors

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def load_tokenizer(path: str | pathlib.Path):
  """Loads the tokenizer of a Hugging Face directory, a GGUF file, or a hub id.

  Args:
    path: a directory with tokenizer files, a `.gguf` file (its embedded vocabulary and chat
      template are used), or a hub model id (needs network).
  """
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  p = pathlib.Path(path)
  if p.is_dir() and not any((p / f).is_file() for f in _TOKENIZER_FILES):
    raise errors.CheckpointError(
        f"{p} has no tokenizer files (looked for {', '.join(_TOKENIZER_FILES)})")
  try:
    if p.suffix == ".gguf":
      return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    return AutoTokenizer.from_pretrained(str(path))
  except (OSError, ValueError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.CheckpointError(f"cannot load a tokenizer from {path}: {first_line}") from None


def render_chat(tokenizer, messages: Sequence[dict[str, Any]] | str, *,
                add_generation_prompt: bool = True) -> str:
  """Renders messages with the tokenizer's chat template; a plain prompt is used as it is when
  the tokenizer has no template."""
  if isinstance(messages, str):
    if not getattr(tokenizer, "chat_template", None):
      return messages
    messages = [{"role": "user", "content": messages}]
  if not getattr(tokenizer, "chat_template", None):
    return "\n".join(m["content"] for m in messages)
  return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                       add_generation_prompt=add_generation_prompt)


def encode(tokenizer, text: str) -> list[int]:
  """Token ids of already-rendered text (special tokens in the text are kept, none are added)."""
  return list(tokenizer(text, add_special_tokens=False)["input_ids"])
