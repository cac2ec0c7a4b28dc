r"""The serving engine without HTTP: its memory (compiled shapes vs KV cache, float32 vs
bfloat16) and its closed-loop throughput under engine options.

  python -m bench.bench_engine --mode=shapes      # RSS as prompt lengths vary
  python -m bench.bench_engine --mode=kv_dtype    # float32 vs bfloat16 KV cache
  python -m bench.bench_engine --mode=closed_loop --mixed_prefill_tokens=64 --precompile_len=512

Drives `swiftjax.serve.engine.Engine` directly (no HTTP) on the embedded SmolLM2-135M-Instruct
(or --model), 16 slots, --max_seq_len 2048, prompts of random token ids (seeded).

- `shapes`: --num_lengths prompt lengths log-uniform in [5, --max_prompt], 3 greedy tokens each,
  in groups of 6; after each group prints the engine's compiled-shape count, the jitted functions'
  executable counts and the resident memory; at the end clears the prefill / insert / relayout
  executables (`clear_cache()`) and prints what that gave back.
- `kv_dtype`: 16 prompts of 400-900 tokens, 48 greedy tokens each, with the cache in the compute
  dtype and in bfloat16, each twice (the second pass is compiled): cache bytes, decode tokens/s
  (the engine's own decode time), and how many greedy tokens agree.
- `closed_loop`: --clients threads submit bench_deploy's chat prompts (alpaca instructions in
  the chat template, greedy, --max_tokens) back to back to an engine with --num_slots slots,
  --mixed_prefill_tokens and --precompile_len (the unstacked layers `launch.deploy` serves),
  after a 15 s warm-up; --repeats windows of --duration_s each. Per window: tokens/s with the
  drain after the window and within it, mean active slots within the window and in the
  drain, engine time split into decode steps (packed prefills included) and lone prefills,
  and how many executables serving compiled after the warm-up.
"""

import gc
import threading
import time

from absl import app
from absl import flags
import jax
import numpy as np

_MODE = flags.DEFINE_enum("mode", "kv_dtype", ["shapes", "kv_dtype", "closed_loop"],
                          "What to measure.")
_MODEL = flags.DEFINE_string("model", None, "Model (default: the embedded SmolLM2).")
_MAX_SEQ_LEN = flags.DEFINE_integer("max_seq_len", 2048, "Engine max_seq_len.")
_NUM_LENGTHS = flags.DEFINE_integer("num_lengths", 60, "shapes: prompt lengths drawn.")
_MAX_PROMPT = flags.DEFINE_integer("max_prompt", 1500, "shapes: longest prompt drawn.")
_CLIENTS = flags.DEFINE_integer("clients", 16, "closed_loop: client threads.")
_SLOTS = flags.DEFINE_integer("num_slots", 16, "closed_loop: engine slots.")
_DURATION = flags.DEFINE_float("duration_s", 40.0, "closed_loop: length of each window.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "closed_loop: windows.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64, "closed_loop: max_tokens per request.")
_MIXED = flags.DEFINE_integer("mixed_prefill_tokens", 0, "closed_loop: EngineConfig's.")
_PRECOMPILE = flags.DEFINE_integer("precompile_len", 0, "closed_loop: Engine.precompile's "
                                   "max_len before starting (0: none).")


def _rss_mb() -> float:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _shapes(model, engine_lib) -> None:
  eng = engine_lib.Engine(model, engine_lib.EngineConfig(
      num_slots=16, max_seq_len=_MAX_SEQ_LEN.value)).start()
  rng = np.random.default_rng(0)
  lengths = sorted({int(x) for x in np.exp(rng.uniform(
      np.log(5), np.log(_MAX_PROMPT.value), _NUM_LENGTHS.value))})
  print(f"start: rss {_rss_mb():.0f} MB", flush=True)
  t0 = time.time()
  greedy = engine_lib.SamplingParams(max_tokens=3, temperature=0.0)
  try:
    for i in range(0, len(lengths), 6):
      group = lengths[i:i + 6]
      for r in [eng.submit(rng.integers(100, 40000, size=n).tolist(), greedy) for n in group]:
        r.text()
      s = eng.stats()
      counts = {name: getattr(engine_lib, "_" + name)._cache_size()  # pylint: disable=W0212
                for name in ("prefill", "insert", "relayout", "decode")}
      print(f"{time.time() - t0:6.0f} s  prompts <= {group[-1]:5d}  shapes "
            f"{s['compiled_shapes']:3d}  executables {counts}  "
            f"cache columns {eng._len}  rss {_rss_mb():.0f} MB",  # pylint: disable=protected-access
            flush=True)
  finally:
    eng.stop()
  before = _rss_mb()
  for name in ("insert", "relayout", "prefill"):
    getattr(engine_lib, "_" + name).clear_cache()
  gc.collect()
  print(f"clearing prefill/insert/relayout executables: rss {before:.0f} -> {_rss_mb():.0f} MB")


