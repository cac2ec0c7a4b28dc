"""Continuous batching: fixed decode slots that requests join and leave between decode steps.

The engine owns one KV cache in `swiftjax.models.decoder`'s layout, `k`/`v` `[L, B, S, K, hd]`
with one row per slot (B = `num_slots`), and one thread that loops:

  1. admit: while a slot is free and a request waits, prefill the request alone (batch 1,
     its prompt left-padded to `Tb = prompt_bucket(n)`), sample its first token, and copy its
     keys/values into the slot's row at columns `[end - Tb, end)`. With
     `EngineConfig.mixed_prefill_tokens = W`, prompts of at most W tokens are instead packed
     (in arrival order, as many as fit in W tokens) into a block that rides along the next
     decode step (`decoder.apply_with_prefill`: one pass over the weights for both), and
     each prompt's keys/values are copied into its slot after that step;
  2. decode: every slot feeds its last token through one jitted `decoder.apply` step with
     static shapes `[B, 1]`; free slots are masked out (`mask=False` writes nothing valid and
     does not advance their position); tokens are sampled per row with each request's own
     temperature, top-p, top-k, repetition penalty and seed;
  3. emit: new text goes to each request's event queue; a request that produced EOS, a stop
     string or `max_tokens`, timed out or was cancelled frees its slot.

The decoder writes every step at one shared column `end` and attends by `valid`, with RoPE
positions from the per-row `next_pos`, so rows that joined at different times coexist: a row's
tokens are contiguous columns ending at `end` (so slot distance is token distance, and sliding
windows stay exact). When `end` reaches the cache length, all rows shift left together by the
start of the oldest live row ("relayout", one gather); the cache length itself is a
power-of-two bucket a little longer than the longest live row, so short conversations attend
over short caches, and compiles stay bounded: one decode step (and one packed-prefill step) per
cache bucket, one prefill per prompt bucket; `Engine.precompile` compiles them all before
serving, so no request waits on a compile.
"""

import collections
import ctypes
import dataclasses
import functools
import itertools
import logging
import os
import queue
import threading
import time
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import generate as gen
from swiftjax import sharding
from swiftjax.models import decoder

logger = logging.getLogger(__name__)


