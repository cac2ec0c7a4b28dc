"""Readers for the on-disk layouts of the evaluation sets, read in place.

  LLM-Adapters (`eval_llm_adapters/dataset/<set>/test.json`, a JSON list): rows
    `{"instruction", "input", "output", "answer"}`, the choices written inside the instruction:
      "Please choose the correct answer to the question: <q>\\n\\nAnswer1: <a> Answer2: <b> ...
       \\n\\nAnswer format: answer1/answer2/..."
    with `Solution<k>:` (PIQA), `Option<k>:` (WinoGrande, whose sentence holds a `_` blank) or
    no choices at all (BoolQ: "... with true or false, question: <q>", answer true/false).
  MMLU (`mmlu_qlora/zero_shot_mmlu_val.json`, JSON lines): `{"subject", "input", "output"}`, the
    input a full zero-shot prompt ending in "Answer:" with lettered choices, the output a letter.
  GSM8K (`gsm8k/test.jsonl`): `{"question", "answer"}`, the final answer after `####`.
  Perplexity: a `.txt` file (one document), or JSON/JSONL rows with `text`, or with a
    conversation in any layout `swiftjax.data.formats` reads (rendered by the chat template).

Multiple-choice prompts follow lm-evaluation-harness: "Question: <q>\\nAnswer:" + " <choice>"
(ARC, OpenBookQA, Social IQa, PIQA; BoolQ's choices are " yes"/" no"), WinoGrande by partial
scoring (the context is the sentence up to the blank with the option filled in, the scored
continuation the rest of the sentence), MMLU its own prompt + " <letter>".

A malformed row raises `RowError` naming `file:line` (for a JSON list, the line its element
starts on).
"""

import dataclasses
import json
import pathlib
import re
from typing import Any, Iterator

from swiftjax import errors
from swiftjax.data import formats
from swiftjax.eval import answers

RowError = formats.RowError

# LLM-Adapters sets and the prompt style each one uses.
LLM_ADAPTERS_TASKS = {"arc_easy": "qa", "arc_challenge": "qa", "openbookqa": "qa",
                      "social_iqa": "qa", "piqa": "qa", "boolq": "boolq",
                      "winogrande": "winogrande"}
_PREAMBLE = re.compile(r"^Please [^:]*: ")
_MARKER = re.compile(r"(?<=\s)(Answer|Solution|Option)(\d+): ")
_MMLU_CHOICE = re.compile(r"\n([A-Z])\. ")
_WS = re.compile(r"\s*")


@dataclasses.dataclass(frozen=True)
class MCItem:
  """One multiple-choice question: choice k is `continuations[k]` scored after `contexts[k]`."""
  where: str
  contexts: tuple[str, ...]
  continuations: tuple[str, ...]
  label: int
  group: str | None = None  # e.g. the MMLU subject


@dataclasses.dataclass(frozen=True)
class GenItem:
  """One question answered by generation; `reference` is the canonical final answer."""
  where: str
  question: str
  reference: str


@dataclasses.dataclass(frozen=True)
class Document:
  """A perplexity document: plain `text`, or `messages` for the chat template."""
  where: str
  text: str | None = None
  messages: list[dict[str, Any]] | None = None


def resolve(path: str | pathlib.Path) -> pathlib.Path:
  """A data file; a directory stands for its `test.json` / `test.jsonl`.

  Raises:
    SwiftJaxError: nothing to read there.
  """
  p = pathlib.Path(path)
  if p.is_dir():
    for name in ("test.json", "test.jsonl"):
      if (p / name).is_file():
        return p / name
    raise errors.SwiftJaxError(f"evaluation directory {p} has no test.json or test.jsonl")
  if not p.is_file():
    raise errors.SwiftJaxError(f"evaluation file {p} does not exist")
  return p


