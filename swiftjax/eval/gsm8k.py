"""GSM8K: greedy generation with the chat template, exact match on the final number.

The reference is the number after `####`; the prediction is the final number of the generated
answer (`answers.extract_answer`); both are compared in canonical form.
"""

from typing import Any, Callable, Sequence

from swiftjax import generate
from swiftjax import infer
from swiftjax.eval import answers
from swiftjax.eval import multiple_choice
from swiftjax.eval import readers

PROMPT = "{question}"


def evaluate(model: infer.LoadedModel, items: Sequence[readers.GenItem], *,
             max_new_tokens: int = 256, batch_size: int = 8, prompt: str = PROMPT,
             progress: Callable[[int, int], None] | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Answers each question greedily and scores exact match of the final number.

  Args:
    model: from `swiftjax.infer.load`.
    items: from `readers.read_gsm8k`.
    max_new_tokens: generation budget per answer.
    batch_size: questions generated together (the last batch is padded with repeats, so every
      batch has the same shape).
    prompt: the user message, a format string with `{question}`.
    progress: `progress(items_done, items_total)`.

  Returns:
    `(metrics, records)`: metrics `{"n", "exact_match", "exact_match_ci95", "ci",
    "no_answer", "max_new_tokens"}`; a record per item with the output and extracted answer.
  """
  sampling = generate.SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
  # Similar lengths together: less padding per batch.
  order = sorted(range(len(items)), key=lambda i: len(items[i].question))
  outputs: list[str] = [""] * len(items)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    texts = infer.chat(model, [prompt.format(question=items[i].question) for i in padded],
                       sampling)
    for i, a in zip(chunk, texts):
      outputs[i] = a
    if progress is not None:
      progress(min(start + batch_size, len(order)), len(order))
  records, hits = [], 0
  for item, out in zip(items, outputs):
    pred = answers.extract_answer(out)
    correct = pred is not None and pred == item.reference
    hits += correct
    records.append({"where": item.where, "question": item.question,
                    "reference": item.reference, "output": out, "prediction": pred,
                    "correct": correct})
  n = len(items)
  metrics = {"n": n, "exact_match": hits / n if n else 0.0,
             "exact_match_ci95": list(multiple_choice.wilson_interval(hits, n)),
             "ci": "wilson", "no_answer": sum(r["prediction"] is None for r in records),
             "max_new_tokens": max_new_tokens}
  return metrics, records
