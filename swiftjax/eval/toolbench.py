"""ToolBench-Static metrics: does the model plan, call and answer like the reference turn?

A reference is one row in ms-swift's `messages` form (any layout `swiftjax.data.formats`
reads) whose last assistant-side turn (an assistant message in react form, or trailing
`tool_call`s with the assistant thought before them) is what the model should produce next,
with the row's `tools`. `split_turns` expands a whole conversation into one such row per turn.
A prediction is the model's text for that turn, parsed by `swiftjax.agent.actions.parse`.

Per turn (EvalScope's ToolBench-Static, after the α-UMi paper's evaluation):
  plan      "call" | "finish" | "give up" for reference and prediction.
  Plan.EM   the plans are equal; over every scored turn.
  Act.EM    the predicted action name equals the reference's; over turns whose reference
            plan is "call".
  F1        argument F1 on those turns: 0 when the action names differ; else per reference
            key, 1 for an equal value and 0.5 for a different one (keys the prediction lacks
            count 0), recall over the reference's keys, precision over the prediction's,
            F1 = 2PR / (P + R). A reference with no arguments ("easy") scores 1 when the
            prediction also has none, else 0; one with arguments is "hard". Arguments that are
            not a JSON object score 0; a turn whose reference arguments are not JSON is left
            out when the names match (as EvalScope does).
  HalluRate the predicted action names a tool that is not in the sample's tool list; `Finish`
            (ToolBench's built-in finishing function, always in its tool lists) never counts,
            and neither does a turn that calls nothing. Over every scored turn.
  Rouge-L   ROUGE-L F-measure of the final answers over turns whose reference plan is
            "finish": whitespace tokens, case kept, longest common subsequence over the whole
            text. This is EvalScope's current definition (`rouge-score`'s RougeScorer
            `rougeL` with a `str.split` tokenizer); the older ms-swift/α-UMi script used the
            `rouge` package, which tokenizes differently. An answer that is missing or only
            '', '.' or ',' becomes "None" (EvalScope's rule).
  A reference call to `invalid_hallucination_function_name` or to a tool missing from its
  own tool list is not scored (counted in `skipped`).

Aggregation. The headline keys average each metric over the turns it applies to (the
corpus-level means of ms-swift's and α-UMi's scripts). EvalScope instead scores every sample
on its own and averages each key over all samples, so a turn a metric does not apply to adds
a 0 (its Act.EM is correct calls / all turns); those numbers are reported too, under
`evalscope_mean`. Two more choices differ from the EvalScope code and are deliberate: the
skip rule does not depend on the prediction (EvalScope skips a bad reference only when the
prediction names an action, so two systems could be scored on different turns), and the
easy/hard split is by the reference alone (EvalScope adds a wrong-action 0 to both lists).
"""

import dataclasses
import json
import pathlib
from typing import Any, Callable, Sequence

from swiftjax import errors
from swiftjax import generate
from swiftjax import infer
from swiftjax.agent import actions
from swiftjax.agent import templates
from swiftjax.data import formats
from swiftjax.eval import readers

RowError = formats.RowError
INVALID_NAME = "invalid_hallucination_function_name"
METRIC_KEYS = ("Plan.EM", "Act.EM", "HalluRate", "F1", "Rouge-L")
# Where generation stops: the template's turn ends where the tool's answer would begin.
STOP = {"react": ("Observation:",), "toolbench": ("Observation:",),
        "hermes": ("<tool_response>",)}


@dataclasses.dataclass(frozen=True)
class Reference:
  """One scored turn.

  Attributes:
    where: `file:line` of the row.
    prompt: the row's messages before the reference turn.
    tools: the row's tool specs (as given), or None.
    tool_names: the names in `tools`.
    action: the reference turn, parsed.
  """
  where: str
  prompt: list[dict[str, Any]]
  tools: list[Any] | None
  tool_names: tuple[str, ...]
  action: actions.Action


