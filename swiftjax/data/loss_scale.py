"""Per-token loss weights ("loss scale"), as ms-swift's `--loss_scale` defines them.

A spec names strategies joined by `+` (`react`, `last_round+react`, `hermes+ignore_empty_think`)
or is a path to a JSON file. It has two parts:

- a **base strategy** that picks which messages carry loss: `default` (assistant turns and
  tool calls, and whatever a message's `loss` key forces), `last_round` (only the assistant
  turns after the last user message), `all` (every token of the conversation, system and user
  turns and the template's own markup included). A message's `loss` key overrides the base.
- **rules** that re-weight characters inside each trained message's content. A rule set maps
  - a literal delimiter to `[weight_for_key, weight_for_following_content]`: the delimiter's
    own characters get the first weight, the text after it up to the next delimiter the second
    (react: `Action:` 2/2, `Thought:` 1/1, `Observation:` 2/0); text before the first delimiter
    keeps weight 1;
  - a regular expression to `[weight]`: every match gets that weight (hermes: a whole
    `<tool_call>...</tool_call>` block 2; ignore_empty_think: an empty `<think></think>` 0);
  - optionally (agentflan) a `query` table: when the round's user message contains a key, the
    whole response takes that weight.
  Several rule sets multiply (ms-swift's chained loss scales multiply their weights).

Weights are per character of the content (`[len(content)]`); `swiftjax.data.render` lays them on
the rendered text and gives each token the weight of its first character.

Differences from ms-swift, all in corner cases: literal delimiters are matched longest first
(ms-swift tries them in file order, so a key that is a prefix of another can shadow it); a file
with both literal and regex keys applies both, regex matches last (recent ms-swift ignores the
regex keys then); chained rule sets each see the whole content rather than the previous set's
pieces.
"""

import dataclasses
import functools
import json
import pathlib
import re
from typing import Any, Mapping, Sequence

import numpy as np

from swiftjax import errors

BASES = ("default", "last_round", "all")
# Roles that carry loss under `default` (a `tool_call` is the model's output too).
TRAINED_ROLES = ("assistant", "tool_call")

# ms-swift's built-in configs (swift/loss_scale/config/*.json), as data.
_REACT = {"Action:": [2.0, 2.0], "Action Input:": [2.0, 2.0], "Thought:": [1.0, 1.0],
          "Final Answer:": [1.0, 1.0], "Observation:": [2.0, 0.0]}
_BUILTIN: dict[str, dict] = {
    "react": _REACT,
    "alpha_umi": {**_REACT, "Next:": [2.0, 2.0]},
    "qwen": {"✿FUNCTION✿:": [2.0, 2.0], "✿ARGS✿:": [2.0, 2.0], "✿RETURN✿:": [1.0, 1.0],
             "✿RESULT✿:": [2.0, 0.0]},
    "hermes": {"<tool_call>.+?</tool_call>": [2.0]},
    "ignore_empty_think": {
        r"^<think>\s*</think>\s*": [0.0],
        r"^</think>\s*": [0.0],
        r"^<seed:think><seed:cot_budget_reflect>The current thinking budget is 0, so I will "
        r"directly start answering the question.</seed:cot_budget_reflect>\n</seed:think>\s*":
            [0.0],
    },
    # Agent-FLAN / MSAgent-Pro: tool names and arguments weigh 3; the query table up-weights
    # the answers to MSAgent-Pro's step-by-step questions as a whole.
    "agentflan": {
        "response": {"Name:": [1.0, 3.0], "Action:": [1.0, 3.0], "ACTION:": [1.0, 3.0],
                     "Tool:": [1.0, 3.0], "Command": [1.0, 3.0], "Arguments:": [1.0, 3.0],
                     "action input": [1.0, 3.0], "ACTION_INPUT:": [1.0, 3.0],
                     "Action Input:": [1.0, 3.0], "Thought:": [1.0, 1.0],
                     "Final Answer:": [1.0, 1.0], "Observation:": [2.0, 0.0]},
        "query": {"What is the tool you want to use": [3.0],
                  "What are the required parameter names": [3.0],
                  "What is the value of": [3.0]},
    },
}


