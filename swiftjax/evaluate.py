"""Evaluate a model on one dataset named `kind:path`: the library side of `launch.eval`.

  arc_easy, arc_challenge, openbookqa, social_iqa, piqa, boolq, winogrande
        multiple choice by log-likelihood, LLM-Adapters layout (`swiftjax.eval.readers`)
  mmlu  multiple choice by log-likelihood, QLoRA's zero-shot MMLU file
  gsm8k generation + exact match of the final number
  ppl   sliding-window perplexity of a .txt / JSON / JSONL file
  toolbench
        ToolBench-Static agent metrics (Plan.EM, Act.EM, HalluRate, F1, Rouge-L) of generated
        turns, or of a predictions file from any system (`predictions=`)

The pieces live in `swiftjax.eval`; this module only dispatches. Example:

  model = infer.load()                       # the embedded SmolLM2-135M-Instruct
  result = evaluate.evaluate(model, "arc_easy:../shared/data/eval_llm_adapters/dataset/ARC-Easy",
                             limit=100)
  result.metrics["acc"], result.metrics["acc_ci95"]
"""

import dataclasses
import pathlib
from typing import Any, Callable

from swiftjax import errors
from swiftjax import infer
from swiftjax.eval import gsm8k
from swiftjax.eval import multiple_choice
from swiftjax.eval import perplexity
from swiftjax.eval import readers
from swiftjax.eval import toolbench

MULTIPLE_CHOICE = tuple(readers.LLM_ADAPTERS_TASKS) + ("mmlu",)
# Every kind `evaluate` accepts.
KINDS = MULTIPLE_CHOICE + ("gsm8k", "ppl", "toolbench")


@dataclasses.dataclass
class Result:
  """`metrics`: a flat JSON-able dict (includes `task`, `path`); `records`: one per item."""
  metrics: dict[str, Any]
  records: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Options:
  """Knobs shared by the kinds; each kind uses the ones that apply.

  Attributes:
    limit: evaluate only the first `limit` items (None: all).
    batch_size: rows (multiple choice, perplexity windows) or prompts (generation) per step.
    max_new_tokens: generation budget (gsm8k, toolbench).
    max_length: longest scored row (multiple choice; default the model's context) or the
      perplexity window (default 1024).
    stride: perplexity window step (default `max_length // 2`).
    agent_template: how toolbench prompts render tools and calls ("react", "toolbench",
      "hermes"; see `swiftjax.agent.templates`).
  """
  limit: int | None = None
  batch_size: int = 8
  max_new_tokens: int = 256
  max_length: int | None = None
  stride: int | None = None
  agent_template: str = "react"


def parse_spec(spec: str) -> tuple[str, pathlib.Path]:
  """Splits `kind:path` and checks the kind and that the path exists.

  Raises:
    ConfigError: no `:`, or an unknown kind.
    SwiftJaxError: the path does not exist.
  """
  kind, sep, path = spec.partition(":")
  if not sep or not path:
    raise errors.ConfigError(f"--eval_dataset={spec!r}: expected KIND:PATH with KIND one of "
                             f"{', '.join(KINDS)}")
  if kind not in KINDS:
    raise errors.ConfigError(f"unknown evaluation kind {kind!r}; known: {', '.join(KINDS)}")
  return kind, readers.resolve(path)


def evaluate(model: infer.LoadedModel | None, spec: str, options: Options = Options(), *,
             progress: Callable[[int, int], None] | None = None,
             predictions: str | pathlib.Path | None = None) -> Result:
  """Evaluates `model` on the dataset `spec` (`kind:path`).

  Args:
    model: from `swiftjax.infer.load` (None with `predictions`).
    spec: `kind:path`, kind one of `KINDS`; a directory path means its `test.json(l)`.
    options: limits and batch sizes.
    progress: `progress(done, total)` (rows, windows or prompts).
    predictions: toolbench only: score this JSONL file (`{"response": ...}` per reference, in
      order) instead of generating.

  Returns:
    The metrics and the per-item records.

  Raises:
    SwiftJaxError: bad spec, missing file, malformed row (naming `file:line`), bad option.
  """
  kind, path = parse_spec(spec)
  if options.limit is not None and options.limit < 1:
    raise errors.ConfigError(f"limit must be >= 1, got {options.limit}")
  if predictions is not None and kind != "toolbench":
    raise errors.ConfigError(f"predictions are scored for toolbench only, not {kind!r}")
  if kind in MULTIPLE_CHOICE:
    items = (readers.read_mmlu(path, options.limit) if kind == "mmlu"
             else readers.read_llm_adapters(path, kind, options.limit))
    metrics, records = multiple_choice.evaluate(
        model, items, batch_size=options.batch_size, max_length=options.max_length,
        progress=progress)
  elif kind == "gsm8k":
    items = readers.read_gsm8k(path, options.limit)
    metrics, records = gsm8k.evaluate(model, items, max_new_tokens=options.max_new_tokens,
                                      batch_size=options.batch_size, progress=progress)
  elif kind == "toolbench":
    limit = options.limit
    refs = toolbench.read_references(path, None if predictions is not None else limit)
    preds = None
    if predictions is not None:
      # Checked against the whole file, so a predictions file for other references fails.
      preds = toolbench.read_predictions(predictions, expected=len(refs))
      refs, preds = refs[:limit], preds[:limit]
    metrics, records = toolbench.evaluate(
        model, refs, predictions=preds, template=options.agent_template,
        max_new_tokens=options.max_new_tokens, batch_size=options.batch_size,
        progress=progress)
  else:  # ppl
    docs = readers.read_documents(path, options.limit)
    metrics, records = perplexity.perplexity(
        model, docs, max_length=options.max_length or 1024, stride=options.stride,
        batch_size=options.batch_size, progress=progress)
  return Result({"task": kind, "path": str(path), **metrics}, records)
