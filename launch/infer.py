r"""Answer a prompt with an LLM (the embedded SmolLM2-135M-Instruct by default).

  python -m launch.infer --prompt="What is the capital of France?"
  python -m launch.infer --model=path/to/model.gguf --prompt="..." --temperature=0.7 --stream
  python -m launch.infer --adapters=output/sft/adapter --interactive
  python -m launch.infer --adapters=output/sft/adapter --merge_lora=false \
      --input_file=requests.jsonl --output_file=responses.jsonl --batch_size=8
  python -m launch.infer --model=path/to/llava-dir --images=a.jpg,b.jpg \
      --prompt="<image>What is in the first picture? <image>And in the second?"

Modes: one answer to --prompt (default); --interactive chat (streamed, with history; `clear`
starts over, `exit` or end of input stops); --input_file batch mode, one JSONL response row
per request (`{"prompt": ...}`, `{"query": ...}` or any dataset row; a trailing assistant
message is kept as `labels`). --adapters applies a PEFT LoRA directory, merged into the
weights unless --merge_lora=false.

Multimodal model directories (LLaVA-1.5, Idefics3 (SmolVLM), Qwen2-VL: see `swiftjax.mllm`) take
images: `--images` (comma-separated or repeated) fill the `<image>` placeholders of --prompt in
order; in batch mode each row's top-level `images` list fills its placeholders, as in
ms-swift's dataset format. --adapters takes what multimodal `launch.sft` wrote (the language
model's LoRA, plus the vision tower / projector when those were trained). --interactive is for
text models only.
"""

import sys

from absl import flags

from launch import common

_MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id; "
                             "default: the embedded SmolLM2-135M-Instruct.")
_PROMPT = flags.DEFINE_string("prompt", "What is the capital of France?", "User prompt.")
_SYSTEM = flags.DEFINE_string("system", None, "Optional system message.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Most tokens to generate.",
                                       lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 means greedy.", lower_bound=0.0)
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).",
                              lower_bound=0)
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.", lower_bound=0.0,
                            upper_bound=1.0)
_REPETITION_PENALTY = flags.DEFINE_float("repetition_penalty", 1.0,
                                         "Penalty > 1 discourages repeats.", lower_bound=0.0)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STREAM = flags.DEFINE_bool("stream", False, "Print tokens as they are generated.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop string (repeatable); the answer ends "
                                  "before it.")
_ADAPTERS = flags.DEFINE_string("adapters", None, "PEFT LoRA adapter directory to apply.")
_MERGE = flags.DEFINE_bool("merge_lora", True, "Fold --adapters into the weights (else keep "
                           "them separate: the base weights stay untouched).")
_INTERACTIVE = flags.DEFINE_bool("interactive", False, "Chat on stdin/stdout with history.")
_INPUT = flags.DEFINE_string("input_file", None, "JSON/JSONL requests to answer (batch mode).")
flags.DEFINE_alias("val_dataset", "input_file")
_OUTPUT = flags.DEFINE_string("output_file", None, "Batch mode: JSONL responses (default: "
                              "<input_file stem>.responses.jsonl beside it).")
flags.DEFINE_alias("result_path", "output_file")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch mode: requests per generate call.",
                              lower_bound=1)
_AGENT_TEMPLATE = flags.DEFINE_enum("agent_template", None, ["react", "toolbench", "hermes"],
                                    "Batch mode: render requests' tools with this template.")
_IMAGES = flags.DEFINE_multi_string("images", [], "Image files for the <image> placeholders "
                                     "of --prompt, in order (comma-separated or repeated; "
                                     "multimodal models only).")
_MESH = common.define_mesh_flags()
_UNSTACK = common.define_unstack_flag(False)


