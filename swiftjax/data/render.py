"""Rendering conversations with the tokenizer's chat template, with per-token loss weights.

The text is rendered once; the character span of every trained message (assistant turns by
default, including the template's end-of-turn marker, so the model learns to stop) is found by
rendering growing prefixes of the conversation, and tokens are weighted by where their
characters fall (`return_offsets_mapping`). A message's `loss` key overrides the default
(`True` trains a non-assistant message, its role header included; `False` skips an assistant
one).
"""

import dataclasses
from typing import Any, Sequence

import numpy as np

from swiftjax import errors

# Roles of the normalised format that chat templates do not all know.
_TEMPLATE_ROLE = {"tool_call": "assistant", "tool_response": "tool"}
_TRAINED_BY_DEFAULT = ("assistant", "tool_call")


@dataclasses.dataclass
class Example:
  """One rendered conversation.

  Attributes:
    input_ids: `[n]` int32 token ids.
    weights: `[n]` float32 loss weight of each token *as a prediction target*.
    text: the rendered text (for inspection and tests).
  """
  input_ids: np.ndarray
  weights: np.ndarray
  text: str


def _render(tokenizer, messages, tools, add_generation_prompt):
  msgs = [{"role": _TEMPLATE_ROLE.get(m["role"], m["role"]), "content": m["content"]}
          for m in messages]
  kwargs = {"tools": tools} if tools else {}
  return tokenizer.apply_chat_template(msgs, tokenize=False,
                                       add_generation_prompt=add_generation_prompt, **kwargs)


def trained_spans(tokenizer, messages: Sequence[dict], tools: Any = None
                  ) -> tuple[str, list[tuple[int, int]]]:
  """The rendered text and the `[start, end)` character spans that carry loss."""
  if not getattr(tokenizer, "chat_template", None):
    raise errors.ConfigError("the tokenizer has no chat template; SFT rendering needs one")
  full = _render(tokenizer, messages, tools, False)
  spans = []
  for i, m in enumerate(messages):
    trained = m.get("loss", m["role"] in _TRAINED_BY_DEFAULT)
    if not trained:
      continue
    # An assistant turn starts after the generation prompt (`<|im_start|>assistant\n`,
    # which is never trained); any other turn starts where the previous one ended.
    before = _render(tokenizer, messages[:i], tools,
                     m["role"] in _TRAINED_BY_DEFAULT) if i else ""
    through = _render(tokenizer, messages[: i + 1], tools, False)
    if not (full.startswith(through) and through.startswith(before)):
      # Templates that rewrite earlier turns depending on later ones (some strip reasoning
      # from past turns) cannot be labelled by prefixes.
      raise errors.ConfigError("the chat template is not prefix-stable at message "
                               f"{i} ({m['role']}); cannot locate its tokens")
    if m["content"] and m["content"] not in through[len(before):]:
      raise errors.ConfigError(f"message {i} content does not appear in its rendered turn")
    spans.append((len(before), len(through)))
  return full, spans


def render(tokenizer, messages: Sequence[dict], tools: Any = None) -> Example:
  """Tokenizes a conversation and weights its trained tokens 1, the rest 0."""
  text, spans = trained_spans(tokenizer, messages, tools)
  enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  ids = np.asarray(enc["input_ids"], np.int32)
  starts = np.asarray([s for s, _ in enc["offset_mapping"]], np.int64)
  weights = np.zeros(len(ids), np.float32)
  for a, b in spans:
    weights[(starts >= a) & (starts < b)] = 1.0
  return Example(ids, weights, text)
