r"""Prefill and decode speed of swiftjax vs transformers (PyTorch) on the same SmolLM2 weights.

  python -m bench.bench_decode [--model=x.gguf] [--new_tokens=64] [--prompt_len=128]

Both sides load the same GGUF (dequantized to float32); prompts and greedy decoding are the
same. Decode rate excludes prefill: rate = (N - 1) * batch / (t(N new tokens) - t(1 new token)).
It also measures the machine's read bandwidth (a jitted sum over a 512 MB array) and prints the
bandwidth bound for batch-1 decode: weight bytes read per step / bandwidth. On the 2-core VM
this was written on, the bandwidth moves between ~36 and ~66 GB/s with the machine's state
(not with the buffer), so it is measured over several fresh buffers and the bound is printed
for the slowest and the fastest.
Peak host memory of loading is measured in a fresh subprocess (VmHWM after the load minus VmRSS
before it).
"""

import json
import subprocess
import sys

from absl import app
from absl import flags

from bench import timing
import jax
import jax.numpy as jnp
import numpy as np

_MODEL = flags.DEFINE_string("model", None, "GGUF file (default: the embedded SmolLM2).")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "Tokens to decode per row.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 128, "Prompt length for prefill.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (best is kept).")
_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch threads (0: torch's default).")


def read_bandwidth_gbs(repeats: int = 5, buffers: int = 6) -> list[float]:
  """GB/s of a jitted sum over a 512 MB array, best of `repeats`, for each of `buffers`
  freshly allocated arrays (sorted)."""
  f = jax.jit(jnp.sum)
  out = []
  for i in range(buffers):
    x = jnp.full((512 * 2**20 // 4,), i, jnp.float32)
    out.append(x.nbytes / timing.best_time(lambda x=x: f(x).block_until_ready(), repeats) / 1e9)
    x.delete()
  return sorted(out)


def _load_peak_subprocess(path: str, dtype: str) -> dict:
  code = f"""
import json
from swiftjax import models
import jax
import jax.numpy as jnp
jnp.zeros(1).block_until_ready()  # backend up before the baseline

def status(key):
  for line in open("/proc/self/status"):
    if line.startswith(key + ":"):
      return int(line.split()[1]) * 1024

before = status("VmRSS")
cfg, params = models.from_pretrained({path!r}, dtype={dtype!r})
jax.block_until_ready(params)
peak = status("VmHWM")
nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
print(json.dumps(dict(growth=peak - before, weights=nbytes)))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def swiftjax_rates(path, prompts, new_tokens, repeats, dtype, unstack=True):
  """Rates as `launch.infer` runs: bf16 on CPU is stored packed and computed in f32;
  `int8` is float32 with every kernel quantized to per-channel int8; layers unstacked
  (`decoder.unstack_layers`) unless `unstack=False` (the layer scan over stacked weights)."""
  from swiftjax import generate as gen  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax import int8  # pylint: disable=g-import-not-at-top
  from swiftjax.models import decoder  # pylint: disable=g-import-not-at-top
  model = infer.load(path, dtype="float32" if dtype == "int8" else dtype)
  cfg, params, cdt = model.cfg, model.params, model.compute_dtype
  if dtype == "int8":
    # Stored output-major, as `infer.load` stores an int8 checkpoint on a CPU.
    params = int8.output_major(int8.quantize_params(params), donate=True)
  if unstack:
    params = decoder.unstack_layers(params, donate=True)
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  res = {"weight_bytes": weight_bytes}
  jax.block_until_ready(params)
  tokens = jnp.asarray(prompts[:1])
  fwd = jax.jit(lambda p, t: decoder.apply(p, t, cfg, compute_dtype=cdt))
  t = timing.best_time(lambda: fwd(params, tokens)[0].block_until_ready(), repeats)
  res["prefill_tok_s"] = tokens.size / t
  for batch in (1, 8):
    rows = [list(p[:16]) for p in prompts[:batch]]

    def run(n, rows=rows):
      return gen.generate(params, cfg, rows, gen.SamplingConfig(max_new_tokens=n), eos_ids=[-1],
                          compute_dtype=cdt)

    t1 = timing.best_time(lambda: run(1), repeats)
    tn = timing.best_time(lambda: run(new_tokens), repeats)
    res[f"decode_b{batch}_tok_s"] = (new_tokens - 1) * batch / (tn - t1)
  return res


def transformers_rates(path, prompts, new_tokens, repeats):
  import pathlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  p = pathlib.Path(path)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(p.parent), gguf_file=p.name, dtype=torch.float32).eval()
  res = {"torch_threads": torch.get_num_threads()}
  tokens = torch.as_tensor(prompts[:1])
  with torch.inference_mode():
    t = timing.best_time(lambda: model(tokens), repeats)
    res["prefill_tok_s"] = tokens.numel() / t
    for batch in (1, 8):
      rows = torch.as_tensor([list(p[:16]) for p in prompts[:batch]])

      def run(n, rows=rows):
        model.generate(rows, attention_mask=torch.ones_like(rows), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, pad_token_id=0)

      t1 = timing.best_time(lambda: run(1), repeats)
      tn = timing.best_time(lambda: run(new_tokens), repeats)
      res[f"decode_b{batch}_tok_s"] = (new_tokens - 1) * batch / (tn - t1)
  return res


def main(argv):
  del argv
  from swiftjax import assets  # pylint: disable=g-import-not-at-top
  path = str(_MODEL.value or assets.default_model_path())
  rng = np.random.default_rng(0)
  prompts = rng.integers(100, 40000, (8, _PROMPT_LEN.value)).tolist()
  bws = read_bandwidth_gbs()
  print(f"machine: {jax.devices()[0].device_kind}, {jax.device_count()} device(s); "
        f"read bandwidth {bws[0]:.1f}-{bws[-1]:.1f} GB/s (jitted sum over 512 MB; "
        f"{len(bws)} buffers: {', '.join(f'{b:.1f}' for b in bws)})")
  sj32 = swiftjax_rates(path, prompts, _NEW_TOKENS.value, _REPEATS.value, "float32")
  sj16 = swiftjax_rates(path, prompts, _NEW_TOKENS.value, _REPEATS.value, "bfloat16")
  sj8 = swiftjax_rates(path, prompts, _NEW_TOKENS.value, _REPEATS.value, "int8")
  stacked = swiftjax_rates(path, prompts, _NEW_TOKENS.value, _REPEATS.value, "float32",
                           unstack=False)
  hf = transformers_rates(path, prompts, _NEW_TOKENS.value, _REPEATS.value)
  print(f"\n{'metric':<22}{'swiftjax fp32':>15}{'transformers':>15}{'ratio':>8}"
        f"{'swiftjax bf16':>15}{'swiftjax int8':>15}{'fp32 stacked':>15}")
  for key in ("prefill_tok_s", "decode_b1_tok_s", "decode_b8_tok_s"):
    print(f"{key:<22}{sj32[key]:>15.1f}{hf[key]:>15.1f}{sj32[key] / hf[key]:>7.2f}x"
          f"{sj16[key]:>15.1f}{sj8[key]:>15.1f}{stacked[key]:>15.1f}")
  print("(fp32 stacked: the same float32 weights run by the layer scan over stacked arrays, "
        "as training does)")
  for name, r in (("fp32", sj32), ("bf16", sj16), ("int8", sj8)):
    lo, hi = (bw * 1e9 / r["weight_bytes"] for bw in (bws[0], bws[-1]))
    rate = r["decode_b1_tok_s"]
    print(f"batch-1 decode {name}: {rate:.1f} tok/s; bandwidth bound {lo:.1f}-{hi:.1f} tok/s "
          f"({r['weight_bytes'] / 1e6:.0f} MB of weights per step at {bws[0]:.1f}-{bws[-1]:.1f} "
          f"GB/s); {lo / rate:.2f}-{hi / rate:.2f}x from the bound")
  for dtype in ("float32", "bfloat16"):
    m = _load_peak_subprocess(path, dtype)
    print(f"load {dtype}: peak host memory growth {m['growth'] / 1e6:.0f} MB for "
          f"{m['weights'] / 1e6:.0f} MB of weights ({m['growth'] / m['weights']:.2f}x)")
  print(f"transformers ran with {hf['torch_threads']} torch threads")


if __name__ == "__main__":
  app.run(main)
