r"""Export a model with its adapters merged: a Hugging Face directory, optionally a GGUF file.

  python -m launch.export --output_dir=/tmp/smollm2-hf
  python -m launch.export --output_dir=out --adapters=runs/sft/adapter --to_gguf=q8_0
  python -m launch.export --model=path/to/hf_dir --output_dir=out --dtype=bfloat16 \
      --max_shard_size=2GB --to_gguf=f16 --overwrite

`out/` gets config.json, model.safetensors (or shards + index), generation_config.json, the
tokenizer files and, with --to_gguf, model-{f16,q8_0}.gguf. Everything is written beside
--output_dir first and renamed into place at the end. The written files are printed as one
JSON object on the last line of stdout.
"""

import json
import sys
import time

from absl import flags

from launch import common

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write (must not exist or "
                                  "be empty, unless --overwrite).", required=True)
_MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id; "
                             "default: the embedded SmolLM2-135M-Instruct.")
_ADAPTERS = flags.DEFINE_multi_string("adapters", [], "PEFT adapter directory to merge "
                                      "(repeatable; merged in order).")
_TO_GGUF = flags.DEFINE_enum("to_gguf", None, ["f16", "q8_0", "f32"],
                             "Also write a llama.cpp GGUF file of this type.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                           "dtype of the safetensors weights.")
_MAX_SHARD_SIZE = flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors file "
                                      "(e.g. 5GB, 500MB); larger models are sharded.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty --output_dir.")


def main(argv):
  del argv
  from swiftjax import export  # pylint: disable=g-import-not-at-top
  start = time.time()

  def progress(line):
    print(f"export: {line} ({time.time() - start:.0f}s)", file=sys.stderr, flush=True)

  result = export.export(_OUTPUT_DIR.value, _MODEL.value, _ADAPTERS.value, dtype=_DTYPE.value,
                         to_gguf=_TO_GGUF.value, max_shard_size=_MAX_SHARD_SIZE.value,
                         overwrite=_OVERWRITE.value, progress=progress)
  for w in result.warnings:
    print(f"warning: {w}", file=sys.stderr)
  print(json.dumps({"output_dir": str(result.output_dir), "files": result.files,
                    "gguf_file": str(result.gguf_file) if result.gguf_file else None,
                    "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
  common.run(main)