def tool_names(tools: Any) -> tuple[str, ...]:
  """Names in a tool list: OpenAI `{"type": "function", "function": {...}}` specs or bare
  `{"name", ...}` ones (a JSON string holding the list is accepted).

  Raises:
    ValueError: not a list of tool specs with string names.
  """
  if isinstance(tools, str):
    tools = json.loads(tools) if tools.strip() else None
  if tools is None:
    return ()
  if not isinstance(tools, list):
    raise ValueError(f"'tools' must be a list of tool specs, got {type(tools).__name__}")
  names = []
  for i, t in enumerate(tools):
    spec = t.get("function", t) if isinstance(t, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str):
      raise ValueError(f"tool {i} has no string 'name' (nor 'function.name')")
    names.append(name)
  return tuple(names)


def split_turns(row: dict[str, Any]) -> list[dict[str, Any]]:
  """One reference row per assistant-side turn of a conversation: the messages up to and
  including that turn, with the row's tools.

  A turn is a run of assistant messages (a thought, then the answer), or a run of `tool_call`
  messages with the assistant thought right before it (`actions.turn_start`).

  Raises:
    ValueError: a malformed row.
  """
  messages = formats.messages_of(row)
  tools = formats.tools_of(row)
  out = []
  for i, m in enumerate(messages):
    nxt = messages[i + 1]["role"] if i + 1 < len(messages) else None
    if ((m["role"] == "assistant" and nxt not in ("assistant", "tool_call"))
        or (m["role"] == "tool_call" and nxt != "tool_call")):
      out.append({"messages": messages[:i + 1], "tools": tools})
  return out


def reference_of(where: str, row: Any) -> Reference:
  """A `Reference` from one row; raises ValueError/KeyError/TypeError on a malformed one."""
  messages = formats.messages_of(row)
  tools = formats.tools_of(row)
  start = actions.turn_start(messages)
  return Reference(where, messages[:start], tools, tool_names(tools),
                   actions.reference_action(messages))


def read_references(path: str | pathlib.Path, limit: int | None = None) -> list[Reference]:
  """Reads reference rows (JSONL, or a JSON list) in place; `limit` keeps the first ones.

  Raises:
    SwiftJaxError: the file does not exist.
    RowError: a malformed row, naming `file:line`; or no rows.
  """
  return readers.parse_rows(path, reference_of, limit)


def read_predictions(path: str | pathlib.Path, expected: int | None = None) -> list[str]:
  """Reads `{"response": "..."}` rows (JSONL, or a JSON list), one per reference, in order.

  Args:
    path: the predictions file.
    expected: the number of references; another count is an error.

  Raises:
    RowError: a malformed row, naming `file:line`, or a count that is not `expected`.
  """
  def parse(where, row):
    del where
    if not isinstance(row.get("response"), str):
      raise ValueError("expected {\"response\": <string>}")
    return row["response"]

  out = readers.parse_rows(path, parse)
  if expected is not None and len(out) != expected:
    raise RowError(f"{readers.resolve(path)}: {len(out)} predictions for {expected} "
                   "references (one {\"response\": ...} line per reference, in order)")
  return out


def _json(text: str | None) -> Any:
  return json.loads("{}" if text is None else text)


def argument_f1(reference: str | None, prediction: str | None) -> tuple[float | None, str]:
  """F1 of predicted against reference arguments (raw JSON texts; None means `{}`), for a turn
  whose action names match.

  Returns:
    `(f1, kind)`: kind "easy" (the reference has no arguments) or "hard"; f1 None when the
    reference arguments are not JSON (the turn is not scored).
  """
  try:
    ref = _json(reference)
  except json.JSONDecodeError:
    return None, "hard"
  kind = "easy" if ref == {} else "hard"
  try:
    cand = _json(prediction)
  except json.JSONDecodeError:
    return 0.0, kind
  if ref == {}:
    return float(cand == {}), kind
  if not isinstance(ref, dict) or not isinstance(cand, dict) or not cand:
    return 0.0, kind
  full = sum(1 for k, v in ref.items() if k in cand and cand[k] == v)
  half = sum(1 for k, v in ref.items() if k in cand and cand[k] != v)
  matched = full + 0.5 * half
  recall, precision = matched / len(ref), matched / len(cand)
  if recall + precision == 0:
    return 0.0, kind
  return 2 * recall * precision / (recall + precision), kind


