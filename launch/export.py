r"""Export a model with its adapters merged: a Hugging Face directory, optionally a GGUF file.

  python -m launch.export --output_dir=/tmp/smollm2-hf
  python -m launch.export --output_dir=out --adapters=runs/sft/adapter --to_gguf=q8_0
  python -m launch.export --model=path/to/hf_dir --output_dir=out --dtype=bfloat16 \
      --max_shard_size=2GB --to_gguf=f16 --overwrite
  python -m launch.export --output_dir=out-gptq --quant_method=gptq --quant_bits=4 \
      --calibration_dataset=data.jsonl --calibration_samples=16

`out/` gets config.json, model.safetensors (or shards + index), generation_config.json, the
tokenizer files and, with --to_gguf, model-{f16,q8_0}.gguf. Everything is written beside
--output_dir first and renamed into place at the end. The written files are printed as one
JSON object on the last line of stdout.

With --quant_method (rtn or gptq) the layer kernels are quantized (4 bits: asymmetric, groups of
--quant_group_size input rows; 8 bits: symmetric per output channel) and written in the GPTQ
checkpoint layout (`qweight`/`qzeros`/`scales`/`g_idx`, `quantization_config` in config.json)
that AutoGPTQ, GPTQModel, transformers + optimum and vLLM read; see swiftjax/export/quantized.py.
GPTQ calibrates on the texts of --calibration_dataset (.json list or .jsonl of records with
`text` or alpaca `instruction`/`input`/`output`), by default the alpaca demo in ../shared/data.
"""

import json
import os
import pathlib
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
_QUANT_METHOD = flags.DEFINE_enum("quant_method", None, ["rtn", "gptq"],
                                  "Quantize the layer kernels and write the GPTQ layout.")
_QUANT_BITS = flags.DEFINE_integer("quant_bits", 4, "4 (group-wise) or 8 (per channel).")
_QUANT_GROUP_SIZE = flags.DEFINE_integer("quant_group_size", 128, "Input rows per group "
                                         "(4 bits).")
_CALIBRATION_DATASET = flags.DEFINE_string(
    "calibration_dataset", None, "GPTQ calibration texts (.json or .jsonl); default: "
    "../shared/data/llamafactory/data/alpaca_en_demo.json when present.")
_CALIBRATION_SAMPLES = flags.DEFINE_integer("calibration_samples", 16, "GPTQ calibration rows "
                                            "of 256 tokens.")

_DEFAULT_CALIBRATION = ("llamafactory", "data", "alpaca_en_demo.json")


def _calibration_path() -> pathlib.Path:
  from swiftjax import errors  # pylint: disable=g-import-not-at-top
  if _CALIBRATION_DATASET.value:
    return pathlib.Path(_CALIBRATION_DATASET.value)
  roots = [os.environ.get("SWIFTJAX_SHARED_DATA"),
           pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"]
  for root in roots:
    if root and pathlib.Path(root, *_DEFAULT_CALIBRATION).is_file():
      return pathlib.Path(root, *_DEFAULT_CALIBRATION)
  raise errors.ConfigError("--quant_method=gptq needs calibration text: pass "
                           "--calibration_dataset=<file.json|file.jsonl> (the default "
                           f"../shared/data/{'/'.join(_DEFAULT_CALIBRATION)} is absent)")


def main(argv):
  del argv
  from swiftjax import export  # pylint: disable=g-import-not-at-top
  start = time.time()

  def progress(line):
    print(f"export: {line} ({time.time() - start:.0f}s)", file=sys.stderr, flush=True)

  quant_options = None
  if _QUANT_METHOD.value is not None:
    export.quantized.check_options(_QUANT_METHOD.value, _QUANT_BITS.value,
                                   _QUANT_GROUP_SIZE.value)
    quant_options = dict(bits=_QUANT_BITS.value, group_size=_QUANT_GROUP_SIZE.value)
    if _QUANT_METHOD.value == "gptq":
      quant_options.update(calibration_texts=export.quantized.read_texts(_calibration_path()),
                           calibration_samples=_CALIBRATION_SAMPLES.value)
  result = export.export(_OUTPUT_DIR.value, _MODEL.value, _ADAPTERS.value, dtype=_DTYPE.value,
                         to_gguf=_TO_GGUF.value, max_shard_size=_MAX_SHARD_SIZE.value,
                         overwrite=_OVERWRITE.value, quant_method=_QUANT_METHOD.value,
                         quant_options=quant_options, progress=progress)
  for w in result.warnings:
    print(f"warning: {w}", file=sys.stderr)
  print(json.dumps({"output_dir": str(result.output_dir), "files": result.files,
                    "gguf_file": str(result.gguf_file) if result.gguf_file else None,
                    "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
  common.run(main)
