r"""Serve an LLM behind the OpenAI HTTP API, with continuous batching.

  python -m launch.deploy --port=8000
  python -m launch.deploy --model=path/to/model.gguf --adapters=output/adapter \
      --port=8000 --api_key=secret --num_slots=16

Then any OpenAI client works:
  openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret").chat.completions.create(
      model="SmolLM2-135M-Instruct.Q4_1", messages=[{"role": "user", "content": "Hi"}])

It listens on 127.0.0.1 unless --host says otherwise; stop it with Ctrl-C or SIGTERM.
"""

import os
import signal
import threading
import time

from absl import flags

from launch import common

_MODEL = flags.DEFINE_string("model", None, "GGUF file, Hugging Face directory or hub id; "
                             "default: the embedded SmolLM2-135M-Instruct.")
_ADAPTERS = flags.DEFINE_string("adapters", None, "PEFT LoRA adapter directory, merged into "
                                "the weights before serving.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every "
                            "interface; then set --api_key).")
_PORT = flags.DEFINE_integer("port", 8000, "Port (0: any free port).", lower_bound=0)
_API_KEY = flags.DEFINE_string("api_key", None, "Require `Authorization: Bearer <key>` "
                               "(default: $SWIFTJAX_API_KEY if set, else no key).")
_NAME = flags.DEFINE_string("served_model_name", None, "Model id clients name (default: the "
                            "model's file or directory name).")
_SLOTS = flags.DEFINE_integer("num_slots", 16, "Decode slots (requests generated together).",
                              lower_bound=1)
_MAX_SEQ_LEN = flags.DEFINE_integer("max_seq_len", 2048, "Most tokens per request, prompt plus "
                                    "completion.", lower_bound=2)
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 1024, "Largest max_tokens a request may ask "
                                   "for.", lower_bound=1)
_QUEUE = flags.DEFINE_integer("max_queue", 64, "Requests that may wait for a slot; more get "
                              "429.", lower_bound=1)
_MAX_BYTES = flags.DEFINE_integer("max_request_bytes", 1 << 20, "Largest request body.",
                                  lower_bound=1)
_TIMEOUT = flags.DEFINE_float("timeout_s", 300.0, "Per-request deadline (seconds).",
                              lower_bound=0.001)
_AGENT = flags.DEFINE_enum("agent_template", "hermes", ["hermes", "react", "toolbench", "none"],
                           "How tools in chat requests are written into the prompt (none: the "
                           "tokenizer's chat template).")
_KV_DTYPE = flags.DEFINE_enum("kv_cache_dtype", "auto", ["auto", "float32", "bfloat16"],
                              "Dtype of the stored keys and values (auto: the compute dtype); "
                              "bfloat16 halves the KV cache's memory (and decodes ~3.4x slower on "
                              "a CPU backend).")
_WARMUP = flags.DEFINE_bool("warmup", True, "Compile with one short request before listening.")
_PRECOMPILE = flags.DEFINE_integer(
    "precompile_len", 512, "Before listening, compile every program that requests of up to "
    "this many tokens run (decode steps per cache length, prefills per prompt bucket), so no "
    "compile stalls the live requests later (45-65 s for SmolLM2-135M on 2 CPU cores; 0: "
    "compile on first use).", lower_bound=0)
_MIXED = flags.DEFINE_integer(
    "mixed_prefill_tokens", 64, "Prefill prompts of at most this many tokens inside the decode "
    "step, packed into one block of this width (one program per cache length for all of them); "
    "longer prompts are prefilled alone. 0: every prompt alone.", lower_bound=0)
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 0.0, "Stop after this long (0: run until "
                                  "stopped).", lower_bound=0.0)
_MESH = common.define_mesh_flags()
_UNSTACK = common.define_unstack_flag(True)


def main(argv):
  del argv
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax.serve import engine  # pylint: disable=g-import-not-at-top
  from swiftjax.serve import openai_api  # pylint: disable=g-import-not-at-top

  engine_config = engine.EngineConfig(num_slots=_SLOTS.value, max_seq_len=_MAX_SEQ_LEN.value,
                                      max_queue=_QUEUE.value, timeout_s=_TIMEOUT.value,
                                      kv_cache_dtype=None if _KV_DTYPE.value == "auto"
                                      else _KV_DTYPE.value,
                                      mixed_prefill_tokens=_MIXED.value)
  model = infer.load(_MODEL.value, dtype=_DTYPE.value, mesh=common.mesh_from_flags(_MESH),
                     adapters=_ADAPTERS.value,
                     unstack=_UNSTACK.value)
  api_config = openai_api.ApiConfig(
      model_name=_NAME.value or openai_api.default_model_name(model.path),
      api_key=_API_KEY.value or os.environ.get("SWIFTJAX_API_KEY") or None,
      max_request_bytes=_MAX_BYTES.value, max_tokens=_MAX_TOKENS.value,
      agent_template=None if _AGENT.value == "none" else _AGENT.value)
  server = openai_api.Server(model, engine_config, api_config, _HOST.value, _PORT.value,
                             warmup=_WARMUP.value, precompile_len=_PRECOMPILE.value)
  if server.precompiled:
    print(f"precompiled {server.precompiled[0]} programs for requests of up to "
          f"{min(_PRECOMPILE.value, server.engine.max_seq_len)} tokens in "
          f"{server.precompiled[1]:.0f} s", flush=True)
  print(f"serving {api_config.model_name} on {server.url} ({_SLOTS.value} slots, "
        f"max_seq_len {server.engine.max_seq_len}, "
        f"{'API key required' if api_config.api_key else 'no API key'})", flush=True)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  deadline = time.monotonic() + _MAX_SECONDS.value if _MAX_SECONDS.value else None
  try:
    while not stop.wait(0.2):
      if deadline is not None and time.monotonic() > deadline:
        break
  except KeyboardInterrupt:
    pass
  server.close()
  print("stopped", flush=True)


if __name__ == "__main__":
  common.run(main)
