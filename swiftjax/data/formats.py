"""Reading dataset rows and normalising them to ms-swift's `messages` form.

Supported row formats (detected per row, or forced with `fmt=`):
  * `messages`: `{"messages": [{"role", "content"[, "loss"]}], "tools"?: [...]}` (ms-swift);
  * `alpaca`: `{"instruction", "input"?, "output", "system"?, "history"?}`;
  * `sharegpt`: `{"conversations": [{"from", "value"}], "system"?, "tools"?}` with `from` in
    human/user, gpt/assistant, system, function_call, observation;
  * `query_response`: `{"query", "response", "history"?: [[q, a], ...], "system"?}`;
  * agent rows (`AGENT_FORMATS`: ToolBench answers/queries, ToolLLaMA, hermes `<tool_call>`
    text and `tool` turns) are read by `swiftjax.agent.converters`.
Every row becomes `{"messages": [...], "tools": [...] or None}`; roles are system, user,
assistant, tool_call, tool_response (ms-swift's agent roles). A message may carry `loss`
(True/False) to force or forbid training on it.
"""

import gzip
import json
import pathlib
from typing import Any, Callable, Iterator

from swiftjax import errors

FORMATS = ("messages", "alpaca", "sharegpt", "query_response")
# Tool-use rows the readers here cannot take; `swiftjax.agent.converters` reads them.
AGENT_FORMATS = ("toolbench", "toolllama", "hermes")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "function_call": "tool_call",
                   "observation": "tool_response", "tool": "tool_response"}
_ROLES = ("system", "user", "assistant", "tool_call", "tool_response")


class RowError(errors.SwiftJaxError):
  """A row that cannot be read or normalised; the message names file and line."""


def _agent_format(row: dict) -> str | None:
  from swiftjax.agent import converters  # pylint: disable=g-import-not-at-top
  fmt = converters.detect_agent_format(row)
  return fmt if fmt in AGENT_FORMATS else None


def _agent_row(row: dict, fmt: str) -> dict:
  from swiftjax.agent import converters  # pylint: disable=g-import-not-at-top
  return converters.to_messages(row, fmt)


def detect(row: dict) -> str:
  if agent := _agent_format(row):
    return agent
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


def system_of(row: dict) -> list[dict]:
  """The row's `system` prompt as a message list (empty without one)."""
  return [{"role": "system", "content": row["system"]}] if row.get("system") else []


def history_of(pairs) -> list[dict]:
  """`[[query, response], ...]` as alternating user/assistant messages."""
  out = []
  for q, a in pairs or []:
    out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
  return out


def text_of(content: Any) -> str:
  """Message content as a string: a string, or a list of text parts
  (`[{"type": "text", "text"|"value": ...}]`, the OpenAI / LLaMA-Factory v1 layout)."""
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    out = []
    for part in content:
      if not isinstance(part, dict) or part.get("type", "text") != "text":
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise ValueError(f"only text content is supported, got a {kind!r} part")
      text = part.get("text", part.get("value"))
      if not isinstance(text, str):
        raise ValueError("a text part has no string `text` or `value`")
      out.append(text)
    return "".join(out)
  raise ValueError(f"message content must be a string, got {type(content).__name__}")


def message(m: Any) -> dict:
  """One message as `{"role", "content"[, "loss"]}`; accepts ShareGPT's `{"from", "value"}`."""
  if not isinstance(m, dict):
    raise ValueError(f"a message must be a JSON object, got {type(m).__name__}")
  if "from" in m and "role" not in m:
    role = _SHAREGPT_ROLES.get(m["from"])
    if role is None:
      raise ValueError(f"unknown sharegpt speaker {m['from']!r}")
    return {"role": role, "content": text_of(m.get("value"))}
  out = dict(m)
  out["content"] = text_of(m.get("content"))
  if out.get("role") not in _ROLES:
    raise ValueError(f"role {m.get('role')!r} is not one of {', '.join(_ROLES)}")
  return out


def messages_of(row: Any, fmt: str | None = None) -> list[dict]:
  """The row's conversation as validated messages (it need not contain an answer)."""
  if not isinstance(row, dict):
    raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
  fmt = fmt or detect(row)
  if fmt == "messages":
    messages = row["messages"]
  elif fmt == "alpaca":
    prompt = row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")
    messages = system_of(row) + history_of(row.get("history")) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
  elif fmt == "sharegpt":
    messages = system_of(row) + list(row["conversations"])
  elif fmt == "query_response":
    messages = system_of(row) + history_of(row.get("history")) + [
        {"role": "user", "content": row["query"]}, {"role": "assistant", "content": row["response"]}]
  elif fmt in AGENT_FORMATS:
    messages = _agent_row(row, fmt)["messages"]
  else:
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS + AGENT_FORMATS)}")
  if not isinstance(messages, list):
    raise ValueError(f"the conversation must be a list of messages, got {type(messages).__name__}")
  out = []
  for i, m in enumerate(messages):
    try:
      out.append(message(m))
    except ValueError as e:
      raise ValueError(f"message {i}: {e}") from None
  return out


def tools_of(row: dict) -> Any:
  """The row's `tools` (a JSON string is parsed), or None."""
  if agent := _agent_format(row):
    return _agent_row(row, agent)["tools"]
  tools = row.get("tools")
  if isinstance(tools, str):
    tools = json.loads(tools) if tools.strip() else None
  return tools


