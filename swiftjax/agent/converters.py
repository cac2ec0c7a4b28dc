"""Converting tool-use datasets into the normalised agent form.

Every converter returns `{"messages": [...], "tools": [...] or None}` as `swiftjax.data.formats`
defines it: roles system/user/assistant/tool_call/tool_response, a `tool_call` holding the JSON
string `{"name": ..., "arguments": {...}}`, the reasoning before a call as an `assistant` message
right before it, and `tools` as OpenAI specs `{"type": "function", "function": {...}}`.

Formats (`detect_agent_format` tells them apart):
  * `toolbench`: a ToolBench answer file (`{"answer_generation": {"train_messages", "function",
    ...}}`, or `answer_generation` itself): OpenAI `function_call` messages; `Finish` with
    give_answer becomes the final assistant message. A query file row (`{"query", "api_list"}`)
    becomes the prompt alone, its APIs named as ToolBench names them.
  * `toolllama`: ToolLLaMA `conversations` (`from` system/user/assistant/function, assistant
    values `Thought: ...\\nAction: ...\\nAction Input: ...`, the APIs inside the system prompt).
  * `glaive`: ShareGPT `conversations` with `function_call`/`observation` turns and a `tools`
    JSON string (LLaMA-Factory's glaive_toolcall).
  * `hermes`: `messages` (or ShareGPT) rows whose calls sit inside assistant turns: hermes
    `<tool_call>{...}</tool_call>` text, OpenAI `tool_calls`/`function_call` fields, or
    LLaMA-Factory v1 content parts (`reasoning`, `tool_call`); `tool` turns and user turns made
    only of `<tool_response>` blocks become tool responses.

Errors are `ValueError`s whose message names the key or the message index at fault, so that
`formats.read_rows` reports them with the file and line.
"""

import ast
import json
import re
from typing import Any

from swiftjax.data import formats

AGENT_FORMATS = ("toolbench", "toolllama", "glaive", "hermes")
FINISH = "Finish"

# ToolBench's terminating function: the facts (name, return types, fields) are ToolBench's.
FINISH_TOOL = {"type": "function", "function": {
    "name": FINISH,
    "description": "Call this at the end of every attempt: give_answer with a final_answer "
                   "complete enough to show to the user, or give_up_and_restart if the task "
                   "cannot be solved from this state.",
    "parameters": {"type": "object", "properties": {
        "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
        "final_answer": {"type": "string",
                         "description": "the answer, required when return_type is give_answer"}},
        "required": ["return_type"]}}}

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_TOOL_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.S)
_REACT = re.compile(r"^\s*(?:Thought:(?P<thought>.*?))?\s*Action:(?P<name>[^\n]*)"
                    r"(?:\s*Action Input:(?P<args>.*))?\s*$", re.S)
_APIS = "Specifically, you have access to the following APIs:"
_NO_THOUGHT = ("", "None")  # ToolBench writes the content of a bare call as the string "None".


# ---------------------------------------------------------------------------------------------
# Tools and calls.


def _loads(text: str) -> Any:
  """JSON, or a Python literal (ToolBench/ToolLLaMA write some dicts with `repr`)."""
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    try:
      return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      raise ValueError(f"not valid JSON: {text[:80]!r}") from None


