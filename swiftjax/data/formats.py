"""Reading dataset rows and normalising them to ms-swift's `messages` form.

Supported row formats (detected per row, or forced with `fmt=`):
  * `messages`: `{"messages": [{"role", "content"[, "loss"]}], "tools"?: [...]}` (ms-swift);
  * `alpaca`: `{"instruction", "input"?, "output", "system"?, "history"?}`;
  * `sharegpt`: `{"conversations": [{"from", "value"}], "system"?, "tools"?}` with `from` in
    human/user, gpt/assistant, system, function_call, observation;
  * `query_response`: `{"query", "response", "history"?: [[q, a], ...], "system"?}`.
Every row becomes `{"messages": [...], "tools": [...] or None}`; roles are system, user,
assistant, tool_call, tool_response (ms-swift's agent roles). A message may carry `loss`
(True/False) to force or forbid training on it.
"""

import json
import pathlib
from typing import Any, Iterator

from swiftjax import errors

FORMATS = ("messages", "alpaca", "sharegpt", "query_response")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "function_call": "tool_call",
                   "observation": "tool_response", "tool": "tool_response"}
_ROLES = ("system", "user", "assistant", "tool_call", "tool_response")


class RowError(errors.SwiftJaxError):
  """A row that cannot be read or normalised; the message names file and line."""


def detect(row: dict) -> str:
  if "messages" in row:
    return "messages"
  if "conversations" in row:
    return "sharegpt"
  if "instruction" in row and "output" in row:
    return "alpaca"
  if "query" in row and "response" in row:
    return "query_response"
  raise ValueError(f"unknown row format with keys {sorted(row)[:8]} "
                   f"(known: {', '.join(FORMATS)})")


def _system(row):
  return [{"role": "system", "content": row["system"]}] if row.get("system") else []


def _history(pairs):
  out = []
  for q, a in pairs or []:
    out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
  return out


def normalize(row: Any, fmt: str | None = None) -> dict:
  """One row as `{"messages": [...], "tools": ...}`; raises ValueError on a malformed row."""
  if not isinstance(row, dict):
    raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
  fmt = fmt or detect(row)
  if fmt == "messages":
    messages = [dict(m) for m in row["messages"]]
  elif fmt == "alpaca":
    prompt = row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")
    messages = _system(row) + _history(row.get("history")) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
  elif fmt == "sharegpt":
    messages = _system(row)
    for turn in row["conversations"]:
      role = _SHAREGPT_ROLES.get(turn.get("from"))
      if role is None:
        raise ValueError(f"unknown sharegpt speaker {turn.get('from')!r}")
      messages.append({"role": role, "content": turn["value"]})
  elif fmt == "query_response":
    messages = _system(row) + _history(row.get("history")) + [
        {"role": "user", "content": row["query"]}, {"role": "assistant", "content": row["response"]}]
  else:
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
  for i, m in enumerate(messages):
    if m.get("role") not in _ROLES:
      raise ValueError(f"message {i} has role {m.get('role')!r} (known: {', '.join(_ROLES)})")
    if not isinstance(m.get("content"), str):
      raise ValueError(f"message {i} content must be a string")
  if not any(m["role"] == "assistant" for m in messages):
    raise ValueError("the row has no assistant message to learn from")
  tools = row.get("tools")
  if isinstance(tools, str):
    tools = json.loads(tools) if tools.strip() else None
  return {"messages": messages, "tools": tools}


def read_rows(path: str | pathlib.Path, *, fmt: str | None = None,
              skip_bad_rows: bool = False) -> tuple[list[dict], int]:
  """Reads and normalises a `.json` (list) or `.jsonl` file.

  Returns:
    `(rows, skipped)`; `skipped` counts bad rows dropped with `skip_bad_rows`.

  Raises:
    RowError: naming the file and line (JSONL) or index (JSON) of the first bad row, unless
      `skip_bad_rows`; or when the file holds no usable row at all.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.SwiftJaxError(f"dataset file {path} does not exist")

  def items() -> Iterator[tuple[str, Any]]:
    if path.suffix == ".jsonl":
      with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
          if line.strip():
            try:
              yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as e:
              yield f"{path}:{n}", ValueError(f"invalid JSON: {e.msg} (column {e.colno})")
    else:
      try:
        data = json.loads(path.read_text(encoding="utf-8"))
      except json.JSONDecodeError as e:
        raise RowError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
      if not isinstance(data, list):
        raise RowError(f"{path}: a .json dataset must be a list of rows")
      for i, row in enumerate(data):
        yield f"{path}[{i}]", row

  rows, skipped = [], 0
  for where, row in items():
    try:
      if isinstance(row, Exception):
        raise row
      rows.append(normalize(row, fmt))
    except (ValueError, KeyError, TypeError) as e:
      msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
      if not skip_bad_rows:
        raise RowError(f"{where}: {msg}") from None
      skipped += 1
  if not rows:
    raise RowError(f"{path}: no usable rows" + (f" ({skipped} bad rows skipped)" if skipped
                                                 else ""))
  return rows, skipped
