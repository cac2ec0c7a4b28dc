"""Preference data: chosen/rejected pairs and KTO's labelled completions.

Every pair row becomes `{"prompt": [...], "chosen": [...], "rejected": [...], "tools": ...}` and
every KTO row `{"prompt": [...], "completion": [...], "label": bool, "tools": ...}`, where each
value is a list of messages in `formats`' normalised form. Accepted layouts (detected per row):

  * ms-swift: any SFT row (`messages`, ShareGPT, Alpaca, query/response) whose last message is
    the chosen answer, plus `rejected_response` (a string) or `rejected_messages` (the whole
    rejected conversation); KTO: an SFT row plus `label` (true/false).
  * LLaMA-Factory ranking: `conversations` (or `messages`) ending before the answer, with
    `chosen` / `rejected` one message each (`{"from", "value"}` or `{"role", "content"}`).
  * `prompt` (string or messages; also `instruction` + `input`, `question`, `query`) with
    `chosen` / `rejected` strings or message lists (TRL's explicit-prompt layout); KTO:
    `prompt` + `completion` + `label`.
  * `chosen` / `rejected` full conversations and nothing else: message lists (TRL's implicit
    prompt) or Anthropic HH transcripts (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`); the prompt
    is their common prefix. `chosen_messages` / `rejected_messages` (LLaMA-Factory v1) likewise.

The answer is everything after the prompt; it must start with an assistant message. Rendering
(`render_answer`) trains the answer's assistant turns only: assistant turns inside the prompt
get `loss=False`.
"""

import pathlib
import re
from typing import Any, Sequence

import numpy as np

from swiftjax import errors
from swiftjax.data import formats
from swiftjax.data import packing
from swiftjax.data import render

_PROMPT_KEYS = ("prompt", "question", "query")
_TRANSCRIPT = re.compile(r"\n\n(Human|Assistant): ?")
_TRANSCRIPT_ROLES = {"Human": "user", "Assistant": "assistant"}


def _messages(value: Any, what: str, default_role: str) -> list[dict]:
  """A string (one message of `default_role`), one message, or a list of messages."""
  if isinstance(value, str):
    return [{"role": default_role, "content": value}]
  if isinstance(value, dict):
    value = [value]
  if not isinstance(value, list):
    raise ValueError(f"{what} must be a string, a message or a list of messages, got "
                     f"{type(value).__name__}")
  out = []
  for i, m in enumerate(value):
    try:
      out.append(formats.message(m))
    except ValueError as e:
      raise ValueError(f"{what} message {i}: {e}") from None
  return out


def _transcript(text: str, what: str) -> list[dict]:
  """`"\\n\\nHuman: a\\n\\nAssistant: b"` -> user/assistant messages."""
  parts = _TRANSCRIPT.split(text)
  if len(parts) < 3 or parts[0].strip():
    raise ValueError(f"{what} is a string without a prompt, and not a Human:/Assistant: "
                     "transcript; give the prompt as `prompt`")
  return [{"role": _TRANSCRIPT_ROLES[who], "content": said.strip()}
          for who, said in zip(parts[1::2], parts[2::2])]


def _split_common_prefix(chosen: list[dict], rejected: list[dict]
                         ) -> tuple[list[dict], list[dict], list[dict]]:
  """Two whole conversations -> `(shared prompt, chosen answer, rejected answer)`."""
  n = 0
  while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
    n += 1
  if n == len(chosen) or n == len(rejected):
    raise ValueError("chosen and rejected conversations do not differ after their prompt")
  return chosen[:n], chosen[n:], rejected[n:]


def _prompt(row: dict) -> list[dict] | None:
  """The explicit prompt of a row, or None when it has none."""
  system = formats.system_of(row)
  if "conversations" in row or "messages" in row:
    key = "conversations" if "conversations" in row else "messages"
    return system + _messages(row[key], key, "user")
  if "instruction" in row:
    text = row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")
    return system + formats.history_of(row.get("history")) + [
        {"role": "user", "content": text}]
  for key in _PROMPT_KEYS:
    if key in row:
      return system + formats.history_of(row.get("history")) + _messages(
          row[key], key, "user")
  return None


def _check_answer(answer: list[dict], what: str) -> None:
  if not answer or answer[0]["role"] not in ("assistant", "tool_call"):
    role = answer[0]["role"] if answer else "nothing"
    raise ValueError(f"the {what} answer must start with an assistant message, got {role}")