def normalize_tools(tools: Any) -> list[dict] | None:
  """Tool specs in the OpenAI form; None for no tools.

  Accepts a list of OpenAI (`{"type": "function", "function": {...}}`) or bare
  (`{"name", "description", "parameters"}`) specs, or a JSON string holding such a list.

  Raises:
    ValueError: naming the index of a spec that is not a dict or has no string name.
  """
  if tools is None:
    return None
  if isinstance(tools, str):
    if not tools.strip():
      return None
    try:
      tools = _loads(tools)
    except ValueError as e:
      raise ValueError(f"tools: {e}") from None
  if isinstance(tools, dict):
    tools = [tools]
  if not isinstance(tools, list):
    raise ValueError(f"tools must be a list of tool specs, got {type(tools).__name__}")
  out = []
  for i, tool in enumerate(tools):
    if isinstance(tool, str):
      try:
        tool = _loads(tool)
      except ValueError as e:
        raise ValueError(f"tools[{i}]: {e}") from None
    if not isinstance(tool, dict):
      raise ValueError(f"tools[{i}] must be a JSON object, got {type(tool).__name__}")
    fn = tool["function"] if isinstance(tool.get("function"), dict) else tool
    if not isinstance(fn.get("name"), str) or not fn["name"]:
      raise ValueError(f"tools[{i}] has no string 'name'")
    fn = {"name": fn["name"], "description": fn.get("description") or "",
          "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}
    out.append({"type": "function", "function": fn})
  return out or None


def tool_names(tools: Any) -> list[str]:
  """The names of the tools, in order (any accepted `tools` form)."""
  return [t["function"]["name"] for t in normalize_tools(tools) or []]


def parse_arguments(arguments: Any) -> dict:
  """A call's arguments as a dict: a dict, or a string holding a JSON object ("" is `{}`).

  Raises:
    ValueError: the arguments are not a JSON object.
  """
  if arguments is None:
    return {}
  if isinstance(arguments, str):
    if not arguments.strip():
      return {}
    arguments = _loads(arguments)
  if not isinstance(arguments, dict):
    raise ValueError(f"arguments must be a JSON object, got {type(arguments).__name__}")
  return arguments


def call_content(name: str, arguments: Any) -> str:
  """The content of a `tool_call` message: `{"name": ..., "arguments": {...}}` as JSON."""
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"a tool call needs a string name, got {name!r}")
  try:
    args = parse_arguments(arguments)
  except ValueError as e:
    raise ValueError(f"call of {name!r}: {e}") from None
  return json.dumps({"name": name.strip(), "arguments": args}, ensure_ascii=False)


def parse_call(content: Any) -> tuple[str, dict]:
  """`(name, arguments)` of a tool call given as a JSON string or dict (`arguments` may be a
  JSON string; `parameters` is read when `arguments` is absent)."""
  obj = _loads(content) if isinstance(content, str) else content
  if not isinstance(obj, dict):
    raise ValueError(f"a tool call must be a JSON object, got {type(obj).__name__}")
  if isinstance(obj.get("function"), dict):  # OpenAI `tool_calls` entry.
    obj = obj["function"]
  if not isinstance(obj.get("name"), str):
    raise ValueError("a tool call has no string 'name'")
  args = obj.get("arguments", obj.get("parameters"))
  try:
    return obj["name"], parse_arguments(args)
  except ValueError as e:
    raise ValueError(f"call of {obj['name']!r}: {e}") from None


def _call_message(content: Any, extra: dict | None = None) -> dict:
  name, args = parse_call(content)
  return {"role": "tool_call", "content": call_content(name, args), **(extra or {})}


def _finish_messages(thought: str, args: dict, extra: dict) -> list[dict]:
  """A ToolBench `Finish` call: give_answer is the final assistant message (after the thought,
  if any); any other return type stays a `Finish` tool call."""
  out = [{"role": "assistant", "content": thought, **extra}] if thought else []
  if args.get("return_type") == "give_answer" and isinstance(args.get("final_answer"), str):
    return out + [{"role": "assistant", "content": args["final_answer"], **extra}]
  return out + [{"role": "tool_call", "content": call_content(FINISH, args), **extra}]


def _loss(m: dict) -> dict:
  return {"loss": m["loss"]} if "loss" in m else {}


# ---------------------------------------------------------------------------------------------
# ToolBench.


def _standardize(name: str) -> str:
  """ToolBench's `standardize`: lower-case `[a-z0-9_]` (CJK kept), runs of `_` folded, no
  leading/trailing `_`, a leading digit prefixed with `get_`."""
  s = re.sub(r"[^\u4e00-\u9fa5a-zA-Z0-9_]", "_", str(name))
  s = re.sub(r"_+", "_", s).lower().strip("_")
  return "get_" + s if s[:1].isdigit() else s


def _change_name(name: str) -> str:
  """ToolBench's `change_name`: prefix names that are Python keywords-ish with `is_`."""
  return "is_" + name if name in ("from", "class", "return", "false", "true", "id", "and") else name