def rouge_l(prediction: str, reference: str) -> float:
  """ROUGE-L F-measure over whitespace tokens (rouge-score's `rougeL` with `str.split`)."""
  p, r = prediction.split(), reference.split()
  if not p or not r:
    return 0.0
  # Longest common subsequence, one row of the DP table at a time.
  prev = [0] * (len(r) + 1)
  for tp in p:
    cur = [0]
    for j, tr in enumerate(r):
      cur.append(prev[j] + 1 if tp == tr else max(prev[j + 1], cur[j]))
    prev = cur
  lcs = prev[-1]
  if lcs == 0:
    return 0.0
  precision, recall = lcs / len(p), lcs / len(r)
  return 2 * precision * recall / (precision + recall)


def _answer(text: str | None) -> str:
  """EvalScope: a missing or empty ('', '.', ',') answer is the string "None"."""
  return "None" if text is None or text.strip() in ("", ".", ",") else text


def judge(ref: Reference, prediction: str, template: str | None = None) -> dict[str, Any]:
  """Scores one turn; the record says which metrics apply (None where one does not)."""
  pred = actions.parse(prediction, template)
  want = ref.action
  rec: dict[str, Any] = {
      "where": ref.where, "ref_plan": want.plan, "pred_plan": pred.plan,
      "ref_action": want.name, "pred_action": pred.name, "ref_arguments": want.arguments,
      "pred_arguments": pred.arguments, "skipped": None, "plan_em": None, "act_em": None,
      "f1": None, "f1_kind": None, "hallucinated": None, "rouge_l": None,
      "prediction": prediction}
  if want.plan == "call" and (want.name == INVALID_NAME or want.name not in ref.tool_names):
    rec["skipped"] = f"reference action {want.name!r} is not in the sample's tools"
    return rec
  rec["plan_em"] = pred.plan == want.plan
  rec["hallucinated"] = (pred.name is not None and pred.name != actions.FINISH
                         and pred.name not in ref.tool_names)
  if want.plan == "call":
    rec["act_em"] = pred.name == want.name
    if rec["act_em"]:
      rec["f1"], rec["f1_kind"] = argument_f1(want.arguments, pred.arguments)
    else:
      rec["f1"] = 0.0
      rec["f1_kind"] = argument_f1(want.arguments, None)[1]
  elif want.plan == "finish":
    answer = pred.final_answer if pred.plan == "finish" else None
    rec["rouge_l"] = rouge_l(_answer(answer), _answer(want.final_answer))
  return rec


def _mean(values: Sequence[float]) -> float:
  return float(sum(values) / len(values)) if values else 0.0


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """The metrics of per-turn records from `judge` (see the module docstring)."""
  kept = [r for r in records if r["skipped"] is None]
  n = len(kept)
  calls = [r for r in kept if r["ref_plan"] == "call"]
  finishes = [r for r in kept if r["ref_plan"] == "finish"]
  f1 = [r["f1"] for r in calls if r["f1"] is not None]
  easy = [r["f1"] for r in calls if r["f1"] is not None and r["f1_kind"] == "easy"]
  hard = [r["f1"] for r in calls if r["f1"] is not None and r["f1_kind"] == "hard"]
  plans = {}
  for r in kept:
    plans[r["pred_plan"]] = plans.get(r["pred_plan"], 0) + 1
  hallucinated = sum(r["hallucinated"] for r in kept)
  return {
      "Plan.EM": _mean([r["plan_em"] for r in kept]),
      "Act.EM": _mean([r["act_em"] for r in calls]),
      "HalluRate": hallucinated / n if n else 0.0,
      "F1": _mean(f1),
      "Rouge-L": _mean([r["rouge_l"] for r in finishes]),
      "easy_F1": _mean(easy), "hard_F1": _mean(hard),
      "n": n, "skipped": len(records) - n, "n_call": len(calls), "n_finish": len(finishes),
      "n_give_up": sum(r["ref_plan"] == "give up" for r in kept),
      "n_f1": len(f1), "n_easy": len(easy), "n_hard": len(hard),
      "hallucinated": hallucinated, "pred_plans": dict(sorted(plans.items())),
      # EvalScope: every key averaged over all samples, 0 where the metric does not apply.
      "evalscope_mean": {
          "Plan.EM": _mean([r["plan_em"] for r in kept]),
          "Act.EM": sum(r["act_em"] for r in calls) / n if n else 0.0,
          "HalluRate": hallucinated / n if n else 0.0,
          "F1": sum(f1) / n if n else 0.0,
          "Rouge-L": sum(r["rouge_l"] for r in finishes) / n if n else 0.0},
  }