def main(argv):
  del argv
  import pathlib  # pylint: disable=g-import-not-at-top
  from swiftjax import errors  # pylint: disable=g-import-not-at-top
  from swiftjax import generate  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax import mllm  # pylint: disable=g-import-not-at-top
  from swiftjax.mllm import train as mllm_train  # pylint: disable=g-import-not-at-top
  if _INTERACTIVE.value and _INPUT.value:
    raise errors.ConfigError("--interactive and --input_file are different modes; pick one")
  sampling = generate.SamplingConfig(
      max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
      top_p=_TOP_P.value or 1.0, repetition_penalty=_REPETITION_PENALTY.value)
  images = [i for value in _IMAGES.value for i in value.split(",") if i]
  # A model directory with a vision side goes to swiftjax.mllm, which names an unsupported
  # family rather than failing to read it as a text model.
  if mllm_train.is_multimodal_dir(_MODEL.value):
    _multimodal(sampling, images)
    return
  if images:
    raise errors.ConfigError(
        f"--images needs a multimodal model directory ({', '.join(sorted(mllm.FAMILIES))}); "
        f"{_MODEL.value or 'the embedded SmolLM2-135M-Instruct'} is a text-only model")
  model = infer.load(_MODEL.value, dtype=_DTYPE.value, mesh=common.mesh_from_flags(_MESH),
                     adapters=_ADAPTERS.value, merge=_MERGE.value,
                     unstack=_UNSTACK.value)

  def stream(piece):
    sys.stdout.write(piece)
    sys.stdout.flush()

  if _INPUT.value:
    source = pathlib.Path(_INPUT.value)
    target = _OUTPUT.value or source.with_name(source.name.split(".")[0] + ".responses.jsonl")
    n = infer.answer_file(model, source, target, sampling, batch_size=_BATCH.value,
                          agent_template=_AGENT_TEMPLATE.value, seed=_SEED.value,
                          stop=_STOP.value)
    print(f"answered {n} requests -> {target}")
  elif _INTERACTIVE.value:
    history = [{"role": "system", "content": _SYSTEM.value}] if _SYSTEM.value else []
    base = len(history)
    for turn, line in enumerate(_lines()):
      if line.strip() == "exit":
        break
      if line.strip() == "clear":
        del history[base:]
        continue
      history.append({"role": "user", "content": line})
      answer = infer.chat(model, [history], sampling, seed=_SEED.value + turn, stream=stream,
                          stop=_STOP.value)[0]
      sys.stdout.write("\n")
      history.append({"role": "assistant", "content": answer})
  else:
    answer = infer.chat(model, [_PROMPT.value], sampling, system=_SYSTEM.value,
                        seed=_SEED.value, stream=stream if _STREAM.value else None,
                        stop=_STOP.value)[0]
    print("" if _STREAM.value else answer)


def _multimodal(sampling, images):
  """--prompt with --images, or --input_file rows with their `images`, on a multimodal model."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from swiftjax import errors  # pylint: disable=g-import-not-at-top
  from swiftjax import mllm  # pylint: disable=g-import-not-at-top
  if _INTERACTIVE.value:
    raise errors.ConfigError("--interactive is not supported for multimodal models; use "
                             "--prompt with --images, or --input_file")
  if _AGENT_TEMPLATE.value:
    raise errors.ConfigError("--agent_template is not supported for multimodal models")
  if common.mesh_from_flags(_MESH) is not None:
    raise errors.ConfigError("multimodal models run on one device (no --mesh_* flags)")
  if _INPUT.value and images:
    raise errors.ConfigError("--images goes with --prompt; in batch mode each row of "
                             "--input_file lists its own images")
  if not _INPUT.value:
    # The user's mistakes are reported before the model is loaded.
    mllm.check_count(_PROMPT.value, len(images))
    images = mllm.load_images(images)
  model = mllm.load(_MODEL.value, dtype=_DTYPE.value, adapters=_ADAPTERS.value,
                    merge=_MERGE.value)
  if _INPUT.value:
    source = pathlib.Path(_INPUT.value)
    target = _OUTPUT.value or source.with_name(source.name.split(".")[0] + ".responses.jsonl")
    n = mllm.answer_file(model, source, target, sampling, batch_size=_BATCH.value,
                         seed=_SEED.value, stop=_STOP.value)
    print(f"answered {n} requests -> {target}")
    return

  def stream(piece):
    sys.stdout.write(piece)
    sys.stdout.flush()

  answer = mllm.chat(model, _PROMPT.value, images, sampling, system=_SYSTEM.value,
                     seed=_SEED.value, stream=stream if _STREAM.value else None,
                     stop=_STOP.value)
  print("" if _STREAM.value else answer)


def _lines():
  """User turns from stdin (a prompt shown when it is a terminal) until end of input."""
  while True:
    if sys.stdin.isatty():
      sys.stdout.write("<<< ")
      sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
      return
    if line.strip():
      yield line.rstrip("\n")


if __name__ == "__main__":
  common.run(main)
