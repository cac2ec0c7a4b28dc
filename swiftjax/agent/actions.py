"""Parse an agent turn back into an `Action`: what the model planned, called and answered.

Three surface forms are read (`template=None` detects which one a text uses):

  react / toolbench   "Thought: ...\\nAction: <name>\\nAction Input: <json>" or
                      "Thought: ...\\nFinal Answer: <answer>"; ToolBench finishes with
                      `Action: Finish` + `{"return_type": "give_answer", "final_answer": ...}`
                      or gives up with `"return_type": "give_up_and_restart"`.
  hermes              `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`
  ms-swift tool_call  a bare JSON object `{"name": ..., "arguments": {...}}` (the content of a
                      `tool_call` message)

Plan rules (ToolBench-Static, as EvalScope parses it): a named action other than `Finish` is
"call"; `Final Answer:` or `Finish` with return_type give_answer is "finish" (the answer is
taken from it); `Finish` with any other return_type, or with arguments that are not a JSON
object, is "give up". Where this differs from EvalScope's ToolBench-only parser: a text with
neither an action nor `Final Answer:` is "finish" with the text as the answer (EvalScope: a
"call" of the action "none"), since the react template ends with a plain answer; and a text
with several steps is read by its first (EvalScope takes the last `Action:` and the last
`Action Input:`), so a react turn with parallel calls is scored by its first call as a
`tool_call` run is, and a call's arguments end at the next `Thought:`/`Action:`/
`Observation:`/`Final Answer:`.

`reference_action(messages)` reads the reference turn of a row in ms-swift's `messages` form
(an assistant message in react form, or a trailing `tool_call` with the assistant thought
before it).
"""

import dataclasses
import json
import re
from typing import Any, Sequence

TEMPLATES = ("react", "toolbench", "hermes")
FINISH = "Finish"
GIVE_ANSWER = "give_answer"

_ACTION = "Action:"
_ACTION_INPUT = "Action Input:"
_FINAL_ANSWER = "Final Answer:"
_OBSERVATION = re.compile(r"\n?\s*Observation:")
# What ends a call's arguments: the tool's answer, or the model's next step.
_ARGUMENTS_END = re.compile(r"\n?\s*(?:Observation:|Thought:|Action:|Final Answer:)")
_THOUGHT = re.compile(r"^\s*Thought:\s*")
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Action:
  """One parsed agent turn.

  Attributes:
    thought: the reasoning before the action or answer ("" when none).
    name: the called tool (`Finish` included); None when the turn calls nothing.
    arguments: the raw text of the arguments as generated (JSON when well formed); None when
      the turn has no arguments.
    final_answer: the answer of a "finish" turn, else None.
    plan: "call", "finish" or "give up".
  """
  thought: str
  name: str | None
  arguments: str | None
  final_answer: str | None
  plan: str


def _finish_or_call(thought: str, name: str, arguments: str | None) -> Action:
  """The action for a named call; `Finish` decides between finishing and giving up."""
  if name != FINISH:
    return Action(thought, name, arguments, None, "call")
  try:
    args = json.loads(arguments) if arguments is not None else None
  except json.JSONDecodeError:
    args = None
  if isinstance(args, dict) and args.get("return_type") == GIVE_ANSWER:
    answer = args.get("final_answer")
    return Action(thought, name, arguments, None if answer is None else str(answer), "finish")
  # give_up_and_restart, a missing return_type, or unreadable arguments (EvalScope: give up).
  return Action(thought, name, arguments, None, "give up")


def _strip_thought(text: str) -> str:
  return _THOUGHT.sub("", text, count=1).strip()


def _parse_react(text: str) -> Action | None:
  """Thought/Action/Action Input or Final Answer; None when the text has neither."""
  act = text.find(_ACTION)
  final = text.find(_FINAL_ANSWER)
  if act < 0 and final < 0:
    return None
  if act < 0 or 0 <= final < act:  # The answer comes before any action: the turn finishes.
    answer = _OBSERVATION.split(text[final + len(_FINAL_ANSWER):], maxsplit=1)[0].strip()
    return Action(_strip_thought(text[:final]), None, None, answer, "finish")
  # The first action is the turn's call (parallel calls are scored by their first, as
  # `reference_action` does); its arguments end where the next step would begin.
  rest = text[act + len(_ACTION):]
  inp = rest.find(_ACTION_INPUT)
  next_act = rest.find(_ACTION)
  if inp >= 0 and 0 <= next_act < inp:
    inp = -1  # This action has no Action Input of its own.
  name = (rest if inp < 0 else rest[:inp]).strip().split("\n", 1)[0].strip()
  arguments = None
  if inp >= 0:
    arguments = _ARGUMENTS_END.split(rest[inp + len(_ACTION_INPUT):], maxsplit=1)[0].strip()
  return _finish_or_call(_strip_thought(text[:act]), name, arguments)


