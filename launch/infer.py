r"""Answer a prompt with an LLM (the embedded SmolLM2-135M-Instruct by default).

  python -m launch.infer --prompt="What is the capital of France?"
  python -m launch.infer --model=path/to/model.gguf --prompt="..." --temperature=0.7 --stream
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
_MESH = common.define_mesh_flags()


def main(argv):
  del argv
  from swiftjax import generate  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  sampling = generate.SamplingConfig(
      max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
      top_p=_TOP_P.value or 1.0, repetition_penalty=_REPETITION_PENALTY.value)
  model = infer.load(_MODEL.value, dtype=_DTYPE.value, mesh=common.mesh_from_flags(_MESH))
  stream = None
  if _STREAM.value:
    def stream(piece):
      sys.stdout.write(piece)
      sys.stdout.flush()
  answer = infer.chat(model, [_PROMPT.value], sampling, system=_SYSTEM.value,
                      seed=_SEED.value, stream=stream, stop=_STOP.value)[0]
  if _STREAM.value:
    sys.stdout.write("\n")
  else:
    print(answer)


if __name__ == "__main__":
  common.run(main)
