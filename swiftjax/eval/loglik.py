"""Log-likelihoods of token continuations, batched with right padding.

One jitted forward pass per batch gives, for every row of input ids `x [B, T]`,

  next_logp[b, t] = log p(x[b, t+1] | x[b, :t+1])       (the targets already in the row)
  last_logp[b]    = log p(. | x[b, :L_b])  over the vocabulary, L_b the row's length

A request `(context, continuation)` is scored on the row `context + continuation[:-1]`: its
first tokens come from `next_logp`, the final one from `last_logp`. Requests whose rows are equal
(the same context with single-token answers, as in MMLU's " A"/" B"/" C"/" D") therefore share one
row. Rows are right-padded: causal attention never lets a real token see a padding token, and the
positions of real tokens are counted from 0 as without padding, so padding changes no score.
Rows are sorted by length and padded to a few length buckets, which bounds recompiles.
"""

import dataclasses
import functools
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import generate
from swiftjax import tokenizer as tok_lib
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Request:
  """Score `continuation` after `context`; both are token ids and neither is empty."""
  context: tuple[int, ...]
  continuation: tuple[int, ...]


class Score(NamedTuple):
  """`loglik`: sum of the continuation's token log-probs (nats); `is_greedy`: every continuation
  token is the argmax at its step."""
  loglik: float
  is_greedy: bool


def bos_prefix(tokenizer) -> list[int]:
  """The ids the tokenizer puts before a text by default (`[bos]` for Llama-style tokenizers,
  nothing for GPT-2-style ones such as SmolLM2's)."""
  full = list(tokenizer("a")["input_ids"])
  plain = tok_lib.encode(tokenizer, "a")
  k = len(full) - len(plain)
  return full[:k] if k > 0 and full[k:k + len(plain)] == plain else []


def make_request(tokenizer, context: str, continuation: str,
                 prefix: Sequence[int] = ()) -> Request:
  """Tokenizes a (context, continuation) pair as lm-evaluation-harness does.

  The pair is encoded as one text and split where the context's own encoding ends, so a BPE
  merge across the boundary cannot happen differently than when the model reads the whole text.
  Trailing spaces of the context move to the continuation first (" Paris" is one token).

  Args:
    tokenizer: a Hugging Face tokenizer.
    context: the prompt text.
    continuation: the answer text.
    prefix: ids put before the context (see `bos_prefix`).

  Raises:
    ConfigError: the context or the continuation encodes to no tokens.
  """
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
  whole = tok_lib.encode(tokenizer, context + continuation)
  n_ctx = len(tok_lib.encode(tokenizer, context))
  ctx, cont = tuple(prefix) + tuple(whole[:n_ctx]), tuple(whole[n_ctx:])
  if not ctx or not cont:
    raise errors.ConfigError(f"empty context or continuation after tokenization: "
                             f"{context[-40:]!r} / {continuation[:40]!r}")
  return Request(ctx, cont)


