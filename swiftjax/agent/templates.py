"""Agent templates: tools, calls and tool results as plain chat messages.

`to_chat(messages, tools, template)` turns a normalised agent row (`swiftjax.agent.converters`)
into system/user/assistant/tool messages whose contents carry the tool list and the calls as
text, so any chat template renders them and `swiftjax.data.render` trains on the assistant text:

  * `react` (ms-swift's react_en, after LangChain's ReAct): tools listed in the system prompt;
    a call is `Thought: ...\\nAction: <name>\\nAction Input: <json>`, its result a `tool` turn
    `Observation: ...`, an answer `Thought: ...\\nFinal Answer: ...`.
  * `toolbench` (ToolBench's DFSDT prompt, `Finish` added to the tools): calls as in react; an
    answer is `Action: Finish` with `{"return_type": "give_answer", "final_answer": ...}`.
  * `hermes` (Hermes / Qwen): tools as JSON lines in `<tools></tools>`, a call
    `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, a result
    `<tool_response>\\n...\\n</tool_response>`.

The reasoning before a call (an `assistant` message right before the `tool_call`) joins the call
in one assistant message; parallel calls share that message. Each message is rendered from
itself alone (no later message changes an earlier one), so the result is prefix-stable under
any chat template that is. Tool lists are one line per tool to keep prompts short.
"""

import json
from typing import Any, Sequence

from swiftjax import errors
from swiftjax.agent import converters

TEMPLATES = ("react", "toolbench", "hermes")
_DEFAULT_THOUGHT = "I now know the final answer"

_REACT_PROMPT = """Answer the user's questions as well as you can. You can use these tools:
{tools}

To use a tool, reply in this form:
Thought: what to do next and why
Action: the tool to use, one of [{names}]
Action Input: its arguments as a JSON object
Then wait for the Observation with the tool's result, and repeat as often as needed. To \
answer, reply:
Thought: I now know the final answer
Final Answer: the answer to the user's question"""

_TOOLBENCH_PROMPT = """You solve tasks with tools (functions). At each step, think about the \
current state and what to do next, then make one function call to act. Reply in this form:
Thought:
Action:
Action Input:
After each call you receive its result and are in a new state; analyse it and decide the next \
step. After enough thought-call steps, give the final answer.
Remember:
1. State changes cannot be undone; to restart the task, give up and restart.
2. Keep each thought short, at most 5 sentences.
3. You may try several times; when trying alternatives, try one per attempt.
Task: handle real-time user queries with the functions. ALWAYS end by calling "Finish": with \
return_type "give_answer" and a final_answer that tells the user everything needed, or with \
"give_up_and_restart" when you cannot solve the task or the functions keep failing. Use only \
the function names below, not the original tool names.
Functions:
{tools}"""