class ServeError(errors.SwiftJaxError):
  """A request the engine cannot answer; `status` is the HTTP status that says why."""

  def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
    super().__init__(message)
    self.status = status
    self.kind = kind


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Slots, limits and queueing.

  Attributes:
    num_slots: decode slots (rows of the KV cache) that generate together.
    max_seq_len: most tokens of one request, prompt plus completion.
    max_queue: requests that may wait for a slot; beyond it `submit` raises a 429 error.
    timeout_s: default per-request deadline from submission to the last token.
    min_cache_len: smallest cache bucket (columns).
    kv_cache_dtype: dtype the keys and values are stored in ("float32", "bfloat16"), or None
      for the model's compute dtype. A bfloat16 cache halves the cache's memory (1,440 MiB ->
      720 MiB for SmolLM2-135M's 16 slots x 2,048 columns); attention upcasts what it reads, so
      only the stored keys and values are rounded (greedy tokens identical on 16 x 48 there).
      On XLA:CPU the upcast is slow: decode ran ~3.4x slower at 2,048 columns (78 vs 23
      tok/s, `bench.bench_engine --mode=kv_dtype`),
      so it is for when memory, not speed, is the limit.
    mixed_prefill_tokens: W > 0 packs prompts of at most W tokens into a W-token block
      prefilled inside the decode step (up to `W // 16` prompts per step), so a short prompt
      shares the step's weight reads instead of paying for a forward pass of its own, and
      only one extra program per cache length is compiled, whatever the prompt lengths.
      Longer prompts are prefilled alone. 0: every prompt is prefilled alone. W is capped at
      `max_seq_len`.
  """
  num_slots: int = 16
  max_seq_len: int = 2048
  max_queue: int = 64
  timeout_s: float = 300.0
  min_cache_len: int = 64
  kv_cache_dtype: str | None = None
  mixed_prefill_tokens: int = 0

  def __post_init__(self):
    if self.kv_cache_dtype not in (None, "float32", "bfloat16"):
      raise errors.ConfigError("EngineConfig.kv_cache_dtype must be float32, bfloat16 or None, "
                               f"got {self.kv_cache_dtype!r}")
    for name in ("num_slots", "max_seq_len", "max_queue", "min_cache_len"):
      if getattr(self, name) < 1:
        raise errors.ConfigError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.timeout_s <= 0:
      raise errors.ConfigError(f"EngineConfig.timeout_s must be > 0, got {self.timeout_s}")
    if self.mixed_prefill_tokens < 0:
      raise errors.ConfigError("EngineConfig.mixed_prefill_tokens must be >= 0 (0: off), got "
                               f"{self.mixed_prefill_tokens}")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How one request is sampled. `temperature == 0` is greedy; `top_k == 0`, `top_p == 1`
  and `repetition_penalty == 1` disable; `seed=None` draws a random seed."""
  max_tokens: int = 16
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  repetition_penalty: float = 1.0
  stop: tuple[str, ...] = ()
  seed: int | None = None

  def validate(self) -> None:
    """Raises a 400 `ServeError` naming the first bad field."""
    checks = (("max_tokens", self.max_tokens >= 1, ">= 1"),
              ("temperature", 0 <= self.temperature <= 100, "in [0, 100]"),
              ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
              ("top_k", self.top_k >= 0, ">= 0"),
              ("repetition_penalty", self.repetition_penalty > 0, "> 0"))
    for name, ok, want in checks:
      if not ok:
        raise ServeError(f"{name} must be {want}, got {getattr(self, name)}")
    if any(not isinstance(s, str) or not s for s in self.stop):
      raise ServeError("stop must be non-empty strings")


class Request:
  """One submitted request. Its thread reads `events()`; the engine thread writes them.

  Attributes:
    prompt_ids: the prompt's token ids.
    params: its sampling params.
    output_ids: generated token ids so far (EOS excluded).
    finish_reason: "stop" (EOS or a stop string) or "length", once done.
  """

  _ids = itertools.count()

  def __init__(self, prompt_ids: Sequence[int], params: SamplingParams, deadline: float):
    self.id = next(self._ids)
    self.prompt_ids = list(prompt_ids)
    self.params = params
    self.deadline = deadline
    self.output_ids: list[int] = []
    self.finish_reason: str | None = None
    self.cancelled = False
    self._events: queue.SimpleQueue = queue.SimpleQueue()
    self._sent = ""  # text already put on the queue (engine thread only)

  def cancel(self) -> None:
    """Asks the engine to drop this request (its slot is freed before the next step)."""
    self.cancelled = True

  def events(self, grace_s: float = 5.0) -> Iterator[str]:
    """Yields the answer's text pieces as they are produced, until the request finishes.

    Raises:
      ServeError: the engine failed the request (timeout 504, stopping 503, ...); also 504
        if nothing arrives for `grace_s` seconds past the deadline.
    """
    while True:
      wait = self.deadline - time.monotonic() + grace_s
      try:
        kind, payload = self._events.get(timeout=max(wait, 0.0))
      except queue.Empty:
        self.cancel()
        raise ServeError("request timed out", 504, "timeout") from None
      if kind == "text":
        yield payload
      elif kind == "done":
        return
      else:
        raise payload

  def text(self) -> str:
    """Blocks until done and returns the whole answer."""
    return "".join(self.events())

  # Engine side.
  def _put_text(self, piece: str) -> None:
    if piece:
      self._sent += piece
      self._events.put(("text", piece))

  def _finish(self, reason: str) -> None:
    self.finish_reason = reason
    self._events.put(("done", reason))

  def _fail(self, error: ServeError) -> None:
    self._events.put(("error", error))


@dataclasses.dataclass
class _Slot:
  request: Request
  start: int      # cache column of the prompt's first real token
  sampled: int    # tokens sampled so far (the PRNG counter)


def _row_keys(seeds: jax.Array, counters: jax.Array) -> jax.Array:
  return jax.vmap(lambda s, c: jax.random.fold_in(jax.random.key(s), c))(seeds, counters)


@functools.partial(jax.jit, static_argnames=("greedy_only", "filtered", "penalized"),
                   donate_argnames=("seen",))
def sample_rows(logits, seen, temperature, top_p, top_k, penalty, seeds, counters, *,
                greedy_only: bool, filtered: bool, penalized: bool):
  """Picks one token per row, each row with its own sampling params.

  The rules are `swiftjax.generate.sample_logits`' (CTRL repetition penalty, temperature,
  top-k, then the smallest top-p prefix), applied per row; a row with temperature 0 is greedy.

  Args:
    logits: `[B, V]` float32.
    seen: `[B, V]` bool, tokens already in each row (prompt and output).
    temperature, top_p, penalty: `[B]` float32; top_k: `[B]` int32 (0: off).
    seeds, counters: `[B]` uint32 / int32; row b samples with `fold_in(key(seed), counter)`,
      so its tokens do not depend on which other requests share the batch.
    greedy_only, filtered, penalized: static switches that skip unused work.

  Returns:
    `([B] int32 tokens, seen with the tokens added)`.
  """
  rows = jnp.arange(logits.shape[0])
  if penalized:
    p = penalty[:, None]
    logits = jnp.where(seen, jnp.where(logits > 0, logits / p, logits * p), logits)
  token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if not greedy_only:
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    neg = jnp.finfo(scaled.dtype).min
    if filtered:
      desc = -jnp.sort(-scaled, axis=-1)
      k = jnp.clip(top_k, 1, scaled.shape[-1])
      kth = jnp.where(top_k > 0, jnp.take_along_axis(desc, (k - 1)[:, None], axis=1)[:, 0], neg)
      desc = jnp.where(desc < kth[:, None], neg, desc)
      probs = jax.nn.softmax(desc, axis=-1)
      keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p[:, None]
      cutoff = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1)
      cutoff = jnp.maximum(kth, jnp.where(top_p < 1.0, cutoff, neg))
      scaled = jnp.where(scaled < cutoff[:, None], neg, scaled)
    drawn = jax.vmap(jax.random.categorical)(_row_keys(seeds, counters), scaled)
    token = jnp.where(temperature > 0, drawn.astype(jnp.int32), token)
  return token, seen.at[rows, token].set(True)