def toolbench_tools(api_list: list[dict]) -> list[dict]:
  """OpenAI tool specs of a ToolBench query's `api_list`, plus `Finish`.

  Names and schemas follow ToolBench's `api_json_to_openai_json`: `<api>_for_<tool>` (last 64
  characters), NUMBER/STRING/BOOLEAN types mapped, `default` kept as `example_value`.
  """
  types = {"NUMBER": "integer", "STRING": "string", "BOOLEAN": "boolean"}
  out = []
  for i, api in enumerate(api_list):
    if not isinstance(api, dict) or "api_name" not in api or "tool_name" not in api:
      raise ValueError(f"api_list[{i}] needs 'api_name' and 'tool_name'")
    tool = _standardize(api["tool_name"])
    name = f"{_change_name(_standardize(api['api_name']))}_for_{tool}"[-64:]
    desc = f'This is the subfunction for tool "{tool}", you can use this tool.'
    if str(api.get("api_description") or "").strip():
      text = api["api_description"].strip().replace(api["api_name"], name)[:256]
      desc += f'The description of this function is: "{text}"'
    params = {"type": "object", "properties": {}, "required": [], "optional": []}
    for key, kind in (("required_parameters", "required"), ("optional_parameters", "optional")):
      for p in api.get(key) or []:
        pname = _change_name(_standardize(p["name"]))
        spec = {"type": types.get(p.get("type"), "string"),
                "description": str(p.get("description") or "")[:256]}
        if str(p.get("default", "")) != "":
          spec["example_value"] = p["default"]
        params["properties"][pname] = spec
        params[kind].append(pname)
    out.append({"type": "function", "function": {"name": name, "description": desc,
                                                 "parameters": params}})
  return out + [FINISH_TOOL]


def _query_text(content: Any) -> str:
  """A ToolBench user turn without the `Begin!` that the DFSDT prompt appends."""
  text = formats.text_of(content).strip()
  return text[:-len("Begin!")].rstrip() if text.endswith("Begin!") else text


def from_toolbench(row: dict, *, conversation: int = -1) -> dict:
  """A ToolBench answer file (or its `answer_generation`), or a query file row.

  Args:
    row: the parsed JSON.
    conversation: which of `train_messages` to convert (ToolBench stores one growing
      conversation per step; the last is the whole trajectory).

  Returns:
    The normalised row. The DFSDT system prompt is dropped (agent templates supply their own);
    `function` turns become tool responses; `Finish` give_answer becomes the final assistant
    message.
  """
  if "api_list" in row and "query" in row and "answer_generation" not in row:
    if not isinstance(row["api_list"], list):
      raise ValueError("api_list must be a list")
    return {"messages": [{"role": "user", "content": _query_text(row["query"])}],
            "tools": toolbench_tools(row["api_list"])}
  gen = row.get("answer_generation", row)
  if not isinstance(gen, dict):
    raise ValueError("answer_generation must be a JSON object")
  if "train_messages" not in gen:
    raise ValueError(f"answer_generation has no train_messages (valid_data is "
                     f"{gen.get('valid_data')!r})")
  convs = gen["train_messages"]
  if convs and isinstance(convs[0], dict):  # A single conversation rather than a list of them.
    convs = [convs]
  if not isinstance(convs, list) or not convs:
    raise ValueError("train_messages must be a non-empty list of conversations")
  try:
    conv = convs[conversation]
  except IndexError:
    raise ValueError(f"train_messages has {len(convs)} conversations, no index "
                     f"{conversation}") from None
  tools = normalize_tools(gen.get("function", row.get("tools")))
  messages = []
  for i, m in enumerate(conv):
    try:
      messages += _toolbench_message(m)
    except (ValueError, KeyError, TypeError) as e:
      msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
      raise ValueError(f"train_messages[{conversation}] message {i}: {msg}") from None
  return {"messages": messages, "tools": tools}


def _toolbench_message(m: dict) -> list[dict]:
  role, extra = m["role"], _loss(m)
  content = m.get("content")
  text = "" if content is None else formats.text_of(content).strip()
  if role == "system":
    return []
  if role == "user":
    return [{"role": "user", "content": _query_text(text), **extra}]
  if role in ("function", "tool"):
    return [{"role": "tool_response", "content": text, **extra}]
  if role != "assistant":
    raise ValueError(f"unknown role {role!r}")
  thought = "" if text in _NO_THOUGHT else text
  call = m.get("function_call")
  if call is None:
    return [{"role": "assistant", "content": thought, **extra}] if thought else []
  name, args = parse_call(call)
  if name == FINISH:
    return _finish_messages(thought, args, extra)
  out = [{"role": "assistant", "content": thought, **extra}] if thought else []
  return out + [{"role": "tool_call", "content": call_content(name, args), **extra}]


# ---------------------------------------------------------------------------------------------
# ToolLLaMA.


def _toolllama_tools(system: str) -> list[dict] | None:
  """The APIs a ToolLLaMA system prompt lists after "Specifically, you have access to ..."."""
  at = system.find(_APIS)
  if at < 0:
    return None
  try:
    return normalize_tools(system[at + len(_APIS):].strip())
  except ValueError as e:
    raise ValueError(f"the API list of the system prompt: {e}") from None


