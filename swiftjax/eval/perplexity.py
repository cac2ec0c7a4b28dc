"""Sliding-window perplexity (the Hugging Face "perplexity of fixed-length models" recipe).

A document of N tokens is read in windows of `max_length` tokens whose starts are `stride` apart.
Each token (but the first, which nothing predicts) is scored exactly once, in the first window
that reaches it, with the rest of that window before it as context:

  window w = [begin_w, end_w),  begin_w = w * stride,  end_w = min(begin_w + max_length, N)
  scored   = [max(end_{w-1}, begin_w + 1), end_w)

So every token has at least `max_length - stride` tokens of context once the first window is
past. With `stride == max_length` the windows do not overlap and each window's first token goes
unscored, exactly as scoring the chunks independently would do.
"""

import math
from typing import Any, Callable, Sequence

import numpy as np

from swiftjax import errors
from swiftjax import tokenizer as tok_lib
from swiftjax.eval import loglik
from swiftjax.eval import readers
from swiftjax.models.config import ModelConfig


def windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
  """The windows of a document of `n_tokens` tokens.

  Returns:
    `(begin, end, first_scored)` triples; tokens `[first_scored, end)` are scored in
    `tokens[begin:end]`. Windows that score nothing are left out.
  """
  if max_length < 2:
    raise errors.ConfigError(f"max_length must be >= 2, got {max_length}")
  if not 1 <= stride <= max_length:
    raise errors.ConfigError(f"stride must be in [1, max_length={max_length}], got {stride}")
  out, prev_end, begin = [], 0, 0
  while begin < n_tokens:
    end = min(begin + max_length, n_tokens)
    first = max(prev_end, begin + 1)
    if first < end:
      out.append((begin, end, first))
    prev_end = end
    if end == n_tokens:
      break
    begin += stride
  return out


def sliding_nll(params: Any, cfg: ModelConfig, documents: Sequence[Sequence[int]], *,
                max_length: int, stride: int, batch_size: int = 4, compute_dtype: Any = None,
                progress: Callable[[int, int], None] | None = None
                ) -> list[tuple[float, int]]:
  """Summed negative log-likelihood of each id document, windowed as the module says.

  Args:
    params: model parameters.
    cfg: model config.
    documents: token-id sequences.
    max_length: window length (at most the model's context).
    stride: distance between window starts (1..max_length).
    batch_size: windows per forward pass (windows of all documents are batched together).
    compute_dtype: activation dtype.
    progress: `progress(windows_done, windows_total)`.

  Returns:
    `(nll_sum, n_scored_tokens)` per document (nats; `len(doc) - 1` tokens when the windows
    overlap).
  """
  if max_length > cfg.max_position_embeddings:
    raise errors.ConfigError(f"max_length={max_length} exceeds the model's context of "
                             f"{cfg.max_position_embeddings} tokens")
  rows, owners = [], []
  for d, ids in enumerate(documents):
    for begin, end, first in windows(len(ids), max_length, stride):
      rows.append(tuple(ids[begin:end]))
      # Token i of the window is predicted at window position i - 1.
      owners.append((d, slice(first - begin - 1, end - begin - 1)))
  nll = np.zeros(len(documents), np.float64)
  count = np.zeros(len(documents), np.int64)
  for i, next_logp, _, _ in loglik.run_rows(params, cfg, rows, batch_size=batch_size,
                                            compute_dtype=compute_dtype, progress=progress):
    d, scored = owners[i]
    nll[d] -= np.sum(next_logp[scored], dtype=np.float64)
    count[d] += scored.stop - scored.start
  return [(float(a), int(b)) for a, b in zip(nll, count)]


def perplexity(model, documents: Sequence[readers.Document], *, max_length: int = 1024,
               stride: int | None = None, batch_size: int = 4,
               progress: Callable[[int, int], None] | None = None
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Perplexity of a model over documents (texts, or message lists in the chat template).

  Plain texts get the tokenizer's default prefix (BOS for Llama-style tokenizers); message
  lists are rendered by the chat template, which writes its own special tokens.

  Args:
    model: a `swiftjax.infer.LoadedModel`.
    documents: from `readers.read_documents`.
    max_length: window length, capped at the model's context.
    stride: window step (default: `max_length // 2`).
    batch_size: windows per forward pass.
    progress: `progress(windows_done, windows_total)`.

  Returns:
    `(metrics, records)`: metrics `{"ppl", "nll" (mean per token, nats), "tokens",
    "documents", "max_length", "stride"}`; one record per document.
  """
  max_length = min(max_length, model.cfg.max_position_embeddings)
  stride = stride or max(1, max_length // 2)
  prefix = loglik.bos_prefix(model.tokenizer)
  ids = []
  for doc in documents:
    if doc.messages is not None:
      text = tok_lib.render_chat(model.tokenizer, doc.messages, add_generation_prompt=False)
      ids.append(tok_lib.encode(model.tokenizer, text))
    else:
      ids.append(prefix + tok_lib.encode(model.tokenizer, doc.text))
  per_doc = sliding_nll(model.params, model.cfg, ids, max_length=max_length, stride=stride,
                        batch_size=batch_size, compute_dtype=model.compute_dtype,
                        progress=progress)
  total = sum(n for _, n in per_doc)
  if total == 0:
    raise errors.ConfigError("no token to score: every document is shorter than 2 tokens")
  nll = sum(s for s, _ in per_doc) / total
  metrics = {"ppl": math.exp(nll), "nll": nll, "tokens": total, "documents": len(documents),
             "max_length": max_length, "stride": stride}
  records = [{"where": doc.where, "tokens": n, "nll": s / n if n else None}
             for doc, (s, n) in zip(documents, per_doc)]
  return metrics, records