def records(references: Sequence[Reference], predictions: Sequence[str],
            template: str | None = None) -> list[dict[str, Any]]:
  """`judge` for each (reference, prediction) pair.

  Raises:
    SwiftJaxError: the counts differ.
  """
  if len(predictions) != len(references):
    raise errors.SwiftJaxError(f"{len(predictions)} predictions for {len(references)} "
                               "references: expected one prediction per reference, in order")
  return [judge(r, p, template) for r, p in zip(references, predictions)]


def score(references: Sequence[Reference], predictions: Sequence[str],
          template: str | None = None) -> dict[str, Any]:
  """Plan.EM, Act.EM, HalluRate, F1, Rouge-L (fractions in [0, 1]) with counts, the easy/hard
  F1 split and EvalScope's per-sample means.

  Args:
    references: from `read_references`.
    predictions: one text per reference, in order.
    template: how to parse the predictions (None: detect per text).

  Raises:
    SwiftJaxError: the counts differ.
  """
  return aggregate(records(references, predictions, template))


def generate_predictions(model: infer.LoadedModel, references: Sequence[Reference],
                         template: str = "react", *, max_new_tokens: int = 256,
                         batch_size: int = 8,
                         progress: Callable[[int, int], None] | None = None) -> list[str]:
  """Generates each reference turn greedily from the messages before it.

  The prompt is the reference's `prompt` rendered by the agent template
  (`swiftjax.agent.templates.to_chat`) and then the tokenizer's chat template with a generation
  prompt; generation stops where the template's tool output would begin (`STOP`).

  Args:
    model: from `swiftjax.infer.load`.
    references: from `read_references`.
    template: "react", "toolbench" or "hermes".
    max_new_tokens: generation budget per turn.
    batch_size: prompts generated together (the last batch is padded with repeats).
    progress: `progress(done, total)`.

  Returns:
    One text per reference, in order.
  """
  if template not in STOP:
    raise errors.ConfigError(f"unknown agent template {template!r}; known: {', '.join(STOP)}")
  sampling = generate.SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
  prompts = [templates.to_chat(r.prompt, r.tools, template) for r in references]
  sizes = [sum(len(m["content"]) for m in p) for p in prompts]
  # Similar lengths together: less padding per batch.
  order = sorted(range(len(prompts)), key=lambda i: sizes[i])
  outputs = [""] * len(prompts)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    texts = infer.chat(model, [prompts[i] for i in padded], sampling, stop=STOP[template])
    for i, text in zip(chunk, texts):
      outputs[i] = text
    if progress is not None:
      progress(min(start + batch_size, len(order)), len(order))
  return outputs


def evaluate(model: infer.LoadedModel | None, references: Sequence[Reference], *,
             predictions: Sequence[str] | None = None, template: str = "react",
             max_new_tokens: int = 256, batch_size: int = 8,
             progress: Callable[[int, int], None] | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Generates the predictions with `model` (unless `predictions` are given) and scores them.

  Returns:
    `(metrics, records)`: `score`'s metrics plus `generated` (and, when generated, `template`
    and `max_new_tokens`); a record per turn (predictions are parsed whatever their template).
  """
  generated = predictions is None
  if generated:
    if model is None:
      raise errors.ConfigError("toolbench needs a model to generate with, or predictions")
    predictions = generate_predictions(model, references, template,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       progress=progress)
  recs = records(references, predictions, None)
  metrics = {**aggregate(recs), "generated": generated}
  if generated:
    metrics.update(template=template, max_new_tokens=max_new_tokens)
  return metrics, recs