@functools.partial(jax.jit, static_argnames=("cfg", "compute_dtype", "cache_dtype"))
def _prefill(params, tokens, mask, cfg, compute_dtype, cache_dtype=None):
  """`tokens`/`mask` `[1, Tb]` -> (last logits `[1, V]`, a one-row cache of Tb slots, seen)."""
  dtype = cache_dtype or compute_dtype or params["embed_tokens"]["embedding"].dtype
  cache = decoder.init_cache(cfg, 1, tokens.shape[1], dtype,
                             per_layer=decoder.cache_uses_layers(params))
  logits, cache = decoder.apply(params, tokens, cfg, mask=mask, cache=cache,
                                compute_dtype=compute_dtype, last_only=True)
  seen = jnp.zeros((1, cfg.vocab_size), bool).at[0, tokens[0]].max(mask[0])
  return logits[:, -1], cache, seen


@functools.partial(jax.jit, donate_argnames=("cache", "seen"))
def _insert(cache, seen, new, new_seen, slot):
  """Copies a prefilled cache of Tb columns (`decoder.init_cache`'s layout, one row) into row
  `slot`, columns `[end - Tb, end)`."""
  tb = new["valid"].shape[1]
  start = cache["end"] - tb
  zero = jnp.zeros((), jnp.int32)

  out = dict(cache)
  for name in ("k", "v"):
    def put(buf, part, col=decoder.kv_slot_axis(cache)[name]):  # rows: axis ndim - 4
      index = [zero] * buf.ndim
      index[buf.ndim - 4], index[buf.ndim + col] = slot, start
      return jax.lax.dynamic_update_slice(buf, part.astype(buf.dtype), index)
    out[name] = jax.tree.map(put, cache[name], new[name])
  valid = jax.lax.dynamic_update_slice(cache["valid"], jnp.zeros((1, cache["valid"].shape[1]),
                                                                 bool), (slot, zero))
  out["valid"] = jax.lax.dynamic_update_slice(valid, new["valid"], (slot, start))
  out["next_pos"] = cache["next_pos"].at[slot].set(new["next_pos"][0])
  return out, jax.lax.dynamic_update_slice(seen, new_seen, (slot, zero))


@functools.partial(jax.jit, static_argnames=("cfg", "compute_dtype"), donate_argnames=("cache",))
def _decode(params, tokens, active, cache, cfg, compute_dtype):
  """One step for every slot: `tokens`/`active` `[B]` -> (logits `[B, V]`, cache)."""
  logits, cache = decoder.apply(params, tokens[:, None], cfg, mask=active[:, None], cache=cache,
                                compute_dtype=compute_dtype, last_only=True)
  return logits[:, -1], cache


@functools.partial(jax.jit, static_argnames=("cfg", "compute_dtype"), donate_argnames=("cache",))
def _decode_prefill(params, tokens, active, cache, block, cfg, compute_dtype):
  """`_decode` plus a packed prefill block (`block`: `[1, W]` tokens / segments / positions
  and `[P]` last columns) -> (logits `[B, V]`, cache, prompt logits `[P, V]`, block keys and
  values)."""
  logits, cache, plogits, kv = decoder.apply_with_prefill(
      params, tokens[:, None], cfg, cache, mask=active[:, None],
      prefill_tokens=block["tokens"], prefill_segments=block["segments"],
      prefill_positions=block["positions"], prefill_last=block["last"],
      compute_dtype=compute_dtype)
  return logits[:, -1], cache, plogits, kv


@functools.partial(jax.jit, donate_argnames=("cache", "seen"))
def _insert_packed(cache, seen, kv, new_seen, slot, start, n):
  """Copies columns `[start, start + n)` of a packed block's keys/values (W columns, one row)
  into row `slot`, ending at column `end` (which must be >= W), and makes them its only valid
  columns; the copy is a fixed W-column window, so one compile serves every prompt length."""
  zero = jnp.zeros((), jnp.int32)
  w = _kv_width(kv, cache)
  first = cache["end"] - w

  out = dict(cache)
  for name in ("k", "v"):
    def put(buf, part, col=decoder.kv_slot_axis(cache)[name]):
      axis = part.ndim + col
      pad = [(0, 0)] * part.ndim
      pad[axis] = (part.shape[axis], 0)
      # Padded on the left by W, the window of W columns ending at start + n begins at
      # start + n (in padded columns): the prompt at its right end, zeros or others before.
      window = jax.lax.dynamic_slice_in_dim(jnp.pad(part, pad), start + n, part.shape[axis],
                                            axis=axis)
      index = [zero] * buf.ndim
      index[buf.ndim - 4], index[buf.ndim + col] = slot, first
      return jax.lax.dynamic_update_slice(buf, window.astype(buf.dtype), index)
    out[name] = jax.tree.map(put, cache[name], kv[name])
  row = jnp.zeros((1, cache["valid"].shape[1]), bool)
  row = jax.lax.dynamic_update_slice(row, (jnp.arange(w) >= w - n)[None], (zero, first))
  out["valid"] = jax.lax.dynamic_update_slice(cache["valid"], row, (slot, zero))
  out["next_pos"] = cache["next_pos"].at[slot].set(n)
  return out, jax.lax.dynamic_update_slice(seen, new_seen, (slot, zero))


