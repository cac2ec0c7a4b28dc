r"""Weight-only quantization of SmolLM2: size, perplexity and decode speed vs float32.

  python -m bench.bench_quant [--model=x.gguf] [--eval_docs=8] [--calib_rows=16]
      [--calib_len=256] [--new_tokens=32] [--noact_order]

Variants: float32, int8 RTN, int8 GPTQ, int4 RTN, int4 GPTQ (group 128), all from the same
float32 weights (the embedded SmolLM2's GGUF, dequantized), layer-stack kernels quantized,
embedding (= tied head) float.

Data: `../shared/data/llamafactory/data/c4_demo.jsonl` (300 C4 documents). GPTQ calibrates on
`calib_rows` rows of `calib_len` tokens cut from the first documents (the paper calibrates on
C4 too); perplexity is over the last `eval_docs` documents (disjoint from calibration),
windows of `max_length` tokens every `stride` (`swiftjax.eval.perplexity`).

Decode: greedy `swiftjax.generate`, batch 1, a 16-token prompt; rate = (N - 1) / (t(N new
tokens) - t(1 new token)), best of `repeats` (excludes prefill, as bench_decode).
Sizes: bytes of the quantized kernels (codes + scales + zeros) and of all parameters.
"""

import dataclasses
import json
import os
import pathlib
import time

# GPTQ's Cholesky runs in LAPACK (OpenBLAS). On a small shared CPU its threads spin against
# each other (measured here: 4.3 s vs 0.17 s for one 1536 x 1536 Cholesky); one thread is
# enough for these sizes. Set before numpy and jax load OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app
from absl import flags

from bench import timing
import jax

_MODEL = flags.DEFINE_string("model", None,
                             "GGUF file or HF directory (default: the embedded SmolLM2).")
_DATA = flags.DEFINE_string(
    "data", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "llamafactory"
                / "data" / "c4_demo.jsonl"), "JSONL of {'text': ...} documents.")
_EVAL_DOCS = flags.DEFINE_integer("eval_docs", 8, "Last documents scored for perplexity.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 512, "Perplexity window.")
_STRIDE = flags.DEFINE_integer("stride", 512, "Perplexity window step.")
_CALIB_ROWS = flags.DEFINE_integer("calib_rows", 16, "GPTQ calibration rows.")
_CALIB_LEN = flags.DEFINE_integer("calib_len", 256, "Tokens per calibration row.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 32, "Tokens decoded for the decode rate.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed decode repeats (best is kept).")
_ACT_ORDER = flags.DEFINE_bool("act_order", True, "GPTQ with act-order (static groups).")
_OUT_JSON = flags.DEFINE_string("out_json", None, "Write the results here too.")


def decode_rate(params, cfg, prompt, new_tokens, repeats):
  from swiftjax import generate as gen  # pylint: disable=g-import-not-at-top

  def run(n):
    return gen.generate(params, cfg, [prompt], gen.SamplingConfig(max_new_tokens=n),
                        eos_ids=[-1])
  t1 = timing.best_time(lambda: run(1), repeats)
  tn = timing.best_time(lambda: run(new_tokens), repeats)
  return (new_tokens - 1) / (tn - t1)


def main(argv):
  del argv
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax import quantize  # pylint: disable=g-import-not-at-top
  from swiftjax.eval import perplexity  # pylint: disable=g-import-not-at-top
  from swiftjax.eval import readers  # pylint: disable=g-import-not-at-top

  model = infer.load(_MODEL.value)
  cfg = model.cfg
  texts = [json.loads(line)["text"] for line in open(_DATA.value, encoding="utf-8")]
  eval_docs = [readers.Document(f"{_DATA.value}:{len(texts) - _EVAL_DOCS.value + i + 1}", text=t)
               for i, t in enumerate(texts[-_EVAL_DOCS.value:])]
  calib = quantize.calibration_tokens(model.tokenizer, texts[:-_EVAL_DOCS.value],
                                      num_samples=_CALIB_ROWS.value, seq_len=_CALIB_LEN.value)
  prompt = [int(t) for t in calib[0, :16]]
  print(f"machine: {jax.devices()[0].device_kind}; model {model.path}; perplexity over the last "
        f"{_EVAL_DOCS.value} documents of {_DATA.value}; GPTQ calibration {calib.shape[0]} x "
        f"{calib.shape[1]} tokens from the first documents; act_order={_ACT_ORDER.value}",
        flush=True)

  variants = [("float32", None, None), ("int8 RTN", "rtn", 8), ("int8 GPTQ", "gptq", 8),
              ("int4 RTN", "rtn", 4), ("int4 GPTQ", "gptq", 4)]
  results = []
  for name, method, bits in variants:
    t = time.perf_counter()
    params = model.params if method is None else quantize.quantize_model(
        model.params, cfg, method, bits, 128, calib if method == "gptq" else None,
        act_order=_ACT_ORDER.value)
    jax.block_until_ready(params)
    quant_s = time.perf_counter() - t
    layers = quantize.weight_bytes(params["layers"])
    total = quantize.weight_bytes(params)
    t = time.perf_counter()
    metrics, _ = perplexity.perplexity(dataclasses.replace(model, params=params), eval_docs,
                                       max_length=_MAX_LENGTH.value, stride=_STRIDE.value,
                                       batch_size=4)
    ppl_s = time.perf_counter() - t
    rate = decode_rate(params, cfg, prompt, _NEW_TOKENS.value, _REPEATS.value)
    r = dict(variant=name, layer_bytes=layers, total_bytes=total, ppl=metrics["ppl"],
             tokens=metrics["tokens"], decode_tok_s=rate, quantize_s=quant_s, ppl_s=ppl_s)
    results.append(r)
    print(json.dumps(r), flush=True)
    del params

  base = results[0]
  print(f"\n{'variant':<11}{'layers MB':>10}{'x':>6}{'total MB':>10}{'ppl':>9}{'dppl':>8}"
        f"{'decode tok/s':>14}{'x':>6}{'quantize s':>12}")
  for r in results:
    print(f"{r['variant']:<11}{r['layer_bytes'] / 1e6:>10.1f}"
          f"{base['layer_bytes'] / r['layer_bytes']:>6.2f}{r['total_bytes'] / 1e6:>10.1f}"
          f"{r['ppl']:>9.3f}{r['ppl'] - base['ppl']:>+8.3f}{r['decode_tok_s']:>14.1f}"
          f"{r['decode_tok_s'] / base['decode_tok_s']:>6.2f}{r['quantize_s']:>12.1f}")
  print(f"(perplexity over {base['tokens']} scored tokens)")
  if _OUT_JSON.value:
    pathlib.Path(_OUT_JSON.value).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