def length_bucket(n: int) -> int:
  """Padded row length: a power of two up to 128, then a multiple of 128."""
  return generate.bucket(n) if n <= 128 else -(-n // 128) * 128


@functools.partial(jax.jit, static_argnames=("cfg", "compute_dtype"))
def _forward(params, tokens, lengths, cfg, compute_dtype):
  """Per-row next-token log-probs of a right-padded batch.

  Args:
    params: model parameters.
    tokens: `[B, T]` int32, row b valid on `[0, lengths[b])`.
    lengths: `[B]` int32, at least 1.
    cfg: model config (static).
    compute_dtype: activation dtype (static; None: the parameters').

  Returns:
    `next_logp [B, T]` float32 (log-prob of `tokens[:, t+1]` at position t; garbage past the
    row), `next_greedy [B, T]` bool (that token is the argmax), `last_logp [B, V]` float32
    (log-softmax at position `lengths - 1`).
  """
  B, T = tokens.shape
  mask = jnp.arange(T)[None, :] < lengths[:, None]
  logits, _ = decoder.apply(params, tokens, cfg, mask=mask, compute_dtype=compute_dtype)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  next_logp = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - lse
  next_greedy = jnp.argmax(logits, axis=-1) == targets
  last = jnp.maximum(lengths - 1, 0)
  last_logp = logits[jnp.arange(B), last] - lse[jnp.arange(B), last][:, None]
  return next_logp, next_greedy, last_logp


def run_rows(params: Any, cfg: ModelConfig, rows: Sequence[Sequence[int]], *,
             batch_size: int = 8, compute_dtype: Any = None,
             progress: Callable[[int, int], None] | None = None
             ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
  """Runs rows of ids through the model, longest first, in right-padded batches.

  Args:
    params: model parameters.
    cfg: model config.
    rows: non-empty id sequences, each at most `cfg.max_position_embeddings` long.
    batch_size: rows per forward pass (the last batch is filled with 1-token dummies).
    compute_dtype: activation dtype.
    progress: called as `progress(rows_done, rows_total)` after each batch.

  Yields:
    `(row_index, next_logp [L], next_greedy [L], last_logp [V])` for every row, L its length.
  """
  if batch_size < 1:
    raise errors.ConfigError(f"batch_size must be >= 1, got {batch_size}")
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    T = length_bucket(len(rows[chunk[0]]))
    tokens = np.zeros((batch_size, T), np.int32)
    lengths = np.ones(batch_size, np.int32)
    for b, i in enumerate(chunk):
      tokens[b, :len(rows[i])] = rows[i]
      lengths[b] = len(rows[i])
    out = _forward(params, jnp.asarray(tokens), jnp.asarray(lengths), cfg, compute_dtype)
    next_logp, next_greedy, last_logp = (np.asarray(o) for o in out)
    for b, i in enumerate(chunk):
      L = lengths[b]
      yield i, next_logp[b, :L], next_greedy[b, :L], last_logp[b]
    if progress is not None:
      progress(min(start + batch_size, len(order)), len(order))


def loglikelihoods(params: Any, cfg: ModelConfig, requests: Sequence[Request], *,
                   batch_size: int = 8, max_length: int | None = None,
                   compute_dtype: Any = None,
                   progress: Callable[[int, int], None] | None = None) -> list[Score]:
  """Scores every request: `sum_i log p(cont_i | context, cont_<i)`.

  Args:
    params: model parameters.
    cfg: model config.
    requests: the (context, continuation) id pairs.
    batch_size: rows per forward pass.
    max_length: longest row (default: the model's context); longer contexts lose their
      beginning (left truncation, as lm-evaluation-harness does).
    compute_dtype: activation dtype.
    progress: `progress(rows_done, rows_total)`.

  Returns:
    One `Score` per request, in order.

  Raises:
    ConfigError: an empty context/continuation, or a continuation longer than `max_length`.
  """
  max_length = min(max_length or cfg.max_position_embeddings, cfg.max_position_embeddings)
  row_of: dict[tuple[int, ...], int] = {}
  row_requests: list[list[int]] = []
  for k, r in enumerate(requests):
    if not r.context or not r.continuation:
      raise errors.ConfigError(f"request {k} has an empty context or continuation")
    if len(r.continuation) > max_length:
      raise errors.ConfigError(f"request {k}: continuation of {len(r.continuation)} tokens does "
                               f"not fit max_length={max_length}")
    row = (r.context + r.continuation[:-1])[-max_length:]
    if row not in row_of:
      row_of[row] = len(row_requests)
      row_requests.append([])
    row_requests[row_of[row]].append(k)

  scores: list[Score | None] = [None] * len(requests)
  rows = list(row_of)
  for i, next_logp, next_greedy, last_logp in run_rows(
      params, cfg, rows, batch_size=batch_size, compute_dtype=compute_dtype,
      progress=progress):
    L = len(rows[i])
    for k in row_requests[i]:
      cont = requests[k].continuation
      n = len(cont)
      # Continuation token j (< n-1) is predicted at row position L-n+j; the last at L-1.
      body = slice(L - n, L - 1)
      ll = float(np.sum(next_logp[body], dtype=np.float64)) + float(last_logp[cont[-1]])
      greedy = bool(np.all(next_greedy[body])) and int(np.argmax(last_logp)) == cont[-1]
      scores[k] = Score(ll, greedy)
  return scores