def from_toolllama(row: dict) -> dict:
  """A ToolLLaMA `conversations` row (one training step of a ToolBench trajectory).

  The system prompt (DFSDT instructions + the API list) is replaced by `tools` parsed from it
  (or the row's own `tools`); assistant turns are read as `Thought/Action/Action Input`.
  """
  conv = row.get("conversations")
  if not isinstance(conv, list):
    raise ValueError("conversations must be a list of turns")
  tools = normalize_tools(row.get("tools"))
  messages = []
  for i, m in enumerate(conv):
    try:
      if not isinstance(m, dict):
        raise ValueError(f"a turn must be a JSON object, got {type(m).__name__}")
      role, text = m.get("from", m.get("role")), formats.text_of(m.get("value", m.get("content")))
      if role == "system":
        found = _toolllama_tools(text)
        if found is None:
          messages.append({"role": "system", "content": text})
        elif tools is None:
          tools = found
      elif role in ("user", "human"):
        messages.append({"role": "user", "content": _query_text(text)})
      elif role in ("function", "observation", "tool"):
        messages.append({"role": "tool_response", "content": text})
      elif role in ("assistant", "gpt"):
        messages += _react_messages(text)
      else:
        raise ValueError(f"unknown speaker {role!r}")
    except ValueError as e:
      raise ValueError(f"message {i}: {e}") from None
  return {"messages": messages, "tools": tools}


def _react_messages(text: str) -> list[dict]:
  """One `Thought/Action/Action Input` turn (or plain text) as normalised messages."""
  m = _REACT.match(text)
  if m is None:
    plain = text.strip()
    if plain.startswith("Thought:"):
      plain = plain[len("Thought:"):].strip()
    return [{"role": "assistant", "content": plain}]
  thought, name = (m["thought"] or "").strip(), m["name"].strip()
  if not name:
    raise ValueError("`Action:` names no tool")
  try:
    args = parse_arguments(m["args"])
  except ValueError as e:
    raise ValueError(f"Action Input of {name!r}: {e}") from None
  if name == FINISH:
    return _finish_messages(thought, args, {})
  out = [{"role": "assistant", "content": thought}] if thought else []
  return out + [{"role": "tool_call", "content": call_content(name, args)}]


# ---------------------------------------------------------------------------------------------
# glaive / ShareGPT and hermes.


def _with_parsed_calls(messages: list[dict], row: dict) -> dict:
  """`messages` with every tool_call content parsed to `{"name", "arguments"}`, and the row's
  tools normalised."""
  for i, m in enumerate(messages):
    if m["role"] == "tool_call":
      try:
        messages[i] = _call_message(m["content"], _loss(m))
      except ValueError as e:
        raise ValueError(f"message {i}: {e}") from None
  return {"messages": messages, "tools": normalize_tools(row.get("tools"))}


def from_glaive(row: dict) -> dict:
  """A ShareGPT row with `function_call`/`observation` turns and a `tools` (JSON string) key."""
  messages = formats.messages_of(row, "sharegpt")
  return _with_parsed_calls(messages, row)


_HERMES_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant",
                 "gpt": "assistant", "tool": "tool_response", "function": "tool_response",
                 "observation": "tool_response", "tool_response": "tool_response",
                 "tool_call": "tool_call", "function_call": "tool_call"}


def _assistant_pieces(content: Any) -> tuple[list[str], list[str], list[Any]]:
  """`(reasoning, texts, calls)` of an assistant turn's content (string or content parts)."""
  reasoning, texts, calls = [], [], []
  parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
  for j, part in enumerate(parts):
    if not isinstance(part, dict):
      raise ValueError(f"content part {j} must be a JSON object")
    kind, value = part.get("type", "text"), part.get("text", part.get("value"))
    if not isinstance(value, str):
      raise ValueError(f"content part {j} ({kind}) has no string text or value")
    if kind == "reasoning":
      reasoning.append(value.strip())
    elif kind == "tool_call":
      calls.append(value)
    elif kind == "text":
      calls += _TOOL_CALL.findall(value)
      texts.append(_TOOL_CALL.sub("", value).strip())
    else:
      raise ValueError(f"content part {j} has unsupported type {kind!r}")
  return [r for r in reasoning if r], [t for t in texts if t], calls