def normalize_pair(row: Any) -> dict:
  """A chosen/rejected row as `{"prompt", "chosen", "rejected", "tools"}`; ValueError if bad."""
  if not isinstance(row, dict):
    raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
  if "label" in row and "rejected" not in row and "rejected_response" not in row:
    raise ValueError("a KTO row (with `label`) where a chosen/rejected pair is needed")
  if "rejected_response" in row or ("rejected_messages" in row and "chosen_messages" not in row):
    messages = formats.messages_of({k: v for k, v in row.items()
                                    if k not in ("rejected_response", "rejected_messages")})
    if "rejected_response" in row:
      if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("with `rejected_response` the conversation must end with the chosen "
                         "assistant answer")
      rejected = _messages(row["rejected_response"], "rejected_response", "assistant")
      prompt, chosen = messages[:-1], messages[-1:]
    else:
      prompt, chosen, rejected = _split_common_prefix(
          messages, _messages(row["rejected_messages"], "rejected_messages", "user"))
  elif "chosen_messages" in row:
    prompt, chosen, rejected = _split_common_prefix(
        _messages(row["chosen_messages"], "chosen_messages", "user"),
        _messages(row.get("rejected_messages"), "rejected_messages", "user"))
  elif "chosen" in row and "rejected" in row:
    prompt = _prompt(row)
    if prompt is not None:
      chosen = _messages(row["chosen"], "chosen", "assistant")
      rejected = _messages(row["rejected"], "rejected", "assistant")
    elif isinstance(row["chosen"], str) and isinstance(row["rejected"], str):
      prompt, chosen, rejected = _split_common_prefix(_transcript(row["chosen"], "chosen"),
                                                      _transcript(row["rejected"], "rejected"))
    else:
      prompt, chosen, rejected = _split_common_prefix(
          _messages(row["chosen"], "chosen", "user"),
          _messages(row["rejected"], "rejected", "user"))
  else:
    raise ValueError(f"no preference pair in a row with keys {sorted(row)[:8]} (expected "
                     "chosen/rejected, rejected_response or chosen_messages/rejected_messages)")
  _check_answer(chosen, "chosen")
  _check_answer(rejected, "rejected")
  return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
          "tools": formats.tools_of(row)}


def _label(value: Any) -> bool:
  if isinstance(value, bool):
    return value
  if isinstance(value, int) and value in (0, 1):
    return bool(value)
  if isinstance(value, str) and value.lower() in ("true", "false"):
    return value.lower() == "true"
  raise ValueError(f"label must be true or false, got {value!r}")


def normalize_kto(row: Any) -> dict:
  """A labelled completion as `{"prompt", "completion", "label", "tools"}`; ValueError if bad."""
  if not isinstance(row, dict):
    raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
  if "label" not in row:
    raise ValueError("a KTO row needs `label` (true for a desirable answer, false otherwise)")
  label = _label(row["label"])
  if "completion" in row:
    prompt = _prompt(row) or []
    completion = _messages(row["completion"], "completion", "assistant")
  else:
    messages = formats.messages_of({k: v for k, v in row.items() if k != "label"})
    if not messages or messages[-1]["role"] != "assistant":
      raise ValueError("a KTO conversation must end with the assistant answer being labelled")
    prompt, completion = messages[:-1], messages[-1:]
  _check_answer(completion, "labelled")
  return {"prompt": prompt, "completion": completion, "label": label,
          "tools": formats.tools_of(row)}


def pairs_as_kto(rows: list[dict]) -> list[dict]:
  """Pair rows as KTO rows: each chosen answer desirable, each rejected one undesirable."""
  out = []
  for r in rows:
    out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True,
                "tools": r["tools"]})
    out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False,
                "tools": r["tools"]})
  return out


def render_answer(tokenizer, prompt: list[dict], answer: list[dict], tools: Any = None
                  ) -> render.Example:
  """Renders `prompt + answer` with weights on the answer's assistant tokens only."""
  quiet = [dict(m, loss=False) for m in prompt]
  return render.render(tokenizer, quiet + [{k: v for k, v in m.items() if k != "loss"}
                                           for m in answer], tools)


def read(path: str | pathlib.Path, kind: str = "pair", *, skip_bad_rows: bool = False
         ) -> tuple[list[dict], int]:
  """Reads preference rows from a `.json`, `.jsonl` or `.jsonl.gz` file.

  Args:
    path: the file.
    kind: `pair` (chosen/rejected rows) or `kto` (labelled completions; a pair row counts as
      one desirable and one undesirable completion, as ms-swift reads pairs for KTO).
    skip_bad_rows: drop and count malformed rows instead of raising.

  Returns:
    `(rows, skipped)`.

  Raises:
    RowError: naming file and line of the first bad row (see `formats.read_rows`).
  """
  if kind == "pair":
    return formats.read_rows(path, skip_bad_rows=skip_bad_rows, normalize_fn=normalize_pair)
  if kind != "kto":
    raise ValueError(f"kind must be pair or kto, got {kind!r}")

  def one(row):
    if isinstance(row, dict) and "label" in row:
      return [normalize_kto(row)]
    return pairs_as_kto([normalize_pair(row)])

  groups, skipped = formats.read_rows(path, skip_bad_rows=skip_bad_rows, normalize_fn=one)
  return [r for g in groups for r in g], skipped


