r"""Evaluate an LLM (the embedded SmolLM2-135M-Instruct by default) on one dataset.

  python -m launch.eval --eval_dataset=arc_easy:../shared/data/eval_llm_adapters/dataset/ARC-Easy \
      --limit=200
  python -m launch.eval --eval_dataset=mmlu:../shared/data/mmlu_qlora/zero_shot_mmlu_val.json
  python -m launch.eval --eval_dataset=gsm8k:../shared/data/gsm8k/test.jsonl --limit=50 \
      --max_new_tokens=256 --output=gsm8k.json
  python -m launch.eval --eval_dataset=ppl:notes.txt --max_length=512 --stride=256

Kinds: see `swiftjax.evaluate.KINDS` (the ToolBench kind is added there too). The metrics are
printed as one JSON object on the last line of stdout; `--output` also gets the per-item records.
"""

import json
import pathlib
import sys
import time

from absl import flags

from launch import common

_EVAL_DATASET = flags.DEFINE_string(
    "eval_dataset", None, "KIND:PATH, KIND one of arc_easy, arc_challenge, openbookqa, "
    "social_iqa, piqa, boolq, winogrande, mmlu, gsm8k, ppl; a directory means its test.json.",
    required=True)
_MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id; "
                             "default: the embedded SmolLM2-135M-Instruct.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate the first N items only (0: all).",
                              lower_bound=0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Rows (or prompts) per step.",
                                   lower_bound=1)
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Generation budget (gsm8k).",
                                       lower_bound=1)
_MAX_LENGTH = flags.DEFINE_integer("max_length", 0, "Longest scored row, or the perplexity "
                                   "window (0: the model's context; 1024 for ppl).",
                                   lower_bound=0)
_STRIDE = flags.DEFINE_integer("stride", 0, "Perplexity window step (0: max_length / 2).",
                               lower_bound=0)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
_OUTPUT = flags.DEFINE_string("output", None, "Write {metrics, records} as JSON here.")
_MESH = common.define_mesh_flags()


def main(argv):
  del argv
  from swiftjax import errors  # pylint: disable=g-import-not-at-top
  from swiftjax import evaluate  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  evaluate.parse_spec(_EVAL_DATASET.value)  # A bad kind or path fails before loading the model.
  options = evaluate.Options(limit=_LIMIT.value or None, batch_size=_BATCH_SIZE.value,
                             max_new_tokens=_MAX_NEW_TOKENS.value,
                             max_length=_MAX_LENGTH.value or None, stride=_STRIDE.value or None)
  start = time.time()
  model = infer.load(_MODEL.value, dtype=_DTYPE.value, mesh=common.mesh_from_flags(_MESH))
  loaded = time.time()
  last = [0.0]

  def progress(done, total):
    if time.time() - last[0] > 10 or done == total:
      last[0] = time.time()
      print(f"eval: {done}/{total} ({time.time() - loaded:.0f}s)", file=sys.stderr, flush=True)

  result = evaluate.evaluate(model, _EVAL_DATASET.value, options, progress=progress)
  metrics = {**result.metrics, "load_s": round(loaded - start, 1),
             "eval_s": round(time.time() - loaded, 1)}
  if _OUTPUT.value:
    out = pathlib.Path(_OUTPUT.value)
    try:
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(json.dumps({"metrics": metrics, "records": result.records}, indent=1))
    except OSError as e:
      raise errors.SwiftJaxError(f"cannot write --output={out}: {e.strerror}") from None
  print(json.dumps(metrics))


if __name__ == "__main__":
  common.run(main)
