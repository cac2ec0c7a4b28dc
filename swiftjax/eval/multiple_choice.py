"""Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness scores it.

Each choice is scored as the summed log-prob of its continuation tokens given its context; the
prediction is the best-scoring choice (`acc`). `acc_norm` divides each score by the choice's
length in characters first (lm-evaluation-harness's `acc_norm`), which removes the bias toward
short answers. Intervals are 95% Wilson score intervals, which stay inside [0, 1] and keep their
coverage at the small n and extreme accuracies of quick evaluations, unlike the normal
approximation.
"""

import math
from typing import Any, Callable, Sequence

import numpy as np

from swiftjax.eval import loglik
from swiftjax.eval import readers

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
  """Wilson score interval for a binomial proportion (95% by default); (0, 1) for n == 0."""
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def requests_for(tokenizer, items: Sequence[readers.MCItem]) -> list[list[loglik.Request]]:
  """The tokenized (context, continuation) requests of every choice of every item."""
  prefix = loglik.bos_prefix(tokenizer)
  return [[loglik.make_request(tokenizer, c, x, prefix)
           for c, x in zip(item.contexts, item.continuations)] for item in items]


def accuracy(items: Sequence[readers.MCItem], logliks: Sequence[Sequence[float]]
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Accuracy metrics and per-item records from per-choice log-likelihoods.

  Args:
    items: the questions.
    logliks: `logliks[i][k]`, the score of choice k of item i.

  Returns:
    `(metrics, records)`; metrics `{"n", "acc", "acc_ci95", "acc_norm", "acc_norm_ci95",
    "chance", "ci"}`.
  """
  records, hits, hits_norm = [], 0, 0
  for item, ll in zip(items, logliks):
    ll = np.asarray(ll, np.float64)
    chars = np.array([max(len(c), 1) for c in item.continuations], np.float64)
    pred, pred_norm = int(np.argmax(ll)), int(np.argmax(ll / chars))
    hits += pred == item.label
    hits_norm += pred_norm == item.label
    records.append({"where": item.where, "group": item.group, "label": item.label,
                    "pred": pred, "pred_norm": pred_norm, "logliks": ll.tolist(),
                    "correct": pred == item.label})
  n = len(items)
  metrics = {"n": n, "acc": hits / n if n else 0.0, "acc_ci95": list(wilson_interval(hits, n)),
             "acc_norm": hits_norm / n if n else 0.0,
             "acc_norm_ci95": list(wilson_interval(hits_norm, n)),
             "chance": float(np.mean([1 / len(i.continuations) for i in items])) if n else 0.0,
             "ci": "wilson"}
  return metrics, records


def evaluate(model, items: Sequence[readers.MCItem], *, batch_size: int = 8,
             max_length: int | None = None,
             progress: Callable[[int, int], None] | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Scores every choice of every item with the model and returns `accuracy(...)`.

  Args:
    model: a `swiftjax.infer.LoadedModel`.
    items: the questions (from `readers`).
    batch_size: rows per forward pass.
    max_length: longest scored row (default: the model's context; longer contexts are
      truncated from the left).
    progress: `progress(rows_done, rows_total)`.
  """
  per_item = requests_for(model.tokenizer, items)
  flat = [r for reqs in per_item for r in reqs]
  scores = loglik.loglikelihoods(model.params, model.cfg, flat, batch_size=batch_size,
                                 max_length=max_length, compute_dtype=model.compute_dtype,
                                 progress=progress)
  logliks, k = [], 0
  for reqs in per_item:
    logliks.append([s.loglik for s in scores[k:k + len(reqs)]])
    k += len(reqs)
  return accuracy(items, logliks)