@dataclasses.dataclass(frozen=True)
class Rules:
  """One rule set (a built-in strategy or a user's JSON file).

  Attributes:
    name: the strategy name or file path, for messages.
    delimiters: `(key, weight_for_key, weight_for_following_content)` literal delimiters.
    patterns: `(regex, weight)`; every match gets the weight (`re.DOTALL`).
    query: `(substring, weight)`; the first one found in the round's user message sets the
      whole response's weight.
  """
  name: str
  delimiters: tuple[tuple[str, float, float], ...] = ()
  patterns: tuple[tuple[str, float], ...] = ()
  query: tuple[tuple[str, float], ...] = ()

  def weights(self, text: str, query: str | None = None) -> np.ndarray:
    """`[len(text)]` float32 weight of each character of one message's content."""
    w = np.ones(len(text), np.float32)
    if query is not None:
      for key, value in self.query:
        if key in query:
          w[:] = value
          return w
    if self.delimiters:
      table = {k: (wk, wc) for k, wk, wc in self.delimiters}
      # Longest first, so that `Action Input:` is never read as a shorter key.
      keys = sorted(table, key=len, reverse=True)
      found = list(re.finditer("|".join(re.escape(k) for k in keys), text))
      for j, m in enumerate(found):
        wk, wc = table[m.group()]
        nxt = found[j + 1].start() if j + 1 < len(found) else len(text)
        w[m.start():m.end()] = wk
        w[m.end():nxt] = wc
    if self.patterns:
      compiled = [(re.compile(p, re.DOTALL), v) for p, v in self.patterns]
      pos = 0
      while pos <= len(text):
        # The leftmost match of any pattern; on a tie the pattern listed first.
        best = None
        for rx, v in compiled:
          m = rx.search(text, pos)
          if m and (best is None or m.start() < best[0].start()):
            best = (m, v)
        if best is None:
          break
        m, v = best
        w[m.start():m.end()] = v
        pos = m.end() if m.end() > m.start() else m.end() + 1
    return w


@dataclasses.dataclass(frozen=True)
class LossScale:
  """A parsed `--loss_scale` spec.

  Attributes:
    base: `default`, `last_round` or `all`.
    rules: rule sets applied to each trained message's content; their weights multiply.
  """
  base: str = "default"
  rules: tuple[Rules, ...] = ()

  def trains(self, messages: Sequence[dict], i: int) -> bool:
    """Whether message `i` carries loss (before any re-weighting)."""
    m = messages[i]
    if m.get("loss") is not None:
      return bool(m["loss"])
    if self.base == "all":
      return True
    if m["role"] not in TRAINED_ROLES:
      return False
    if self.base == "last_round":
      return i > last_user_index(messages)
    return True

  def content_weights(self, text: str, query: str | None = None) -> np.ndarray:
    """`[len(text)]` float32 product of every rule set's weights over one message's content."""
    w = np.ones(len(text), np.float32)
    for r in self.rules:
      w *= r.weights(text, query)
    return w


def last_user_index(messages: Sequence[dict]) -> int:
  """Index of the last `user` message, -1 when there is none (then every round is last)."""
  for i in range(len(messages) - 1, -1, -1):
    if messages[i]["role"] == "user":
      return i
  return -1


