r"""Evaluate an LLM (the embedded SmolLM2-135M-Instruct by default) on one dataset.

  python -m launch.eval --eval_dataset=arc_easy:../shared/data/eval_llm_adapters/dataset/ARC-Easy \
      --limit=200
  python -m launch.eval --eval_dataset=mmlu:../shared/data/mmlu_qlora/zero_shot_mmlu_val.json
  python -m launch.eval --eval_dataset=gsm8k:../shared/data/gsm8k/test.jsonl --limit=50 \
      --max_new_tokens=256 --output=gsm8k.json
  python -m launch.eval --eval_dataset=ppl:notes.txt --max_length=512 --stride=256
  python -m launch.eval --eval_dataset=toolbench:refs.jsonl --agent_template=react \
      --max_new_tokens=128
  python -m launch.eval --eval_dataset=toolbench:refs.jsonl --predictions=preds.jsonl
  python -m launch.eval --eval_dataset=toolbench:refs.jsonl --adapters=output/sft/adapter

Kinds: see `swiftjax.evaluate.KINDS`. With `--predictions` (toolbench) no model is loaded: the
file's `{"response": ...}` lines are scored against the references, so any system's outputs
can be compared. The metrics are printed as one JSON object on the last line of stdout;
`--output` also gets the per-item records.
"""

import json
import pathlib
import sys
import time

from absl import flags

from launch import common

_EVAL_DATASET = flags.DEFINE_string(
    "eval_dataset", None, "KIND:PATH, KIND one of arc_easy, arc_challenge, openbookqa, "
    "social_iqa, piqa, boolq, winogrande, mmlu, gsm8k, ppl, toolbench; a directory means its "
    "test.json.",
    required=True)
_MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id; "
                             "default: the embedded SmolLM2-135M-Instruct.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate the first N items only (0: all).",
                              lower_bound=0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Rows (or prompts) per step.",
                                   lower_bound=1)
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Generation budget (gsm8k, "
                                       "toolbench).",
                                       lower_bound=1)
_MAX_LENGTH = flags.DEFINE_integer("max_length", 0, "Longest scored row, or the perplexity "
                                   "window (0: the model's context; 1024 for ppl).",
                                   lower_bound=0)
_STRIDE = flags.DEFINE_integer("stride", 0, "Perplexity window step (0: max_length / 2).",
                               lower_bound=0)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
_ADAPTERS = flags.DEFINE_string("adapters", None, "PEFT LoRA adapter directory to apply (e.g. "
                                "a launch.sft run's adapter/).")
_MERGE = flags.DEFINE_bool("merge_lora", True, "Fold --adapters into the weights.")
_OUTPUT = flags.DEFINE_string("output", None, "Write {metrics, records} as JSON here.")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "toolbench: score this JSONL file "
                                   "({\"response\": ...} per reference, in order) instead of "
                                   "generating; no model is loaded.")
_AGENT_TEMPLATE = flags.DEFINE_enum("agent_template", "react", ["react", "toolbench", "hermes"],
                                    "toolbench: how prompts render tools and calls.")
_MESH = common.define_mesh_flags()
_UNSTACK = common.define_unstack_flag(False)


def main(argv):
  del argv
  from swiftjax import errors  # pylint: disable=g-import-not-at-top
  from swiftjax import evaluate  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  kind, _ = evaluate.parse_spec(_EVAL_DATASET.value)  # Fails before loading the model.
  if _PREDICTIONS.value and kind != "toolbench":
    raise errors.ConfigError(f"--predictions is for --eval_dataset=toolbench:..., not {kind}")
  options = evaluate.Options(limit=_LIMIT.value or None, batch_size=_BATCH_SIZE.value,
                             max_new_tokens=_MAX_NEW_TOKENS.value,
                             max_length=_MAX_LENGTH.value or None, stride=_STRIDE.value or None,
                             agent_template=_AGENT_TEMPLATE.value)
  start = time.time()
  model = None if _PREDICTIONS.value else infer.load(
      _MODEL.value, dtype=_DTYPE.value, mesh=common.mesh_from_flags(_MESH),
      adapters=_ADAPTERS.value, merge=_MERGE.value,
      unstack=_UNSTACK.value)
  loaded = time.time()
  last = [0.0]

  def progress(done, total):
    if time.time() - last[0] > 10 or done == total:
      last[0] = time.time()
      print(f"eval: {done}/{total} ({time.time() - loaded:.0f}s)", file=sys.stderr, flush=True)

  result = evaluate.evaluate(model, _EVAL_DATASET.value, options, progress=progress,
                             predictions=_PREDICTIONS.value)
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