def _kv_dtype(model, engine_lib) -> None:
  rng = np.random.default_rng(0)
  prompts = [rng.integers(100, 40000, size=int(n)).tolist()
             for n in rng.integers(400, 900, 16)]
  outputs = {}
  for dtype in (None, "bfloat16", None, "bfloat16"):
    eng = engine_lib.Engine(model, engine_lib.EngineConfig(
        num_slots=16, max_seq_len=_MAX_SEQ_LEN.value, kv_cache_dtype=dtype)).start()
    try:
      eng.generate(prompts[0][:50], engine_lib.SamplingParams(max_tokens=4, temperature=0.0))
      requests = [eng.submit(p, engine_lib.SamplingParams(max_tokens=48, temperature=0.0))
                  for p in prompts]
      outputs[dtype] = [(r.text(), r.output_ids)[1] for r in requests]
      s = eng.stats()
      nbytes = sum(x.nbytes for x in jax.tree.leaves((eng.cache["k"], eng.cache["v"])))
      columns = eng._len  # pylint: disable=protected-access
    finally:
      eng.stop()
    print(f"{dtype or 'compute':9s} cache {nbytes / 2**20:.0f} MiB at {columns} columns, "
          f"decode {s['decode_seconds']:.1f} s over {s['steps']} steps, "
          f"{s['tokens'] / s['decode_seconds']:.1f} tok/s", flush=True)
  pairs = [(a, b) for x, y in zip(outputs[None], outputs["bfloat16"]) for a, b in zip(x, y)]
  print(f"greedy tokens equal: {sum(a == b for a, b in pairs)} of {len(pairs)}")


def _closed_loop(model, engine_lib) -> None:
  from bench import chat_prompts  # pylint: disable=g-import-not-at-top
  from swiftjax import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  prompts = [tok_lib.encode(model.tokenizer, tok_lib.render_chat(model.tokenizer, text))
             for text in chat_prompts.prompts()]
  eng = engine_lib.Engine(model, engine_lib.EngineConfig(
      num_slots=_SLOTS.value, max_seq_len=1024, mixed_prefill_tokens=_MIXED.value))
  if _PRECOMPILE.value:
    t0 = time.perf_counter()
    count = eng.precompile(_PRECOMPILE.value)
    print(f"precompiled {count} programs in {time.perf_counter() - t0:.1f} s, rss "
          f"{_rss_mb():.0f} MB", flush=True)
  jitted = [getattr(engine_lib, name) for name in (
      "_prefill", "_insert", "_decode", "_decode_prefill", "_insert_packed", "_relayout")]
  # Active slots at the start of every step, with the time.
  occupancy = []
  step = engine_lib.Engine._step  # pylint: disable=protected-access

  def counted_step(self, pack=()):
    occupancy.append((time.perf_counter(), sum(s is not None for s in self._slots)))  # pylint: disable=protected-access
    return step(self, pack)

  engine_lib.Engine._step = counted_step  # pylint: disable=protected-access
  next_prompt = iter(range(10**9))
  lock = threading.Lock()
  greedy = engine_lib.SamplingParams(max_tokens=_MAX_TOKENS.value, temperature=0.0)

  def client(until, done):
    while time.perf_counter() < until:
      with lock:
        i = next(next_prompt)
      request = eng.submit(prompts[i % len(prompts)], greedy)
      request.text()
      done.append(len(request.output_ids))

  def window(seconds):
    done = []
    threads = [threading.Thread(target=client, args=(time.perf_counter() + seconds, done))
               for _ in range(_CLIENTS.value)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    return done

  eng.start()
  try:
    window(15.0)
    compiled = [f._cache_size() for f in jitted]  # pylint: disable=protected-access
    for r in range(_REPEATS.value):
      before, occupancy[:] = dict(eng.counters), []
      t0 = time.perf_counter()
      done = window(_DURATION.value)
      wall = time.perf_counter() - t0
      c = {k: eng.counters[k] - before[k] for k in before}
      inside = [a for t, a in occupancy if t < t0 + _DURATION.value]
      after = [a for t, a in occupancy if t >= t0 + _DURATION.value]
      print(f"window {r + 1}: {len(done)} requests, {sum(done)} tokens in {wall:.1f} s = "
            f"{sum(done) / wall:.1f} tok/s with the drain; mean active slots {np.mean(inside):.2f} "
            f"over {len(inside)} steps in the window, {np.mean(after or [0]):.2f} over "
            f"{len(after)} steps of drain ({wall - _DURATION.value:.1f} s); engine: decode "
            f"steps {c['decode_seconds']:.1f} s ({c['packed_prefills']} prompts packed into "
            f"them), lone prefills {c['prefill_seconds']:.1f} s ({c['prefills'] - c['packed_prefills']})",
            flush=True)
    print("executables compiled after the warm-up: "
          f"{sum(f._cache_size() for f in jitted) - sum(compiled)}")  # pylint: disable=protected-access
  finally:
    engine_lib.Engine._step = step  # pylint: disable=protected-access
    eng.stop()


def main(argv):
  del argv
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax.serve import engine as engine_lib  # pylint: disable=g-import-not-at-top
  model = infer.load(_MODEL.value, unstack=_MODE.value == "closed_loop")
  {"shapes": _shapes, "kv_dtype": _kv_dtype, "closed_loop": _closed_loop}[_MODE.value](
      model, engine_lib)


if __name__ == "__main__":
  app.run(main)
