r"""What the serving engine's memory is made of: compiled shapes vs KV cache, float32 vs bfloat16.

  python -m bench.bench_engine_memory --mode=shapes      # RSS as prompt lengths vary
  python -m bench.bench_engine_memory --mode=kv_dtype    # float32 vs bfloat16 KV cache

Drives `swiftjax.serve.engine.Engine` directly (no HTTP) on the embedded SmolLM2-135M-Instruct
(or --model), 16 slots, --max_seq_len 2048, prompts of random token ids (seeded).

- `shapes`: --num_lengths prompt lengths log-uniform in [5, --max_prompt], 3 greedy tokens each,
  in groups of 6; after each group prints the engine's compiled-shape count, the jitted functions'
  executable counts and the resident memory; at the end clears the prefill / insert / relayout
  executables (`clear_cache()`) and prints what that gave back.
- `kv_dtype`: 16 prompts of 400-900 tokens, 48 greedy tokens each, with the cache in the compute
  dtype and in bfloat16, each twice (the second pass is compiled): cache bytes, decode tokens/s
  (the engine's own decode time), and how many greedy tokens agree.
"""

import gc
import time

from absl import app
from absl import flags
import jax
import numpy as np

_MODE = flags.DEFINE_enum("mode", "kv_dtype", ["shapes", "kv_dtype"], "What to measure.")
_MODEL = flags.DEFINE_string("model", None, "Model (default: the embedded SmolLM2).")
_MAX_SEQ_LEN = flags.DEFINE_integer("max_seq_len", 2048, "Engine max_seq_len.")
_NUM_LENGTHS = flags.DEFINE_integer("num_lengths", 60, "shapes: prompt lengths drawn.")
_MAX_PROMPT = flags.DEFINE_integer("max_prompt", 1500, "shapes: longest prompt drawn.")


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


def main(argv):
  del argv
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax.serve import engine as engine_lib  # pylint: disable=g-import-not-at-top
  model = infer.load(_MODEL.value)
  (_shapes if _MODE.value == "shapes" else _kv_dtype)(model, engine_lib)


if __name__ == "__main__":
  app.run(main)