def iter_records(path: str | pathlib.Path) -> Iterator[tuple[str, Any]]:
  """Yields `(file:line, value)` for each element of a JSON list or each line of a JSONL file.

  Raises:
    RowError: invalid JSON, naming the line.
  """
  p = resolve(path)
  text = p.read_text(encoding="utf-8")
  i = _WS.match(text).end()
  if text[i:i + 1] != "[":
    for n, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          yield f"{p}:{n}", json.loads(line)
        except json.JSONDecodeError as e:
          raise RowError(f"{p}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
    return
  # A JSON list: decode element by element to know the line each one starts on.
  decoder = json.JSONDecoder()
  line, counted = 1, 0
  i = _WS.match(text, i + 1).end()
  if text[i:i + 1] == "]":
    return
  while True:
    line += text.count("\n", counted, i)
    counted = i
    try:
      value, i = decoder.raw_decode(text, i)
    except json.JSONDecodeError as e:
      raise RowError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
    yield f"{p}:{line}", value
    i = _WS.match(text, i).end()
    if text[i:i + 1] == "]":
      return
    if text[i:i + 1] != ",":
      raise RowError(f"{p}:{line + text.count(chr(10), counted, i)}: invalid JSON: expected "
                     "',' or ']' after a list element")
    i = _WS.match(text, i + 1).end()


def parse_rows(path, parse, limit: int | None = None) -> list:
  """`parse(where, row)` for each JSON-object row of `path` (at most `limit`).

  Raises:
    RowError: a row that is not an object or that `parse` rejects (KeyError, ValueError,
      TypeError), naming `file:line`; or a file without rows.
  """
  out = []
  for where, row in iter_records(path):
    if limit is not None and len(out) >= limit:
      break
    try:
      if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
      out.append(parse(where, row))
    except KeyError as e:
      raise RowError(f"{where}: missing key {e}") from None
    except (ValueError, TypeError) as e:
      raise RowError(f"{where}: {e}") from None
  if not out:
    raise RowError(f"{resolve(path)}: no rows")
  return out


def _parse_instruction(instruction: str) -> tuple[str, list[str], list[str]]:
  """`(question, choice texts, answer labels)` of an LLM-Adapters instruction."""
  m = _PREAMBLE.match(instruction)
  if not m or "Answer format:" not in instruction:
    raise ValueError("instruction is not in the LLM-Adapters layout ('Please ...: <question> "
                     "... Answer format: ...')")
  body, fmt = instruction[m.end():].rsplit("Answer format:", 1)
  labels = [l.strip().lower() for l in fmt.strip().split("/")]
  markers = list(_MARKER.finditer(body))
  if [int(k.group(2)) for k in markers] != list(range(1, len(markers) + 1)):
    raise ValueError("choices are not numbered 1, 2, ... in order")
  if markers and len(markers) != len(labels):
    raise ValueError(f"{len(markers)} choices but answer format {'/'.join(labels)}")
  bounds = [k.start() for k in markers[1:]] + [len(body)]
  choices = [body[k.end():b].strip() for k, b in zip(markers, bounds)]
  if any(not c for c in choices):
    raise ValueError("empty choice")
  question = body[:markers[0].start()] if markers else body
  return question.strip(), choices, labels


def read_llm_adapters(path: str | pathlib.Path, task: str,
                      limit: int | None = None) -> list[MCItem]:
  """Reads an LLM-Adapters multiple-choice set as `MCItem`s prompted for `task`.

  Args:
    path: the `test.json` file or its directory.
    task: a key of `LLM_ADAPTERS_TASKS`.
    limit: read at most this many questions (the first ones).
  """
  style = LLM_ADAPTERS_TASKS[task]

  def parse(where, row):
    question, choices, labels = _parse_instruction(row["instruction"])
    answer = str(row["answer"]).strip().lower()
    if answer not in labels:
      raise ValueError(f"answer {row['answer']!r} is not one of {labels}")
    label = labels.index(answer)
    if style == "boolq":
      if choices or labels != ["true", "false"]:
        raise ValueError("a BoolQ row has no choices and answer format true/false")
      cont = (" yes", " no")
      return MCItem(where, (f"Question: {question}\nAnswer:",) * 2, cont, label)
    if not choices:
      raise ValueError("no choices (Answer1:/Solution1:/Option1: ...) in the instruction")
    if style == "winogrande":
      if question.count("_") != 1:
        raise ValueError("a WinoGrande sentence needs exactly one '_' blank")
      before, after = question.split("_")
      contexts = tuple(before + c for c in choices)
      return MCItem(where, contexts, (" " + after.strip(),) * len(choices), label)
    context = f"Question: {question}\nAnswer:"
    return MCItem(where, (context,) * len(choices), tuple(" " + c for c in choices), label)

  return parse_rows(path, parse, limit)


def read_mmlu(path: str | pathlib.Path, limit: int | None = None) -> list[MCItem]:
  """Reads QLoRA's zero-shot MMLU file: the prompt as given, choices " A", " B", ..."""

  def parse(where, row):
    prompt, answer = row["input"], str(row["output"]).strip()
    # The choices are the last lettered block ("I. ..." lines of a question come before it).
    letters = _MMLU_CHOICE.findall(prompt[max(prompt.rfind("\nA. "), 0):])
    if len(letters) < 2 or letters != [chr(ord("A") + k) for k in range(len(letters))]:
      raise ValueError("input has no lettered choices '\\nA. ...', '\\nB. ...'")
    if answer not in letters:
      raise ValueError(f"output {answer!r} is not one of {letters}")
    return MCItem(where, (prompt,) * len(letters), tuple(" " + l for l in letters),
                  letters.index(answer), group=row.get("subject"))

  return parse_rows(path, parse, limit)


def read_gsm8k(path: str | pathlib.Path, limit: int | None = None) -> list[GenItem]:
  """Reads GSM8K JSONL; the reference is the number after the last `####`."""
  def parse(where, row):
    question, answer = str(row["question"]), str(row["answer"])
    if "####" not in answer:
      raise ValueError("answer has no '#### <number>'")
    reference = answers.canonical_number(answer.rsplit("####", 1)[1])
    if reference is None:
      raise ValueError(f"no number after '####' in {answer.rsplit('####', 1)[1].strip()!r}")
    return GenItem(where, question, reference)

  return parse_rows(path, parse, limit)


def read_documents(path: str | pathlib.Path, limit: int | None = None) -> list[Document]:
  """Reads perplexity documents: a `.txt` file is one document; JSON/JSONL rows give `text`,
  or a conversation (`messages`, alpaca, sharegpt, ...) to render with the chat template."""
  p = resolve(path)
  if p.suffix == ".txt":
    text = p.read_text(encoding="utf-8")
    if not text.strip():
      raise RowError(f"{p}: empty text file")
    return [Document(f"{p}:1", text=text)]

  def parse(where, row):
    if "text" in row:
      if not isinstance(row["text"], str) or not row["text"]:
        raise ValueError("'text' must be a non-empty string")
      return Document(where, text=row["text"])
    messages = formats.normalize(row)["messages"]
    return Document(where, messages=[{"role": m["role"], "content": m["content"]}
                                     for m in messages])

  return parse_rows(path, parse, limit)
