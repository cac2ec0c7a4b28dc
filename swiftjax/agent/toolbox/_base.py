"""What every tool module builds on: templates, seeded randomness, JSON-schema helpers, and the
`Tool` / `Chain` records.

A domain module registers its tools with a decorator from `registrar`:

  TOOLS: list[Tool] = []
  _tool = registrar(TOOLS)

  @_tool("get_time", "time", "Get the time.", {"city": str_arg("City name")}, ["city"], ...)
  def _get_time(args): ...

and `swiftjax.agent.toolbox` gathers the modules' lists into one registry.
"""

import dataclasses
import hashlib
import json
import random
import re
import string
from typing import Callable

# Templates: `{slot}` fields, and `<...>` segments dropped when a slot they name is missing
# (optional arguments). Lists print comma-separated, whole floats without ".0".


def show(value) -> str:
  """How a slot value reads in text: `yes`/`no`, `3` for 3.0, lists comma-separated."""
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return str(int(value)) if value.is_integer() else repr(value)
  if isinstance(value, (list, tuple)):
    return ", ".join(show(v) for v in value)
  return str(value)


class _Formatter(string.Formatter):

  def format_field(self, value, format_spec):
    return super().format_field(value, format_spec) if format_spec else show(value)


_FORMATTER = _Formatter()


def fill(template: str, slots: dict) -> str:
  """`template` with `slots` filled in; an optional `<...>` segment naming a missing slot is
  dropped (a missing slot outside one raises KeyError)."""
  out = []
  for i, part in enumerate(re.split(r"<([^<>]*)>", template)):
    try:
      out.append(_FORMATTER.vformat(part, (), slots))
    except KeyError:
      if i % 2 == 0:
        raise
  return "".join(out)


def join(items) -> str:
  """`a`, `a and b`, `a, b and c`."""
  items = [show(i) for i in items]
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def seeded(*parts) -> random.Random:
  """A generator that depends only on `parts`: fake tools answer the same call the same way."""
  key = json.dumps(parts, sort_keys=True, default=str).encode()
  return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


# JSON-schema fragments for tool arguments.


def str_arg(description: str, enum=None) -> dict:
  out = {"type": "string", "description": description}
  if enum:
    out["enum"] = list(enum)
  return out


def num_arg(description: str) -> dict:
  return {"type": "number", "description": description}


def int_arg(description: str, lo: int | None = None, hi: int | None = None) -> dict:
  out = {"type": "integer", "description": description}
  if lo is not None:
    out["minimum"] = lo
  if hi is not None:
    out["maximum"] = hi
  return out


def arr_arg(description: str, item_type: str) -> dict:
  return {"type": "array", "items": {"type": item_type}, "description": description}


@dataclasses.dataclass(frozen=True)
class Tool:
  """A fake tool: its schema, its implementation, and how people ask for it.

  Attributes:
    name, domain, description: as offered to the model (`domain` only groups tools for splits).
    properties, required: the JSON schema of the arguments.
    run: `arguments -> result` (a JSON object); deterministic.
    sample: `rng -> arguments`, optional arguments included some of the time.
    questions: user question templates over the argument slots.
    intent: what a thought says the call does (`check the weather in {location}`).
    answers: final answer templates over arguments, result and `derive(args, result)` slots.
    view: extra question slots computed from the arguments (e.g. a city for an airport code).
  """
  name: str
  domain: str
  description: str
  properties: dict
  required: tuple
  run: Callable[[dict], dict]
  sample: Callable[[random.Random], dict]
  questions: tuple
  intent: str
  answers: tuple
  derive: Callable[[dict, dict], dict] | None = None
  view: Callable[[dict], dict] | None = None

  def spec(self) -> dict:
    """The OpenAI-style tool spec."""
    return {"type": "function", "function": {
        "name": self.name, "description": self.description,
        "parameters": {"type": "object", "properties": self.properties,
                       "required": list(self.required)}}}

  def slots(self, args: dict) -> dict:
    """Question slots: the arguments (enum values with spaces for `_`) plus `view`."""
    out = {k: v.replace("_", " ") if isinstance(v, str) and "enum" in self.properties[k] else v
           for k, v in args.items()}
    if self.view:
      out.update(self.view(args))
    return out

  def answer_slots(self, args: dict, result: dict) -> dict:
    out = {**self.slots(args), **result}
    if self.derive:
      out.update(self.derive(args, result))
    return out


@dataclasses.dataclass(frozen=True)
class Chain:
  """Two dependent calls: `link(first_args, first_result, rng)` gives the second call's arguments.

  `questions` use both calls' argument slots; `bridge` (first tool's answer slots) says what the
  first call found; `answers` see the two calls' answer slots as `{a[...]}` and `{b[...]}`.
  `sample` gives the first call's arguments (default: its required arguments only).
  """
  first: str
  second: str
  link: Callable[[dict, dict, random.Random], dict]
  questions: tuple
  bridge: str
  answers: tuple
  sample: Callable[[random.Random], dict] | None = None


def registrar(tools: list[Tool]) -> Callable:
  """A decorator factory that appends a `Tool` to `tools` for each decorated implementation.

  `@tool(name, domain, description, properties, required, **fields)` on `def run(args)` adds
  `Tool(name=name, ..., required=tuple(required), run=run, **fields)` and returns `run`.
  """
  def tool(name, domain, description, properties, required, **kwargs):
    def register(run):
      tools.append(Tool(name=name, domain=domain, description=description,
                        properties=properties, required=tuple(required), run=run, **kwargs))
      return run
    return register
  return tool


def opts(rng: random.Random, required: dict, p: float = 0.4, **optional) -> dict:
  """`required` plus each optional argument (a thunk) with probability `p`."""
  out = dict(required)
  for key, make in optional.items():
    if rng.random() < p:
      out[key] = make()
  return out


def cheapest(items: list[dict], key: str) -> dict:
  """The item with the smallest `key` ({} for no items)."""
  return min(items, key=lambda i: i[key]) if items else {}


def plain_number(value: float) -> int | float:
  """`value` as an int when it is whole, else rounded to 4 decimals."""
  return int(value) if float(value).is_integer() else round(value, 4)