def from_hermes(row: dict) -> dict:
  """A `messages` (or ShareGPT) row with calls inside assistant turns (see the module doc)."""
  raw = row.get("messages", row.get("conversations"))
  if not isinstance(raw, list):
    raise ValueError("messages must be a list")
  messages = formats.system_of(row)
  for i, m in enumerate(raw):
    try:
      if not isinstance(m, dict):
        raise ValueError(f"a message must be a JSON object, got {type(m).__name__}")
      speaker = m.get("role", m.get("from"))
      role, extra = _HERMES_ROLES.get(speaker), _loss(m)
      content = m.get("content", m.get("value"))
      if role is None:
        raise ValueError(f"unknown role {speaker!r}")
      if role == "assistant":
        reasoning, texts, calls = _assistant_pieces(content)
        calls += list(m.get("tool_calls") or [])
        if m.get("function_call"):
          calls.append(m["function_call"])
        if calls:
          thought = "\n".join(reasoning + texts)
          messages += [{"role": "assistant", "content": thought, **extra}] if thought else []
          messages += [_call_message(c, extra) for c in calls]
        else:
          if reasoning:
            messages.append({"role": "assistant", "content": "\n".join(reasoning), **extra})
          messages.append({"role": "assistant", "content": "\n".join(texts), **extra})
      elif role == "tool_call":
        messages.append(_call_message(formats.text_of(content), extra))
      else:
        text = formats.text_of(content)
        blocks = _TOOL_RESPONSE.findall(text)
        if role in ("user", "tool_response") and blocks and not _TOOL_RESPONSE.sub(
            "", text).strip():
          messages += [{"role": "tool_response", "content": b.strip(), **extra} for b in blocks]
        else:
          messages.append({"role": role, "content": text, **extra})
    except ValueError as e:
      raise ValueError(f"message {i}: {e}") from None
  return {"messages": messages, "tools": normalize_tools(row.get("tools"))}


# ---------------------------------------------------------------------------------------------
# Dispatch.


def _speakers(turns: list) -> set:
  return {m.get("from", m.get("role")) for m in turns if isinstance(m, dict)}


def _has_hermes_turn(turns: list) -> bool:
  for m in turns:
    if not isinstance(m, dict):
      continue
    if m.get("role") in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
      return True
    content = m.get("content", m.get("value"))
    if (m.get("role", m.get("from")) in ("assistant", "gpt") and isinstance(content, str)
        and "<tool_call>" in content):  # Not the system prompt that shows the syntax.
      return True
    if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in
                                         ("tool_call", "reasoning") for p in content):
      return True
  return False


def detect_agent_format(row: Any) -> str | None:
  """The agent format of a row (one of `AGENT_FORMATS`), or None for a row with no agent
  structure (plain `messages`, alpaca, ...; `formats.detect` reads those)."""
  if not isinstance(row, dict):
    return None
  if "answer_generation" in row or "train_messages" in row or (
      "api_list" in row and "query" in row):
    return "toolbench"
  conv = row.get("conversations")
  if isinstance(conv, list):
    speakers = _speakers(conv)
    if "function" in speakers or any(
        isinstance(m, dict) and m.get("from") == "assistant" and
        _REACT.match(str(m.get("value"))) for m in conv):
      return "toolllama"
    if speakers & {"function_call", "observation"}:
      return "glaive"
    return "hermes" if _has_hermes_turn(conv) else None
  messages = row.get("messages")
  if isinstance(messages, list) and _has_hermes_turn(messages):
    return "hermes"
  return None


_CONVERTERS = {"toolbench": from_toolbench, "toolllama": from_toolllama, "glaive": from_glaive,
               "hermes": from_hermes}


def to_messages(row: Any, fmt: str | None = None) -> dict:
  """Any supported row as `{"messages", "tools"}` in the normalised agent form.

  Args:
    row: the parsed row.
    fmt: one of `AGENT_FORMATS`, one of `formats.FORMATS`, or None to detect.

  Returns:
    The messages (a prompt-only row, e.g. a ToolBench query, has no assistant message) and the
    tools in OpenAI form (None without tools). `tool_call` contents are re-serialised
    `{"name", "arguments"}` JSON with object arguments.

  Raises:
    ValueError: naming the key or the message index at fault.
  """
  if not isinstance(row, dict):
    raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
  fmt = fmt or detect_agent_format(row)
  if fmt in _CONVERTERS:
    return _CONVERTERS[fmt](row)
  if fmt is not None and fmt not in formats.FORMATS:
    raise ValueError(f"format {fmt!r} is not one of {', '.join(AGENT_FORMATS + formats.FORMATS)}")
  messages = formats.messages_of(row, fmt if fmt in formats.FORMATS else None)
  return _with_parsed_calls(messages, row)