def _stack(first: packing.Batch, second: packing.Batch) -> packing.Batch:
  """Two `[N, L]` batches as one of `[N, 2, L]` arrays (row i's two sequences side by side)."""
  return packing.Batch(*(np.stack([getattr(first, f), getattr(second, f)], axis=1)
                         for f in ("tokens", "weights", "segment_ids", "positions")))


def _length(examples: Sequence[render.Example], max_length: int) -> int:
  """The padded length: the longest example rounded up to a multiple of 16, at most
  `max_length` (one static shape per run, without padding short data to `max_length`)."""
  longest = max(len(e.input_ids) for e in examples)
  return min(max_length, -(-longest // 16) * 16)


def build(rows: Sequence[dict], tokenizer, max_length: int, truncation: str = "delete",
          seed: int = 0) -> tuple[packing.Batch, np.ndarray, dict]:
  """Renders preference rows into padded arrays, two sequences per row.

  For pairs, row i holds `(chosen_i, rejected_i)`. For KTO rows it holds the labelled
  completion and a mismatched one, `(prompt_i + completion_j)` with `j` from a seeded
  derangement of the rows, from which KTO estimates its reference point; the mismatched
  sequence is always truncated `left` (it only has to keep some completion tokens).
  Each sequence is right-padded (`segment_ids` 1 on tokens, 0 on padding).

  Args:
    rows: from `read` (all pairs or all KTO rows).
    tokenizer: a Hugging Face tokenizer with a chat template.
    max_length: longest sequence in tokens.
    truncation: `delete`, `left` or `right` for longer sequences (`delete` drops the row).
    seed: for the KTO mismatch.

  Returns:
    `(batch, desirable, stats)`: `batch` holds `[N, 2, L]` arrays, `desirable` `[N]` bool (all
    True for pairs), `stats` counts `examples` and `truncated` rows.

  Raises:
    ConfigError: no row keeps a trained token in both sequences.
  """
  kto = bool(rows) and "completion" in rows[0]
  if kto:
    n = len(rows)
    order = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, np.int64)
    partner[order] = np.roll(order, -1)
    first = [render_answer(tokenizer, r["prompt"], r["completion"], r["tools"]) for r in rows]
    second = [render_answer(tokenizer, r["prompt"], rows[j]["completion"], r["tools"])
              for r, j in zip(rows, partner)]
    labels = [r["label"] for r in rows]
  else:
    first = [render_answer(tokenizer, r["prompt"], r["chosen"], r["tools"]) for r in rows]
    second = [render_answer(tokenizer, r["prompt"], r["rejected"], r["tools"]) for r in rows]
    labels = [True] * len(rows)
  kept, truncated = [], 0
  for a, b, label in zip(first, second, labels):
    ta, na = packing.truncate([a], max_length, truncation)
    tb, nb = packing.truncate([b], max_length, "left" if kto else truncation)
    truncated += bool(na or (nb and not kto))
    if ta and tb and ta[0].weights[1:].sum() > 0 and (kto or tb[0].weights[1:].sum() > 0):
      kept.append((ta[0], tb[0], label))
  if not kept:
    raise errors.ConfigError("after rendering and truncation no preference row has a trained "
                             f"token (max_length={max_length}, truncation={truncation})")
  length = _length([e for a, b, _ in kept for e in (a, b)], max_length)
  batch = _stack(packing.pad([a for a, _, _ in kept], length),
                 packing.pad([b for _, b, _ in kept], length))
  desirable = np.asarray([label for _, _, label in kept], bool)
  stats = {"examples": len(kept), "truncated": truncated}
  if kto:
    stats.update(desirable=int(desirable.sum()), undesirable=int((~desirable).sum()))
  return batch, desirable, stats


def sides(x):
  """`(first, second)` `[B, ...]` each from `take`'s interleaved `[2B, ...]` rows (or their
  per-row results: log-probabilities, scores)."""
  return x[0::2], x[1::2]


def take(batch: packing.Batch, desirable: np.ndarray, idx: np.ndarray) -> dict:
  """The step's batch for rows `idx` `[B]`, each row's two sequences side by side.

  Row `2i` is pair `i`'s first sequence (chosen; KTO: the labelled completion) and row `2i + 1`
  its second (rejected; KTO: the mismatched completion), so a batch split over devices along
  its first axis keeps both halves of every pair on the same device (`sides` undoes it).

  Returns:
    `{"tokens", "weights", "segment_ids", "positions"}`, each `[2B, L]`, and `"desirable"`
    `[B]` bool.
  """
  out = {}
  for f in ("tokens", "weights", "segment_ids", "positions"):
    x = getattr(batch, f)[idx]                     # [B, 2, L]
    out[f] = x.reshape(2 * len(idx), x.shape[-1])  # [2B, L]: first, second, first, ...
  out["desirable"] = desirable[idx]
  return out