def _number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def rules_from_mapping(name: str, mapping: Any) -> Rules:
  """Builds a rule set from ms-swift's JSON layout.

  Args:
    name: where the mapping came from (named in errors).
    mapping: `{delimiter: [w_key, w_content]}` and/or `{regex: [w]}`, or
      `{"response": {...}, "query": {substring: [w]}}`.

  Returns:
    The rule set.

  Raises:
    ConfigError: the mapping is malformed (the message names `name` and the key).
  """
  if not isinstance(mapping, dict) or not mapping:
    raise errors.ConfigError(f"loss_scale {name}: expected a non-empty JSON object of "
                             "{delimiter: [weight_for_key, weight_for_content]} or {regex: [weight]}")
  query_map: Mapping = {}
  if set(mapping) <= {"response", "query"} and isinstance(mapping.get("response"), dict):
    query_map = mapping.get("query") or {}
    mapping = mapping["response"]
    if not isinstance(query_map, dict):
      raise errors.ConfigError(f"loss_scale {name}: 'query' must be an object")
  delimiters, patterns, query = [], [], []
  for key, value in mapping.items():
    if not key:
      raise errors.ConfigError(f"loss_scale {name}: empty key")
    if (not isinstance(value, (list, tuple)) or len(value) not in (1, 2)
        or not all(_number(v) for v in value)):
      raise errors.ConfigError(
          f"loss_scale {name}: key {key!r} must map to [weight_for_key, weight_for_content] "
          f"(a literal delimiter) or [weight] (a regex), non-negative numbers; got {value!r}")
    if len(value) == 2:
      delimiters.append((key, float(value[0]), float(value[1])))
    else:
      try:
        re.compile(key, re.DOTALL)
      except re.error as e:
        raise errors.ConfigError(f"loss_scale {name}: key {key!r} is not a valid regex: {e}"
                                 ) from None
      patterns.append((key, float(value[0])))
  for key, value in query_map.items():
    v = value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value
    if not key or not _number(v):
      raise errors.ConfigError(f"loss_scale {name}: query key {key!r} must map to [weight]; "
                               f"got {value!r}")
    query.append((key, float(v)))
  return Rules(name, tuple(delimiters), tuple(patterns), tuple(query))


def _load_file(path: pathlib.Path) -> Rules:
  try:
    mapping = json.loads(path.read_text(encoding="utf-8"))
  except OSError as e:
    raise errors.ConfigError(f"loss_scale file {path}: cannot read it ({e.strerror})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.ConfigError(f"loss_scale file {path}: invalid JSON ({e})") from None
  return rules_from_mapping(f"file {path}", mapping)


def known() -> tuple[str, ...]:
  """Every strategy name `parse_spec` accepts."""
  return BASES + tuple(_BUILTIN)


@functools.lru_cache(maxsize=64)
def parse_spec(spec: str | None) -> LossScale:
  """Parses a `--loss_scale` value.

  Args:
    spec: `None`/"" (= `default`), strategy names joined by `+` (at most one base strategy,
      anywhere; e.g. `last_round+react`, `hermes+ignore_empty_think`), or paths of JSON files
      in ms-swift's layout, alone or in such a chain.

  Returns:
    The parsed spec.

  Raises:
    ConfigError: an unknown name (the message lists the known ones), two base strategies, or
      a JSON file that cannot be read or is malformed (the message names the file).
  """
  if not spec:
    return LossScale()
  whole = pathlib.Path(spec)
  parts = [spec] if "+" in spec and whole.is_file() else spec.split("+")
  base, rules = None, []
  for part in parts:
    part = part.strip()
    if part in BASES:
      if base is not None:
        raise errors.ConfigError(f"loss_scale {spec!r} names two base strategies "
                                 f"({base} and {part}); use one of {', '.join(BASES)}")
      base = part
    elif part in _BUILTIN:
      rules.append(rules_from_mapping(part, _BUILTIN[part]))
    elif part.endswith(".json") or pathlib.Path(part).is_file():
      rules.append(_load_file(pathlib.Path(part)))
    else:
      raise errors.ConfigError(f"loss_scale {spec!r}: unknown strategy {part!r}; known: "
                               f"{', '.join(known())}, or a path to a JSON file")
  return LossScale(base or "default", tuple(rules))


def resolve(loss_scale: "str | LossScale | None") -> LossScale:
  """A `LossScale` from a spec string, an already parsed one, or `None` (= `default`)."""
  if isinstance(loss_scale, LossScale):
    return loss_scale
  if loss_scale is not None and not isinstance(loss_scale, str):
    raise errors.ConfigError(f"loss_scale must be a string or LossScale, got {loss_scale!r}")
  return parse_spec(loss_scale)