def _kv_width(kv, cache) -> int:
  """Columns of a one-row block of keys in `cache`'s layout (`decoder.init_cache`)."""
  return jax.tree.leaves(kv["k"])[0].shape[decoder.kv_slot_axis(cache)["k"]]


@functools.partial(jax.jit, static_argnames=("new_len",))
def _relayout(cache, delta, new_len):
  """Moves every column c to c + delta in a cache of `new_len` columns (gaps are invalid)."""
  cols = jnp.arange(new_len) - delta
  out = dict(cache, end=cache["end"] + delta)
  for name in ("k", "v"):
    col = decoder.kv_slot_axis(cache)[name]
    out[name] = jax.tree.map(
        lambda buf, col=col: jnp.take(buf, cols, axis=buf.ndim + col, mode="fill", fill_value=0),
        cache[name])
  out["valid"] = jnp.take(cache["valid"], cols, axis=1, mode="fill", fill_value=False)
  return out


def _trim_heap() -> None:
  """Returns freed heap pages to the OS (glibc's `malloc_trim`; a no-op elsewhere). XLA:CPU's
  buffers come from malloc, and glibc keeps what a burst of large temporaries freed: after
  `Engine.precompile` for SmolLM2 (caches of up to 1,024 columns) the process held 6.4 GB, 2.3
  GB after the trim. Called after precompiling and whenever the KV cache shrinks."""
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def prompt_bucket(n: int) -> int:
  """Prefill length for an n-token prompt: 16, 32, then four steps per octave (40, 48, 56, 64,
  80, 96, ...), so padding costs at most a quarter of the prefill while the number of
  compiled prefills grows only with the log of the longest prompt."""
  if n <= 32:
    return gen.bucket(n)
  step = gen.bucket(n) // 8
  return -(-n // step) * step


class Engine:
  """Slots, a waiting queue and the decode loop for one model.

  Args:
    model: a `swiftjax.infer.LoadedModel` (params, cfg, tokenizer, eos ids, compute dtype,
      optional mesh).
    config: slots and limits.
  """

  def __init__(self, model: Any, config: EngineConfig = EngineConfig()):
    self.model = model
    self.config = config
    self.cfg = model.cfg
    limit = min(config.max_seq_len, self.cfg.max_position_embeddings)
    self.max_seq_len = limit
    self._max_cache_len = 2 * gen.bucket(limit)
    self._eos = frozenset(int(i) for i in model.eos_ids)
    self._lock = threading.Condition()
    self._waiting: collections.deque[Request] = collections.deque()
    self._stopping = False
    self._thread: threading.Thread | None = None
    B = config.num_slots
    self._slots: list[_Slot | None] = [None] * B
    self._tokens = np.zeros(B, np.int32)
    self._temperature = np.zeros(B, np.float32)
    self._top_p = np.ones(B, np.float32)
    self._top_k = np.zeros(B, np.int32)
    self._penalty = np.ones(B, np.float32)
    self._seeds = np.zeros(B, np.uint32)
    self._counters = np.zeros(B, np.int32)
    # Prompts per packed prefill block (its `last` entries are static), at least 16 tokens
    # each on average.
    # The packed block's width: no wider than a request can be, so the block always fits the
    # longest cache (`_max_cache_len` >= 2 * max_seq_len).
    self._width = min(config.mixed_prefill_tokens, limit)
    self._max_pack = min(B, max(1, self._width // 16))
    # Requests taken from the queue for the next step's packed block (failed with the step),
    # and the one being prefilled alone.
    self._pack: list[Request] = []
    self._admitting: Request | None = None
    # Every key exists from the start, so `stats()` can copy the dict while the loop runs.
    # Prompts prefilled inside a decode step count in `prefills` / `prefill_tokens` and
    # `packed_prefills`; their time is in `decode_seconds`.
    self.counters = dict.fromkeys(
        ("steps", "step_rows", "tokens", "prefills", "prefill_tokens", "packed_prefills",
         "relayouts", "rejected", "prefill_seconds", "decode_seconds", "compiled_shapes"), 0)
    # Distinct (function, shape) calls of the jitted prefill / insert / decode / relayout:
    # each is one compile, so their count shows whether memory growth is compiled code.
    self._shapes: set[tuple[Any, ...]] = set()
    self._alloc(config.min_cache_len)

  # ----------------------------------------------------------------------------------------
  # Client side (any thread).

  def precompile(self, max_len: int) -> int:
    """Compiles, before serving, what requests of up to `max_len` tokens (capped at
    `max_seq_len`) will run: the decode step (and packed-prefill step) for every cache length
    such requests use, the shifts between those lengths, the prefill of every prompt bucket
    up to `max_len`, and the copies into the cache. A compile of the unstacked SmolLM2-135M
    takes 1-2 s on 2 CPU cores and stalls every live request when it happens mid-serving.
    The calls run on dummy inputs built the way serving builds them, so serving finds them
    in the jit caches. Call before `start()`.

    Returns:
      the number of programs compiled (shapes not seen before by this engine).
    """
    if self._thread is not None:
      raise RuntimeError("precompile() must be called before start()")
    if max_len < 1:
      raise ValueError(f"precompile(max_len) needs max_len >= 1, got {max_len}")
    before = len(self._shapes)
    max_len = min(max_len, self.max_seq_len)
    # A prompt block of Tb columns needs a cache longer than Tb; rows span <= max_len + 1.
    top = prompt_bucket(max_len)
    lengths = sorted({self._bucket_len(n) for n in range(1, top + 2)})
    buckets = sorted({prompt_bucket(n) for n in range(self._width + 1, max_len + 1)})
    width = self._width
    idle = jnp.zeros(self.config.num_slots, bool)
    prefilled = {}
    for tb in buckets:
      tokens, mask = self._prompt_arrays([0] * tb)
      self._saw("prefill", tb)
      prefilled[tb] = _prefill(self.model.params, tokens, mask, self.cfg,
                               self.model.compute_dtype, self.config.kv_cache_dtype)[1:]
    for L in lengths:
      self._alloc(L)
      # (`end` is donated with the cache on every call, so each call gets a fresh one.)
      self.cache = dict(self.cache, end=jnp.asarray(L - 1, jnp.int32))
      self._saw("decode", L)
      _, self.cache = _decode(self.model.params, jnp.asarray(self._tokens), idle, self.cache,
                              self.cfg, self.model.compute_dtype)
      for other in lengths:
        self._saw("relayout", L, other)
        _relayout(self.cache, jnp.int32(0), other)
      if width:
        self.cache = dict(self.cache, end=jnp.asarray(L - 1, jnp.int32))
        self._saw("decode_prefill", L)
        _, self.cache, _, kv = _decode_prefill(self.model.params, jnp.asarray(self._tokens),
                                               idle, self.cache, self._pack_block([[0]]),
                                               self.cfg, self.model.compute_dtype)
        self._saw("insert_packed", L)
        row = jnp.zeros((1, self.cfg.vocab_size), bool)
        self.cache, self.seen = _insert_packed(self.cache, self.seen, kv, row, jnp.int32(0),
                                               jnp.int32(0), jnp.int32(1))
      for tb in buckets:
        if tb < L:  # a prompt block leaves a column to decode into
          self.cache = dict(self.cache, end=jnp.asarray(L - 1, jnp.int32))
          self._saw("insert", L, tb)
          self.cache, self.seen = _insert(self.cache, self.seen, *prefilled[tb], jnp.int32(0))
    jax.block_until_ready(self.cache)
    self._alloc(self.config.min_cache_len)
    del prefilled
    _trim_heap()
    return len(self._shapes) - before

  def start(self) -> "Engine":
    """Starts the decode loop thread."""
    if self._thread is None:
      self._thread = threading.Thread(target=self._loop, name="swiftjax-engine", daemon=True)
      self._thread.start()
    return self

  def stop(self) -> None:
    """Stops the loop; requests still waiting or running fail with 503."""
    with self._lock:
      self._stopping = True
      self._lock.notify_all()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    stopping = ServeError("the server is shutting down", 503, "server_error")
    with self._lock:
      while self._waiting:
        self._waiting.popleft()._fail(stopping)
    for b, slot in enumerate(self._slots):
      if slot is not None:
        slot.request._fail(stopping)
        self._slots[b] = None

  def check(self, prompt_ids: Sequence[int], params: SamplingParams) -> None:
    """Raises a 400 `ServeError` if the request can never run here."""
    params.validate()
    if not prompt_ids:
      raise ServeError("the prompt is empty")
    total = len(prompt_ids) + params.max_tokens
    if total > self.max_seq_len:
      raise ServeError(
          f"this model's maximum context length is {self.max_seq_len} tokens, but "
          f"{len(prompt_ids)} prompt tokens + max_tokens {params.max_tokens} = {total} were "
          "requested", 400, "invalid_request_error")

  def submit(self, prompt_ids: Sequence[int], params: SamplingParams,
             timeout_s: float | None = None) -> Request:
    """Queues one request; see `submit_many`."""
    return self.submit_many([(prompt_ids, params)], timeout_s)[0]

  def submit_many(self, jobs: Sequence[tuple[Sequence[int], SamplingParams]],
                  timeout_s: float | None = None) -> list[Request]:
    """Queues requests together (all or none), e.g. the `n` choices of one API call.

    Raises:
      ServeError: 400 for a request that cannot fit, 429 when the queue has no room for all
        of them, 503 while stopping.
    """
    for ids, params in jobs:
      self.check(ids, params)
    deadline = time.monotonic() + (timeout_s or self.config.timeout_s)
    requests = []
    for ids, params in jobs:
      if params.seed is None:
        params = dataclasses.replace(params, seed=int.from_bytes(os.urandom(4), "little"))
      requests.append(Request(ids, params, deadline))
    with self._lock:
      if self._stopping:
        raise ServeError("the server is shutting down", 503, "server_error")
      if len(self._waiting) + len(requests) > self.config.max_queue:
        self.counters["rejected"] += len(requests)
        raise ServeError(f"server busy: {len(self._waiting)} requests waiting (queue size "
                         f"{self.config.max_queue}); retry later", 429, "rate_limit_error")
      self._waiting.extend(requests)
      self._lock.notify_all()
    return requests

  def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Request:
    """Submits and waits; returns the finished request (`output_ids`, `finish_reason`)."""
    request = self.submit(prompt_ids, params)
    request.text()
    return request

  def stats(self) -> dict[str, Any]:
    """Counters and current occupancy (for `/health` and benchmarks)."""
    with self._lock:
      waiting = len(self._waiting)
    return {"active": sum(s is not None for s in self._slots), "waiting": waiting,
            "slots": self.config.num_slots, "cache_len": self._len, **self.counters}

  # ----------------------------------------------------------------------------------------
  # Engine thread.

  def _loop(self) -> None:
    while True:
      with self._lock:
        if self._stopping:
          return
        if not self._waiting and not any(self._slots):
          self._lock.wait(0.5)
          continue
      try:
        self._admit()
        self._expire()
        if self._pack or any(self._slots):
          self._step(self._pack)
        self._pack = []
      except Exception as e:  # pylint: disable=broad-except
        # A bug or a device failure: fail what is in flight rather than hang its clients.
        logger.exception("engine step failed")
        failure = ServeError(f"internal error: {type(e).__name__}: {e}", 500, "server_error")
        live = {id(slot.request) for slot in self._slots if slot is not None}
        taken = self._pack + ([self._admitting] if self._admitting is not None else [])
        for request in taken:  # (those already in a slot are failed below)
          if request.finish_reason is None and id(request) not in live:
            request._fail(failure)
        self._pack, self._admitting = [], None
        for b, slot in enumerate(self._slots):
          if slot is not None:
            slot.request._fail(failure)
            self._slots[b] = None
        self._alloc(self.config.min_cache_len)

  def _alloc(self, length: int) -> None:
    """A fresh empty cache (only when no slot is live)."""
    shrink = getattr(self, "_len", 0) > length
    self.cache = None  # free the old buffers first
    if shrink:
      _trim_heap()
    dtype = (self.config.kv_cache_dtype or self.model.compute_dtype
             or self.model.params["embed_tokens"]["embedding"].dtype)
    cache = decoder.init_cache(self.cfg, self.config.num_slots, length, dtype,
                               per_layer=decoder.cache_uses_layers(self.model.params))
    self.cache = self._place(cache)
    self.seen = jnp.zeros((self.config.num_slots, self.cfg.vocab_size), bool)
    self._len, self._end = length, 0

  def _place(self, cache):
    mesh = getattr(self.model, "mesh", None)
    return cache if mesh is None else sharding.shard(cache, decoder.cache_axes(cache), mesh)

  def _bucket_len(self, columns: int) -> int:
    """Cache length for `columns` live columns: a power of two with a quarter (at least 16)
    to spare. Every step attends over the whole length, and a shift copies it once per
    `length - columns` steps, so little headroom costs less than much."""
    return min(self._max_cache_len, max(self.config.min_cache_len,
                                        gen.bucket(columns + max(16, columns // 4))))

  def _saw(self, *key) -> None:
    self._shapes.add(key)
    self.counters["compiled_shapes"] = len(self._shapes)

  def _shift(self, delta: int, new_len: int) -> None:
    self._saw("relayout", self._len, new_len)
    shrink = new_len < self._len
    self.cache = self._place(_relayout(self.cache, jnp.int32(delta), new_len))
    if shrink:
      # Hand the longer cache's pages back, or the heap keeps the high-water mark of every
      # cache length served (+100 MB over a 5-minute soak moving between 256 and 512 columns).
      jax.block_until_ready(self.cache)
      _trim_heap()
    self._len, self._end = new_len, self._end + delta
    for slot in self._slots:
      if slot is not None:
        slot.start += delta
    self.counters["relayouts"] += 1

  def _room_for_prompt(self, tb: int) -> None:
    """Makes `end >= tb` (the prompt block ends at `end`) with a column left to decode into."""
    live = [s.start for s in self._slots if s is not None]
    if not live:
      want = self._bucket_len(tb + 1)
      if self._len != want:
        self._alloc(want)
      self._end = tb
      self.cache = self._place(dict(self.cache, end=jnp.asarray(tb, jnp.int32)))
    elif self._end < tb:
      # Shift every row right; live columns then end at tb.
      self._shift(tb - self._end, self._len if self._len > tb else self._bucket_len(tb + 1))

  def _room_for_step(self) -> None:
    if self._end < self._len:
      return
    oldest = min(s.start for s in self._slots if s is not None)
    self._shift(-oldest, self._bucket_len(self._end - oldest + 1))

  def _admit(self) -> None:
    """Fills free slots from the queue, in arrival order: prompts longer than
    `mixed_prefill_tokens` (all of them when it is 0) are prefilled now, alone; shorter ones
    go to `self._pack`, as many as fit in one packed block, to be prefilled inside the next
    step. A short prompt that does not fit waits for the next block, and so does everything
    behind it."""
    width = self._width
    pack = self._pack  # filled in place, so a failure below still fails these requests
    used = 0
    while self._slots.count(None) > len(pack):
      with self._lock:
        if not self._waiting:
          break
        request = self._waiting[0]
        n = len(request.prompt_ids)
        short = n <= width
        if short and (used + n > width or len(pack) == self._max_pack):
          break
        self._waiting.popleft()
      if request.cancelled:
        continue
      if time.monotonic() > request.deadline:
        request._fail(ServeError("request timed out while waiting for a slot", 504, "timeout"))
        continue
      if short:
        pack.append(request)
        used += n
      else:
        self._admitting = request  # failed by `_loop` if its prefill raises
        self._prefill_into(self._slots.index(None), request)
        self._admitting = None

  def _prefill_into(self, b: int, request: Request) -> None:
    t0 = time.perf_counter()
    p = request.params
    n = len(request.prompt_ids)
    tokens, mask = self._prompt_arrays(request.prompt_ids)
    tb = tokens.shape[1]
    self._saw("prefill", tb)
    logits, new, seen = _prefill(self.model.params, tokens, mask, self.cfg,
                                 self.model.compute_dtype, self.config.kv_cache_dtype)
    self._temperature[b], self._top_p[b], self._top_k[b] = p.temperature, p.top_p, p.top_k
    self._penalty[b], self._seeds[b], self._counters[b] = p.repetition_penalty, p.seed, 0
    token, seen = self._sample(logits, seen, [b])
    self._room_for_prompt(tb)
    self._saw("insert", self._len, tb)
    self.cache, self.seen = _insert(self.cache, self.seen, new, seen, jnp.int32(b))
    self._slots[b] = _Slot(request, self._end - n, 1)
    self._tokens[b] = int(token[0])
    self.counters["prefills"] += 1
    self.counters["prefill_tokens"] += n
    self.counters["prefill_seconds"] += time.perf_counter() - t0
    self._emit(b, int(token[0]))

  @staticmethod
  def _prompt_arrays(ids: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """A prompt left-padded to its bucket: `[1, Tb]` tokens and mask."""
    n = len(ids)
    tb = prompt_bucket(n)
    tokens = np.zeros((1, tb), np.int32)
    mask = np.zeros((1, tb), bool)
    tokens[0, tb - n:] = ids
    mask[0, tb - n:] = True
    return jnp.asarray(tokens), jnp.asarray(mask)

  def _sample(self, logits, seen, rows: Sequence[int]):
    r = np.asarray(rows)
    temp = self._temperature[r]
    sampled = temp > 0
    return sample_rows(
        logits, seen, temp, self._top_p[r], self._top_k[r], self._penalty[r], self._seeds[r],
        self._counters[r], greedy_only=not sampled.any(),
        filtered=bool(np.any(sampled & ((self._top_k[r] > 0) | (self._top_p[r] < 1)))),
        penalized=bool(np.any(self._penalty[r] != 1)))

  def _expire(self) -> None:
    now = time.monotonic()
    for b, slot in enumerate(self._slots):
      if slot is None:
        continue
      if slot.request.cancelled:
        self._slots[b] = None
      elif now > slot.request.deadline:
        slot.request._fail(ServeError("request timed out", 504, "timeout"))
        self._slots[b] = None

  def _step(self, pack: Sequence[Request] = ()) -> None:
    """One decode step for the live slots, with `pack`'s prompts prefilled inside it."""
    t0 = time.perf_counter()
    self._room_for_step()
    if pack:
      # The block's W-column window must end at the new `end` (= end + 1).
      self._room_for_prompt(self._width - 1)
    active = np.array([s is not None for s in self._slots])
    if pack:
      block = self._pack_block([r.prompt_ids for r in pack])
      self._saw("decode_prefill", self._len)
      logits, self.cache, plogits, kv = _decode_prefill(
          self.model.params, jnp.asarray(self._tokens), jnp.asarray(active), self.cache,
          block, self.cfg, self.model.compute_dtype)
    else:
      self._saw("decode", self._len)
      logits, self.cache = _decode(self.model.params, jnp.asarray(self._tokens),
                                   jnp.asarray(active), self.cache, self.cfg,
                                   self.model.compute_dtype)
    self._end += 1
    self._counters[:] = [s.sampled if s is not None else 0 for s in self._slots]
    rows = np.arange(self.config.num_slots)
    tokens, self.seen = self._sample(logits, self.seen, rows)
    tokens = np.asarray(tokens)
    self.counters["steps"] += 1
    self.counters["step_rows"] += int(active.sum())
    if not pack:
      self.counters["decode_seconds"] += time.perf_counter() - t0
    for b in np.flatnonzero(active):
      self._slots[b].sampled += 1
      self._tokens[b] = tokens[b]
      self._emit(int(b), int(tokens[b]))
    if pack:
      self._start_packed(pack, plogits, kv)
      self.counters["decode_seconds"] += time.perf_counter() - t0

  def _pack_block(self, prompts: Sequence[Sequence[int]]) -> dict[str, jax.Array]:
    """The packed prefill block of `prompts`: `[1, W]` tokens, segment ids (1, 2, ...; 0 on
    padding) and positions, and `[max_pack]` last columns (unused ones repeat)."""
    width = self._width
    tokens = np.zeros((1, width), np.int32)
    segments = np.zeros((1, width), np.int32)
    positions = np.zeros((1, width), np.int32)
    last = np.zeros(self._max_pack, np.int32)
    at = 0
    for j, ids in enumerate(prompts):
      n = len(ids)
      tokens[0, at:at + n] = ids
      segments[0, at:at + n] = j + 1
      positions[0, at:at + n] = np.arange(n)
      last[j:] = at + n - 1
      at += n
    return {"tokens": jnp.asarray(tokens), "segments": jnp.asarray(segments),
            "positions": jnp.asarray(positions), "last": jnp.asarray(last)}

  def _start_packed(self, pack: Sequence[Request], plogits: jax.Array, kv: Any) -> None:
    """Samples the first token of each prompt of the step's block and moves its keys and
    values into a free slot, ending at the current column."""
    slots = [b for b, s in enumerate(self._slots) if s is None][:len(pack)]
    seen = np.zeros((len(pack), self.cfg.vocab_size), bool)
    for j, (b, request) in enumerate(zip(slots, pack)):
      p = request.params
      self._temperature[b], self._top_p[b], self._top_k[b] = p.temperature, p.top_p, p.top_k
      self._penalty[b], self._seeds[b], self._counters[b] = p.repetition_penalty, p.seed, 0
      seen[j, request.prompt_ids] = True
    tokens, seen = self._sample(plogits[:len(pack)], jnp.asarray(seen), slots)
    tokens = np.asarray(tokens)
    self._saw("insert_packed", self._len)
    at = 0
    for j, (b, request) in enumerate(zip(slots, pack)):
      n = len(request.prompt_ids)
      self.cache, self.seen = _insert_packed(self.cache, self.seen, kv, seen[j:j + 1],
                                             jnp.int32(b), jnp.int32(at), jnp.int32(n))
      at += n
      self._slots[b] = _Slot(request, self._end - n, 1)
      self._tokens[b] = int(tokens[j])
      self.counters["prefills"] += 1
      self.counters["packed_prefills"] += 1
      self.counters["prefill_tokens"] += n
      self._emit(b, int(tokens[j]))

  def _emit(self, b: int, token: int) -> None:
    """Appends one sampled token to slot b's request, sends stable new text, finishes it."""
    request = self._slots[b].request
    p = request.params
    if token in self._eos:
      self._close(b, "stop", self._decode_text(request))
      return
    request.output_ids.append(token)
    self.counters["tokens"] += 1
    text = self._decode_text(request)
    cuts = [i for i in (text.find(s, max(len(request._sent) - len(s), 0)) for s in p.stop)
            if i >= 0]
    if cuts:
      self._close(b, "stop", text[:min(cuts)])
    elif len(request.output_ids) >= p.max_tokens:
      self._close(b, "length", text)
    elif not text.endswith("\ufffd"):
      # Hold back what could still become the start of a stop string.
      hold = max((len(s) - 1 for s in p.stop), default=0)
      stable = text[:len(text) - hold] if hold else text
      if len(stable) > len(request._sent) and stable.startswith(request._sent):
        request._put_text(stable[len(request._sent):])

  def _decode_text(self, request: Request) -> str:
    return self.model.tokenizer.decode(request.output_ids, skip_special_tokens=True)

  def _close(self, b: int, reason: str, text: str) -> None:
    request = self._slots[b].request
    if text.startswith(request._sent):
      request._put_text(text[len(request._sent):])
    request._finish(reason)
    self._slots[b] = None