def _call_from_json(thought: str, body: str) -> Action | None:
  """A `{"name", "arguments"}` object; None when `body` is not one."""
  try:
    obj = json.loads(body)
  except json.JSONDecodeError:
    return None
  if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
    return None
  args = obj.get("arguments", obj.get("parameters"))
  if args is None:
    arguments = None
  elif isinstance(args, str):
    arguments = args  # Arguments stored as a JSON string stay as written.
  else:
    arguments = json.dumps(args, ensure_ascii=False)
  return _finish_or_call(thought, obj["name"], arguments)


def _parse_hermes(text: str) -> Action | None:
  """The first `<tool_call>` block; None when the text has none."""
  m = _TOOL_CALL.search(text)
  if m is None:
    return None
  thought = text[:m.start()].strip()
  body = m.group(1).strip()
  action = _call_from_json(thought, body)
  if action is not None:
    return action
  # A call the model tried to make but did not write as JSON: it still planned a call.
  name = _NAME.search(body)
  return Action(thought, name.group(1) if name else None, body, None, "call")


def _plain(text: str) -> Action:
  """A text with no action: the whole of it (less a `Thought:` label) is the answer."""
  return Action("", None, None, _strip_thought(text), "finish")


def parse(text: str, template: str | None = None) -> Action:
  """Parses one generated (or reference) agent turn.

  Args:
    text: the turn's text.
    template: "react", "toolbench", "hermes", or None to detect (`<tool_call>` means hermes,
      a bare `{"name", "arguments"}` object an ms-swift tool call, else react/toolbench text).

  Returns:
    The action; see the module docstring for the plan rules.

  Raises:
    ValueError: an unknown template.
  """
  if template is not None and template not in TEMPLATES:
    raise ValueError(f"unknown agent template {template!r}; known: {', '.join(TEMPLATES)}")
  if template in (None, "hermes"):
    action = _parse_hermes(text)
    if action is not None:
      return action
  stripped = text.strip()
  if stripped.startswith("{"):
    action = _call_from_json("", stripped)
    if action is not None:
      return action
  if template != "hermes":
    action = _parse_react(text)
    if action is not None:
      return action
  return _plain(text)


def _call_message(thought: str, content: str) -> Action:
  action = _call_from_json(thought, content)
  if action is None:
    raise ValueError(f"a tool_call message must hold a JSON object with a string 'name', got "
                     f"{content[:80]!r}")
  return action


def turn_start(messages: Sequence[dict[str, Any]]) -> int:
  """Index of the first message of the last assistant-side turn.

  The turn is the trailing run of assistant messages (a thought, then the answer: the agent
  templates merge them into one turn), or the trailing run of `tool_call` messages together with
  the assistant thought right before them.

  Raises:
    ValueError: the conversation does not end with an assistant or tool_call message.
  """
  if not messages or messages[-1].get("role") not in ("assistant", "tool_call"):
    last = messages[-1].get("role") if messages else None
    raise ValueError(f"the reference turn must be the last message (assistant or tool_call), "
                     f"got {last!r}")
  i = len(messages) - 1
  if messages[i]["role"] == "assistant":
    while i > 0 and messages[i - 1]["role"] == "assistant":
      i -= 1
    return i
  while i > 0 and messages[i - 1]["role"] == "tool_call":
    i -= 1
  if i > 0 and messages[i - 1]["role"] == "assistant":
    i -= 1
  return i


def reference_action(messages: Sequence[dict[str, Any]]) -> Action:
  """The action of a row's last assistant-side turn (see `turn_start`).

  An assistant message is parsed as text (react / toolbench / hermes). A run of `tool_call`
  messages (parallel calls) is scored by its first call: that is what a model continuing the
  conversation before the turn produces first.

  Raises:
    ValueError: no reference turn at the end, or a tool_call that is not a JSON call.
  """
  start = turn_start(messages)
  first = messages[start]
  if messages[-1]["role"] == "assistant":  # an answer (after its thought, if any)
    return parse(messages[-1]["content"])
  thought = ""
  if first["role"] == "assistant":
    thought = _strip_thought(first["content"])
    start += 1
  return _call_message(thought, messages[start]["content"])
