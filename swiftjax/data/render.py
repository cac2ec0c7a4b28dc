"""Rendering conversations with the tokenizer's chat template, with per-token loss weights.

The text is rendered once; the character span of every trained message (assistant turns by
default, including the template's end-of-turn marker, so the model learns to stop) is found by
rendering growing prefixes of the conversation, and tokens are weighted by where their
characters fall (`return_offsets_mapping`). A message's `loss` key overrides the default
(`True` trains a non-assistant message, its role header included; `False` skips an assistant
one).

A loss scale (`swiftjax.data.loss_scale`) changes which messages are trained (`last_round`,
`all`) and re-weights characters inside their contents (`react`, `hermes`, a JSON file); a
message's `loss_scale` number multiplies the weights of its whole span. Every character gets a
weight and each token takes the weight of its first character.
"""

import dataclasses
from typing import Any, Sequence

import numpy as np

from swiftjax import errors
from swiftjax.data import loss_scale as loss_scale_lib

# Roles of the normalised format that chat templates do not all know.
_TEMPLATE_ROLE = {"tool_call": "assistant", "tool_response": "tool"}
_TRAINED_BY_DEFAULT = loss_scale_lib.TRAINED_ROLES


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


@dataclasses.dataclass(frozen=True)
class _Turn:
  """Where message `index` lies in the rendered text: its trained span `[start, end)` (an
  assistant turn starts after its generation prompt, any other turn at its role header) and
  its content as rendered (`content`, starting at `content_start`; -1 when not found)."""
  index: int
  start: int
  end: int
  content_start: int
  content: str


def _render(tokenizer, messages, tools, add_generation_prompt):
  msgs = [{"role": _TEMPLATE_ROLE.get(m["role"], m["role"]), "content": m["content"]}
          for m in messages]
  kwargs = {"tools": tools} if tools else {}
  return tokenizer.apply_chat_template(msgs, tokenize=False,
                                       add_generation_prompt=add_generation_prompt, **kwargs)


def _turns(tokenizer, messages: Sequence[dict], tools: Any, which: Sequence[int],
           strict: Sequence[int] | None = None) -> tuple[str, list[_Turn]]:
  """The rendered text and the spans of the messages listed in `which`; a message of `strict`
  (default: all of `which`) whose content is not found in its turn is an error."""
  strict = set(which if strict is None else strict)
  if not getattr(tokenizer, "chat_template", None):
    raise errors.ConfigError("the tokenizer has no chat template; SFT rendering needs one")
  full = _render(tokenizer, messages, tools, False)
  turns = []
  for i in which:
    m = messages[i]
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
    content, content_start = m["content"], -1
    if content:
      content_start = through.find(content, len(before))
      if content_start < 0 and i not in strict:  # e.g. a template that trims a user turn
        content = content.strip()
        content_start = through.find(content, len(before)) if content else -1
      if content_start < 0 and i in strict:
        raise errors.ConfigError(f"message {i} content does not appear in its rendered turn")
    turns.append(_Turn(i, len(before), len(through), content_start, content))
  return full, turns


def trained_spans(tokenizer, messages: Sequence[dict], tools: Any = None
                  ) -> tuple[str, list[tuple[int, int]]]:
  """The rendered text and the `[start, end)` character spans that carry loss (by default)."""
  scale = loss_scale_lib.LossScale()
  which = [i for i in range(len(messages)) if scale.trains(messages, i)]
  text, turns = _turns(tokenizer, messages, tools, which)
  return text, [(t.start, t.end) for t in turns]


def char_weights(tokenizer, messages: Sequence[dict], tools: Any = None,
                 loss_scale: "str | loss_scale_lib.LossScale | None" = None
                 ) -> tuple[str, np.ndarray]:
  """The rendered text and the `[len(text)]` float32 loss weight of each of its characters.

  Args:
    tokenizer: a tokenizer with a chat template.
    messages: normalised messages (`role`, `content`, optional `loss` and `loss_scale`).
    tools: tool specs passed to the chat template.
    loss_scale: a spec (`"react"`, `"last_round+hermes"`, a JSON path), a parsed
      `LossScale`, or `None` (= `default`: trained spans 1, the rest 0).

  Returns:
    `(text, weights)`.

  Raises:
    ConfigError: a bad spec, a template that cannot be labelled, or a message whose
      `loss_scale` is not a non-negative number.
  """
  scale = loss_scale_lib.resolve(loss_scale)
  trained = [scale.trains(messages, i) for i in range(len(messages))]
  # Under `all` every message's span is needed: to zero the ones a `loss: False` turns off.
  which = range(len(messages)) if scale.base == "all" else [
      i for i, t in enumerate(trained) if t]
  default = loss_scale_lib.LossScale()
  text, turns = _turns(tokenizer, messages, tools, which,
                       [i for i in which if default.trains(messages, i)])
  w = np.full(len(text), 1.0 if scale.base == "all" else 0.0, np.float32)
  for t in turns:
    w[t.start:t.end] = 1.0 if trained[t.index] else 0.0
  for t in turns:
    m = messages[t.index]
    if not trained[t.index]:
      continue
    if scale.rules and t.content_start >= 0:
      query = next((messages[j]["content"] for j in range(t.index - 1, -1, -1)
                    if messages[j]["role"] == "user"), None)
      a = t.content_start
      w[a:a + len(t.content)] *= scale.content_weights(t.content, query)
    if m.get("loss_scale") is not None:
      factor = m["loss_scale"]
      if (isinstance(factor, bool) or not isinstance(factor, (int, float))
          or not factor >= 0):
        raise errors.ConfigError(f"message {t.index} ({m['role']}): loss_scale must be a "
                                 f"non-negative number, got {factor!r}")
      w[t.start:t.end] *= factor
  return text, w


def render(tokenizer, messages: Sequence[dict], tools: Any = None,
           loss_scale: "str | loss_scale_lib.LossScale | None" = None) -> Example:
  """Tokenizes a conversation and weights each token by its first character.

  With `loss_scale=None` (or `"default"`) trained tokens weigh 1 and the rest 0; see
  `char_weights` and `swiftjax.data.loss_scale` for the strategies.
  """
  text, w = char_weights(tokenizer, messages, tools, loss_scale)
  enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
  ids = np.asarray(enc["input_ids"], np.int32)
  starts = np.asarray([s for s, _ in enc["offset_mapping"]], np.int64)
  weights = w[np.minimum(starts, len(text) - 1)] if len(text) else np.zeros(len(ids), np.float32)
  return Example(ids, weights.astype(np.float32), text)