def normalize(row: Any, fmt: str | None = None) -> dict:
  """One row as `{"messages": [...], "tools": ...}`; raises ValueError on a malformed row."""
  fmt = fmt or (detect(row) if isinstance(row, dict) else None)
  if fmt in AGENT_FORMATS:
    out = _agent_row(row, fmt)
    messages = messages_of({"messages": out["messages"]}, "messages")
    out = {"messages": messages, "tools": out["tools"]}
  else:
    messages = messages_of(row, fmt)
    out = {"messages": messages, "tools": tools_of(row)}
  if not any(m["role"] in ("assistant", "tool_call") for m in messages):
    raise ValueError("the row has no assistant message to learn from")
  return out


def _without_nones(x: Any) -> Any:
  """`x` with None-valued dict keys dropped at every depth: Arrow tables give every row every
  column (None where a JSON row simply lacks the key)."""
  if isinstance(x, dict):
    return {k: _without_nones(v) for k, v in x.items() if v is not None}
  if isinstance(x, list):
    return [_without_nones(v) for v in x]
  return x


def _iter_saved_dataset(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  """Rows of a `datasets` `save_to_disk` directory (a `DatasetDict`: its `train` split)."""
  import datasets  # pylint: disable=g-import-not-at-top
  try:
    ds = datasets.load_from_disk(str(path))
  except (FileNotFoundError, ValueError) as e:
    raise errors.SwiftJaxError(f"dataset directory {path} is not a saved `datasets` dataset "
                               f"(save_to_disk): {e}") from None
  where = str(path)
  if isinstance(ds, datasets.DatasetDict):
    if "train" not in ds:
      raise errors.SwiftJaxError(f"dataset directory {path} has splits {sorted(ds)} and no "
                                 "'train'; pass the split's own directory")
    ds, where = ds["train"], f"{path}/train"
  for i, row in enumerate(ds):
    yield f"{where}[{i}]", _without_nones(row)


def _iter_hub_dataset(name: str) -> Iterator[tuple[str, Any]]:
  """Rows of the `train` split of a Hugging Face hub dataset (needs network)."""
  import datasets  # pylint: disable=g-import-not-at-top
  try:
    ds = datasets.load_dataset(name, split="train")
  except Exception as e:  # pylint: disable=broad-except  (offline, unknown id, no train split)
    raise errors.SwiftJaxError(f"dataset {name}: no such file or directory, and loading it from "
                               f"the Hugging Face hub failed: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from None
  for i, row in enumerate(ds):
    yield f"{name}[{i}]", _without_nones(row)


def iter_rows(path: str | pathlib.Path) -> Iterator[tuple[str, Any]]:
  """`(where, row)` for every row of a dataset.

  A dataset is a `.json` (list), `.jsonl` or `.jsonl.gz` file, a directory written by
  `datasets`' `save_to_disk` (a `DatasetDict`'s `train` split), or, when no such file exists, a
  Hugging Face hub dataset id (`owner/name`, its `train` split; needs network).
  `where` is `file:line` (JSONL) or `file[index]` (JSON, saved or hub datasets). A JSONL line
  that is not valid JSON comes as a `ValueError` in place of the row, so the caller decides
  whether to skip it.

  Raises:
    SwiftJaxError: the file does not exist (and is not a reachable hub dataset), or a
      directory that is not a saved dataset.
    RowError: a `.json` file that is not valid JSON or not a list.
  """
  text = str(path)
  path = pathlib.Path(path)
  if path.is_dir():
    yield from _iter_saved_dataset(path)
    return
  if not path.is_file():
    parts = text.split("/")
    if (len(parts) == 2 and all(parts) and not text.startswith((".", "~"))
        and not text.endswith((".json", ".jsonl", ".gz"))):
      yield from _iter_hub_dataset(text)
      return
    raise errors.SwiftJaxError(f"dataset file {path} does not exist")
  if path.name.endswith((".jsonl", ".jsonl.gz")):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
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


def read_rows(path: str | pathlib.Path, *, fmt: str | None = None,
              skip_bad_rows: bool = False,
              normalize_fn: Callable[[Any], Any] | None = None) -> tuple[list[Any], int]:
  """Reads and normalises a dataset (`iter_rows`: a `.json` / `.jsonl` / `.jsonl.gz` file, a
  saved `datasets` directory, or a hub dataset id).

  Args:
    path: the file, directory or hub id.
    fmt: force one of `FORMATS` (default: detect per row).
    skip_bad_rows: drop and count malformed rows instead of raising.
    normalize_fn: `row -> normalised row`, raising ValueError/KeyError/TypeError on a bad row
      (default: `normalize(row, fmt)`); preference data passes its own.

  Returns:
    `(rows, skipped)`; `skipped` counts bad rows dropped with `skip_bad_rows`.

  Raises:
    RowError: naming the file and line (JSONL) or index (JSON) of the first bad row, unless
      `skip_bad_rows`; or when the file holds no usable row at all.
  """
  normalize_fn = normalize_fn or (lambda row: normalize(row, fmt))
  rows, skipped = [], 0
  for where, row in iter_rows(path):
    try:
      if isinstance(row, Exception):
        raise row
      rows.append(normalize_fn(row))
    except (ValueError, KeyError, TypeError) as e:
      msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
      if not skip_bad_rows:
        raise RowError(f"{where}: {msg}") from None
      skipped += 1
  if not rows:
    raise RowError(f"{path}: no usable rows" + (f" ({skipped} bad rows skipped)" if skipped
                                                 else ""))
  return rows, skipped