_HERMES_PROMPT = """# Tools

You may call one or more functions to help with the user's request. The functions are listed \
inside <tools></tools>, one JSON object per line:
<tools>
{tools}
</tools>

For each call, reply with a JSON object holding the function name and its arguments inside \
<tool_call></tool_call> tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def _check(template: str) -> None:
  if template not in TEMPLATES:
    raise errors.ConfigError(f"agent template {template!r} is not one of {', '.join(TEMPLATES)}")


def _dumps(obj: Any) -> str:
  return json.dumps(obj, ensure_ascii=False)


def _compact_parameters(params: Any) -> Any:
  """The parameter schema less empty top-level lists (ToolBench's `"optional": []` etc.)."""
  if not isinstance(params, dict):
    return params
  return {k: v for k, v in params.items() if v != []}


def _tool_line(fn: dict, template: str) -> str:
  params = _compact_parameters(fn["parameters"])
  if template == "hermes":
    return _dumps({"name": fn["name"], "description": fn["description"], "parameters": params})
  desc = " ".join(fn["description"].split())  # One line, whatever the description holds.
  return f"{fn['name']}: {desc} | parameters: {_dumps(params)}"


def system_prompt(tools: Any, template: str) -> str:
  """The tool section of the system prompt: instructions and one line per tool.

  Args:
    tools: tool specs in any form `converters.normalize_tools` reads (may be empty).
    template: one of `TEMPLATES`; `toolbench` adds the `Finish` function when absent.
  """
  _check(template)
  fns = [t["function"] for t in converters.normalize_tools(tools) or []]
  if template == "toolbench" and converters.FINISH not in [f["name"] for f in fns]:
    fns.append(converters.FINISH_TOOL["function"])
  lines = "\n".join(_tool_line(f, template) for f in fns)
  if template == "react":
    return _REACT_PROMPT.format(tools=lines, names=", ".join(f["name"] for f in fns))
  if template == "toolbench":
    return _TOOLBENCH_PROMPT.format(tools=lines)
  return _HERMES_PROMPT.format(tools=lines)


def _arguments_text(arguments: Any) -> str:
  """Arguments as JSON text: a dict is serialised, a string kept as written."""
  if isinstance(arguments, str):
    return arguments.strip()
  return _dumps({} if arguments is None else arguments)


def _thought_line(thought: str) -> str:
  return "Thought:" + (f" {thought}" if thought else "")


def format_call(template: str, name: str, arguments: Any, thought: str = "") -> str:
  """One call as the assistant writes it in `template`.

  Args:
    template: one of `TEMPLATES`.
    name: the tool name.
    arguments: a dict, or JSON text (kept as written).
    thought: the reasoning before the call ("" for none).
  """
  return format_calls(template, [(name, arguments)], thought)


def format_calls(template: str, calls: Sequence[tuple[str, Any]], thought: str = "") -> str:
  """Parallel calls `[(name, arguments), ...]` in one assistant turn (see `format_call`)."""
  _check(template)
  thought = _strip_label(thought)
  if template == "hermes":
    blocks = [f"<tool_call>\n{_dumps({'name': n, 'arguments': _parsed(a)})}\n</tool_call>"
              for n, a in calls]
    return "\n".join(([thought] if thought else []) + blocks)
  lines = [_thought_line(thought)]
  for n, a in calls:
    lines += [f"Action: {n}", f"Action Input: {_arguments_text(a)}"]
  return "\n".join(lines)


def format_final(template: str, answer: str, thought: str = "") -> str:
  """A final answer after (possible) tool use as the assistant writes it in `template`."""
  _check(template)
  thought = _strip_label(thought)
  if template == "react":
    return f"{_thought_line(thought or _DEFAULT_THOUGHT)}\nFinal Answer: {answer}"
  if template == "toolbench":
    args = {"return_type": "give_answer", "final_answer": answer}
    return format_calls(template, [(converters.FINISH, args)], thought)
  return f"{thought}\n{answer}" if thought else answer


def format_observation(template: str, content: str) -> str:
  """A tool's result as the `tool` message of `template`."""
  _check(template)
  if template == "react":
    return f"Observation: {content}"
  if template == "hermes":
    return f"<tool_response>\n{content}\n</tool_response>"
  return content


def _parsed(arguments: Any) -> Any:
  """Arguments for a hermes JSON body: JSON text is parsed so it nests as an object."""
  if isinstance(arguments, str):
    try:
      return json.loads(arguments)
    except json.JSONDecodeError:
      return arguments
  return {} if arguments is None else arguments


def _strip_label(thought: str) -> str:
  thought = (thought or "").strip()
  return thought[len("Thought:"):].strip() if thought.startswith("Thought:") else thought


def _already_formatted(content: str, template: str) -> bool:
  """An assistant text that already is a react/toolbench turn (kept as it is)."""
  if template == "react":
    return content.lstrip().startswith("Thought:") or "Final Answer:" in content
  if template == "toolbench":
    return "\nAction: " in content or content.lstrip().startswith("Action:")
  return "<tool_call>" in content


def to_chat(messages: Sequence[dict], tools: Any, template: str = "react") -> list[dict]:
  """A normalised agent conversation as chat messages for `template`.

  Args:
    messages: normalised messages (roles system/user/assistant/tool_call/tool_response).
    tools: the row's tools (any form `converters.normalize_tools` reads), or None.
    template: one of `TEMPLATES`.

  Returns:
    Messages with roles system/user/assistant/tool and string contents; `loss` keys are kept
    (a merged message takes the last one given). A conversation with neither tools nor tool
    messages comes back unchanged; without tools, assistant text is never rewritten.

  Raises:
    ConfigError: an unknown template.
    ValueError: naming the index of a `tool_call` message that is not a JSON call.
  """
  _check(template)
  tools = converters.normalize_tools(tools)
  if not tools and not any(m["role"] in ("tool_call", "tool_response") for m in messages):
    return [dict(m) for m in messages]
  calls = []
  for i, m in enumerate(messages):
    if m["role"] == "tool_call":
      try:
        calls.append(converters.parse_call(m["content"]))
      except ValueError as e:
        raise ValueError(f"message {i}: {e}") from None
  if tools and template != "toolbench" and converters.FINISH not in [n for n, _ in calls]:
    # Answers are `Final Answer:` / plain text here; ToolBench's Finish is not a tool to offer.
    tools = [t for t in tools if t["function"]["name"] != converters.FINISH]

  out, thoughts, pending = [], [], []
  rest = list(messages)
  system = rest.pop(0)["content"] if rest and rest[0]["role"] == "system" else ""
  if tools:
    prompt = system_prompt(tools, template)
    out.append({"role": "system", "content": f"{system}\n\n{prompt}" if system else prompt})
  elif messages and messages[0]["role"] == "system":
    out.append(dict(messages[0]))
  loss = {}
  call_iter = iter(calls)

  def flush():
    nonlocal thoughts, pending, loss
    if pending:
      out.append({"role": "assistant", "content": format_calls(
          template, pending, "\n".join(t["content"] for t in thoughts)), **loss})
    elif thoughts:
      last = thoughts[-1]
      if not tools:
        out.extend(dict(t) for t in thoughts)
      elif _already_formatted(last["content"], template):
        out.append({"role": "assistant",
                    "content": "\n".join(t["content"] for t in thoughts), **loss})
      else:
        thought = "\n".join(t["content"] for t in thoughts[:-1])
        out.append({"role": "assistant",
                    "content": format_final(template, last["content"], thought), **loss})
    thoughts, pending, loss = [], [], {}

  for m in rest:
    role = m["role"]
    if role == "assistant":
      if pending:
        flush()
      thoughts.append(m)
    elif role == "tool_call":
      pending.append(next(call_iter))
    else:
      flush()
      content = format_observation(template, m["content"]) if role == "tool_response" else (
          m["content"])
      out.append({"role": "tool" if role == "tool_response" else role, "content": content,
                  **({"loss": m["loss"]} if "loss" in m else {})})
      continue
    if "loss" in m:
      loss = {"loss": m["loss"]}
  flush()
  return out
