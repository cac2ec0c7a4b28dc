"""A tool-use dataset that the project generates itself, deterministic from a seed.

`TOOLS` holds 49 fake tools over 18 domains (weather, maps, flights, currency, stocks, calendar,
email, recipes, units, translation, news, sports, shipping, restaurants, math, time zones,
shopping, cinema), defined in `swiftjax.agent.toolbox` and re-exported here. Each has an
OpenAI-style JSON schema and a fake implementation whose output depends only on its arguments,
so a tool response always agrees with the call that produced it. Samples come in three kinds
(`MIX`):

  * `single`: question -> [thought] -> tool_call -> tool_response -> [thought] -> answer;
  * `multi`: two dependent calls (the second call's arguments come from the first's response);
  * `none`: general knowledge, arithmetic or chit-chat answered directly, with tools offered
    ([thought that no tool is needed] -> answer).

A thought is an `assistant` message right before a call or the answer (present with probability
`THOUGHT_PROB`); the agent templates merge it into the turn (react: `Thought: ...`).

`split_tools(seed)` holds out about a quarter of the tools, spread over domains, for `test`;
`train` and `valid` use only the rest, and every sample offers its needed tools plus 2-4
distractors from its own split (`distractors=(min, max)` sets another range; fewer make shorter
rows). Rows are `{"messages", "tools", "kind"}` in the normalised form of
`swiftjax.data.formats` (see the agent data contract): roles user, assistant, tool_call (JSON
`{"name", "arguments"}`), tool_response (JSON text). This module draws, splits and writes the
samples.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import random
from typing import Callable

from swiftjax import errors
from swiftjax.agent.toolbox import CHAINS, FACTS, TOOLS, Chain, Tool, arithmetic, fill, join, show

# What callers use from here; the tool catalogue itself lives in `swiftjax.agent.toolbox`.
__all__ = ["CHAINS", "DISTRACTORS", "FACTS", "FILES", "HOLDOUT_FRACTION", "MIX", "SPLITS",
           "THOUGHT_PROB", "TOOLS", "VALID_SHARE", "Chain", "Split", "Tool", "arithmetic",
           "check_distractors", "fill", "generate", "join", "question_split", "show",
           "split_tools", "write_splits"]
_show = show  # older name of `show`

SPLITS = ("train", "valid", "test")
MIX = (("single", 0.55), ("multi", 0.25), ("none", 0.20))
HOLDOUT_FRACTION = 0.25
THOUGHT_PROB = 0.85
FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "tools.json")
DISTRACTORS = (2, 4)  # default (min, max) tools offered besides the needed ones

_THOUGHTS = (
    "The user wants to {intent}. I'll call {name}.",
    "I need to {intent}, so I'll use {name}.",
    "To answer this I should {intent} with the {name} tool.",
    "Let me {intent} using {name}.",
    "I'll {intent} by calling {name}.",
    "This needs {name}: I have to {intent}.",
)
_BRIDGES = (
    "{prev} Now I'll {intent} with {name}.",
    "{prev} Next I need to {intent}, so I'll call {name}.",
    "{prev} With that I can {intent} using {name}.",
)
# Thoughts before a final answer. They name what the answer rests on (the tool that was called,
# or that no tool is needed), so the react template's fixed "I now know the final answer" is
# not the most common assistant opening: a model trained on rows where it was (about half of
# all assistant turns) learnt to open every turn with it and never called a tool (issue 6).
_FINAL_THOUGHTS = (
    "{name} returned what the user asked for.",
    "The {name} result answers the question.",
    "I have the result from {name}, so I can answer now.",
    "{name} gave me what I needed; time to answer.",
)
_FINAL_THOUGHTS_MULTI = (
    "{first} and then {second} gave me everything the user asked for.",
    "With the {second} result I can answer the whole question.",
    "Both calls are done: {first}, then {second}. I can answer now.",
)
_NO_TOOL_THOUGHTS = (
    "No tool is needed for this; I can answer directly.",
    "None of the tools fits this question, so I'll answer it myself.",
    "I can answer this without calling a tool.",
    "This needs no tool call; I know the answer.",
)


def _dumps(obj) -> str:
  return json.dumps(obj, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Split:
  """Which tools (and knowledge questions) each split may use.

  Attributes:
    train: tool names of the train and valid splits.
    test: held-out tool names; disjoint from `train`.
    facts_test: indices into `FACTS` reserved for the test split's `none` samples.
  """
  train: tuple[str, ...]
  test: tuple[str, ...]
  facts_test: frozenset

  def tools(self, split: str) -> tuple[str, ...]:
    return self.test if split == "test" else self.train

  def chains(self, split: str) -> list:
    names = set(self.tools(split))
    return [c for c in CHAINS if c.first in names and c.second in names]


def split_tools(seed: int = 0) -> Split:
  """Holds out ~`HOLDOUT_FRACTION` of the tools for the test split, chosen from `seed`.

  Draws until the held-out tools span at least 8 domains, no domain is held out whole, and both
  sides keep two-call chains (at least 3 in test, 6 in train), so every split has every kind.
  """
  rng = random.Random(f"tooldata-split:{seed}")
  names = sorted(TOOLS)
  n_test = round(HOLDOUT_FRACTION * len(names))
  by_domain = {}
  for n in names:
    by_domain.setdefault(TOOLS[n].domain, set()).add(n)
  for _ in range(10000):
    test = set(rng.sample(names, n_test))
    train = set(names) - test
    domains = {TOOLS[n].domain for n in test}
    whole = any(members <= test for members in by_domain.values())
    n_chains = [sum(c.first in side and c.second in side for c in CHAINS) for side in (test, train)]
    if len(domains) >= 8 and not whole and n_chains[0] >= 3 and n_chains[1] >= 6:
      break
  else:  # pragma: no cover - the constraints are loose enough to be met in a few draws
    raise errors.ConfigError(f"no tool split satisfies the constraints for seed {seed}")
  facts = list(range(len(FACTS)))
  rng.shuffle(facts)
  return Split(train=tuple(sorted(train)), test=tuple(sorted(test)),
               facts_test=frozenset(facts[:round(HOLDOUT_FRACTION * len(facts))]))


def check_distractors(distractors) -> tuple[int, int]:
  """`distractors` as a `(min, max)` pair of ints with `0 <= min <= max`.

  Raises:
    ConfigError: anything else.
  """
  try:
    lo, hi = distractors
  except (TypeError, ValueError):
    lo = hi = None
  if not (isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool)
          and not isinstance(hi, bool) and 0 <= lo <= hi):
    raise errors.ConfigError(f"distractors must be (min, max) with 0 <= min <= max, got "
                             f"{distractors!r}")
  return lo, hi


def _offer(rng: random.Random, needed: list[str], pool, distractors: tuple[int, int],
           exclude_domains=()) -> list[dict]:
  """The needed tools plus `distractors` (min, max) others from `pool`, shuffled, as OpenAI
  tool specs."""
  candidates = [t for t in pool if t not in needed and TOOLS[t].domain not in exclude_domains]
  names = needed + rng.sample(candidates, min(rng.randint(*distractors), len(candidates)))
  rng.shuffle(names)
  return [TOOLS[n].spec() for n in names]


def _capitalized(text: str) -> str:
  return text[:1].upper() + text[1:]


def _call(name: str, args: dict) -> dict:
  return {"role": "tool_call", "content": _dumps({"name": name, "arguments": args})}


def _thought(rng: random.Random, tool, args: dict, prev: str | None = None) -> str:
  intent = fill(tool.intent, tool.slots(args))
  if prev is None:
    return rng.choice(_THOUGHTS).format(intent=intent, name=tool.name)
  return rng.choice(_BRIDGES).format(prev=prev, intent=intent, name=tool.name)


def _single(rng: random.Random, split: Split, name: str, distractors: tuple[int, int]) -> dict:
  tool = TOOLS[rng.choice(split.tools(name))]
  args = tool.sample(rng)
  result = tool.run(args)
  messages = [{"role": "user", "content": fill(rng.choice(tool.questions), tool.slots(args))}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant", "content": _thought(rng, tool, args)})
  messages += [_call(tool.name, args), {"role": "tool_response", "content": _dumps(result)}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant",
                     "content": rng.choice(_FINAL_THOUGHTS).format(name=tool.name)})
  messages.append({"role": "assistant",
                   "content": _capitalized(fill(rng.choice(tool.answers),
                                                tool.answer_slots(args, result)))})
  return {"messages": messages,
          "tools": _offer(rng, [tool.name], split.tools(name), distractors), "kind": "single"}


def _multi(rng: random.Random, split: Split, name: str, distractors: tuple[int, int]) -> dict:
  chain = rng.choice(split.chains(name))
  first, second = TOOLS[chain.first], TOOLS[chain.second]
  if chain.sample is not None:
    a_args = chain.sample(rng)
  else:  # the question names only what the chain needs: drop the first tool's optional args
    a_args = {k: v for k, v in first.sample(rng).items() if k in first.required}
  a_result = first.run(a_args)
  b_args = chain.link(a_args, a_result, rng)
  b_result = second.run(b_args)
  a_slots, b_slots = first.answer_slots(a_args, a_result), second.answer_slots(b_args, b_result)
  question = fill(rng.choice(chain.questions), {**second.slots(b_args), **first.slots(a_args)})
  messages = [{"role": "user", "content": question}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant", "content": _thought(rng, first, a_args)})
  messages += [_call(first.name, a_args), {"role": "tool_response", "content": _dumps(a_result)}]
  if rng.random() < THOUGHT_PROB:
    prev = fill(chain.bridge, a_slots)
    messages.append({"role": "assistant", "content": _thought(rng, second, b_args, prev)})
  messages += [_call(second.name, b_args), {"role": "tool_response", "content": _dumps(b_result)}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant", "content": rng.choice(_FINAL_THOUGHTS_MULTI).format(
        first=first.name, second=second.name)})
  messages.append({"role": "assistant",
                   "content": _capitalized(fill(rng.choice(chain.answers),
                                                {"a": a_slots, "b": b_slots}))})
  return {"messages": messages, "tools": _offer(rng, [first.name, second.name],
                                                split.tools(name), distractors), "kind": "multi"}


def _none(rng: random.Random, split: Split, name: str, distractors: tuple[int, int]) -> dict:
  facts = [i for i in range(len(FACTS)) if (i in split.facts_test) == (name == "test")]
  if rng.random() < 0.3:
    question, answer, exclude = arithmetic(rng)
  else:
    questions, answers, exclude = FACTS[rng.choice(facts)]
    question, answer = rng.choice(questions), rng.choice(answers)
  # At least one tool: the point of the kind is answering directly although tools are offered.
  tools = _offer(rng, [], split.tools(name), tuple(max(d, 1) for d in distractors), exclude)
  if "{tools}" in answer:  # "what can you do?" answers name the offered tools
    answer = answer.format(tools=join([t["function"]["name"] for t in tools]))
  messages = [{"role": "user", "content": question}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant", "content": rng.choice(_NO_TOOL_THOUGHTS)})
  messages.append({"role": "assistant", "content": answer})
  return {"messages": messages, "tools": tools, "kind": "none"}


_MAKERS: dict[str, Callable] = {"single": _single, "multi": _multi, "none": _none}
VALID_SHARE = 0.1  # of user questions (by hash) that only the valid split may ask
_MAX_TRIES = 1000


def question_split(question: str) -> str:
  """`valid` or `train`: which of the two training-tool splits may ask `question`.

  Decided by a hash of the text, so train and valid never share a question whatever their sizes.
  """
  bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") / 2 ** 32
  return "valid" if bucket < VALID_SHARE else "train"


def generate(n: int, split: str = "train", seed: int = 0,
             distractors: tuple[int, int] = DISTRACTORS) -> list[dict]:
  """`n` rows of one split, the same for the same `(n, split, seed, distractors)`.

  Rows within a call are distinct; `train` and `valid` never share a user question
  (`question_split`), and `test` uses only held-out tools (and held-out knowledge questions).

  Args:
    n: number of rows.
    split: `train`, `valid` (training tools, other questions) or `test` (held-out tools only).
    seed: chooses the held-out tools and every sample.
    distractors: (min, max) tools offered besides the ones a row calls (a `none` row offers
      only these, at least one); fewer make shorter rows.

  Returns:
    Rows `{"messages": [...], "tools": [OpenAI tool specs], "kind": "single"|"multi"|"none"}`,
    kinds in the proportions of `MIX` (exact up to rounding), shuffled.

  Raises:
    ConfigError: an unknown split, a negative `n`, or `distractors` not `0 <= min <= max`.
  """
  if split not in SPLITS:
    raise errors.ConfigError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
  if n < 0:
    raise errors.ConfigError(f"number of rows must be >= 0, got {n}")
  distractors = check_distractors(distractors)
  tools = split_tools(seed)
  counts = [round(n * p) for _, p in MIX[:-1]]
  kinds = [k for (k, _), c in zip(MIX, counts + [n - sum(counts)]) for _ in range(c)]
  rng = random.Random(f"tooldata:{split}:{seed}")
  rng.shuffle(kinds)
  rows, seen = [], set()
  for kind in kinds:
    for tries in range(_MAX_TRIES):
      row = _MAKERS[kind](rng, tools, split, distractors)
      if split != "test" and question_split(row["messages"][0]["content"]) != split:
        continue
      key = _dumps([row["messages"], row["tools"]])
      if key not in seen or tries > 50:  # a repeat only when the kind has run out of rows
        break
    else:  # pragma: no cover - every kind has plenty of rows in each split
      raise errors.ConfigError(f"cannot draw a {kind} row for split {split}")
    seen.add(key)
    rows.append(row)
  return rows


def _write_atomic(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def write_splits(output_dir: str | pathlib.Path, n_train: int, n_valid: int, n_test: int,
                 seed: int = 0, overwrite: bool = False,
                 distractors: tuple[int, int] = DISTRACTORS) -> dict:
  """Writes `train.jsonl`, `valid.jsonl`, `test.jsonl` and `tools.json` to `output_dir`.

  Each file is written to a temporary name and renamed, so a reader never sees half a file.
  `tools.json` records the seed, the distractor range, each split's tool names, the held-out
  domains, the two-call chains each split uses, and every tool's spec. `distractors` applies to
  all three splits (see `generate`).

  Returns:
    A summary: rows per split, tools per split, the directory.

  Raises:
    ConfigError: `distractors` is not `0 <= min <= max`.
    SwiftJaxError: `output_dir` is a non-empty directory and `overwrite` is false, or it cannot
      be written.
  """
  distractors = check_distractors(distractors)
  out = pathlib.Path(output_dir)
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise errors.SwiftJaxError(f"output directory {out} is not empty; pass --overwrite to "
                               "replace its files or choose another --output_dir")
  split = split_tools(seed)
  try:
    out.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
      rows = generate(n, name, seed, distractors)
      _write_atomic(out / f"{name}.jsonl", "".join(_dumps(r) + "\n" for r in rows))
    meta = {
        "seed": seed,
        "distractors": list(distractors),
        "train": list(split.train), "test": list(split.test),
        "test_domains": sorted({TOOLS[t].domain for t in split.test}),
        "chains": {s: [[c.first, c.second] for c in split.chains(s)] for s in ("train", "test")},
        "domains": {n: t.domain for n, t in sorted(TOOLS.items())},
        "specs": [TOOLS[n].spec() for n in sorted(TOOLS)],
    }
    _write_atomic(out / "tools.json", json.dumps(meta, indent=1, ensure_ascii=False))
  except OSError as e:
    raise errors.SwiftJaxError(f"cannot write to {out}: {e.strerror or e}") from None
  return {"output_dir": str(out), "train": n_train, "valid": n_valid, "test": n_test,
          "train_tools": len(split.train), "test_tools": len(split.test),
          "test_domains": meta["test_domains"], "distractors": list(distractors)}
