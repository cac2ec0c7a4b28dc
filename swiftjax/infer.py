"""Load a model with its tokenizer and answer chat prompts: the library side of `launch.infer`."""

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp

from swiftjax import assets
from swiftjax import errors
from swiftjax import generate as gen
from swiftjax import int8
from swiftjax import models
from swiftjax import packed_bf16
from swiftjax import tokenizer as tok_lib
from swiftjax.models import decoder
from swiftjax.lora import lora
from swiftjax.lora import peft_io


@dataclasses.dataclass
class LoadedModel:
  """A model ready to generate: config, params and tokenizer."""
  path: pathlib.Path | str
  cfg: models.ModelConfig
  params: Any
  tokenizer: Any
  mesh: jax.sharding.Mesh | None = None
  compute_dtype: Any = None

  @property
  def eos_ids(self) -> tuple[int, ...]:
    ids = set(self.cfg.eos_token_ids)
    if getattr(self.tokenizer, "eos_token_id", None) is not None:
      ids.add(int(self.tokenizer.eos_token_id))
    return tuple(sorted(ids))


def load(path: str | pathlib.Path | None = None, dtype: Any = "float32",
         mesh: jax.sharding.Mesh | None = None, *, adapters: str | pathlib.Path | None = None,
         merge: bool = True, unstack: bool = False) -> LoadedModel:
  """Loads a model and its tokenizer; `None` means the embedded SmolLM2-135M-Instruct.

  With `mesh`, parameters are loaded straight into their `NamedSharding` layout. bfloat16
  weights on a CPU backend are stored as `PackedBF16` and computed in float32, because
  XLA:CPU's bf16 dots are slow (see `swiftjax.packed_bf16`); int8 kernels (a GPTQ 8-bit
  checkpoint) are stored output-major for the CPU decode kernel (`int8.output_major`).

  Args:
    path: GGUF file, Hugging Face directory or hub id.
    dtype: parameter dtype.
    mesh: optional device mesh.
    adapters: a PEFT LoRA/rsLoRA/DoRA adapter directory (as `launch.sft` writes) to apply.
    merge: fold the adapters into the kernels (one dense matmul per projection, as fast as the
      base model) rather than keeping them as separate `LoraWeight`s (`s * x A B` added at each
      call; the base weights stay untouched).
    unstack: keep each layer's weights in buffers of their own
      (`decoder.unstack_layers`): faster generation (SmolLM2-135M on 2 CPU cores: batch-1
      decode 1.5x), for inference only (training code expects the stacked layout).

  Raises:
    CheckpointError: adapters that do not fit this model (the tensor is named).
  """
  path = assets.default_model_path() if path is None else path
  cfg, params = models.from_pretrained(path, dtype=dtype, mesh=mesh)
  if adapters is not None:
    params = apply_adapters(params, cfg, adapters, merge=merge)
  compute_dtype = None
  if models.resolve_dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
    params, compute_dtype = packed_bf16.pack(params, donate=True), jnp.float32
  if jax.default_backend() == "cpu":
    # Int8 kernels (a GPTQ 8-bit checkpoint) output-major, for the CPU decode kernel.
    params = int8.output_major(params, donate=True)
  if unstack:
    params = decoder.unstack_layers(params, donate=True)
  return LoadedModel(path, cfg, params, tok_lib.load_tokenizer(path), mesh, compute_dtype)


def apply_adapters(params: Any, cfg: models.ModelConfig, directory: str | pathlib.Path, *,
                   merge: bool = True) -> Any:
  """Base params with the PEFT LoRA adapters in `directory` merged in (or attached)."""
  lora_cfg, adapters = peft_io.load(directory, cfg, params)
  return lora.merged(params, adapters, lora_cfg) if merge else lora.apply(params, adapters,
                                                                          lora_cfg)


def chat(model: LoadedModel, prompts: Sequence[str | Sequence[dict]],
         sampling: gen.SamplingConfig = gen.SamplingConfig(), *, system: str | None = None,
         seed: int = 0, stream: Callable[[str], None] | None = None,
         stop: Sequence[str] = ()) -> list[str]:
  """Answers a batch of prompts (plain strings or message lists) with the chat template.

  Args:
    model: from `load`.
    prompts: B prompts; a string becomes one user message.
    sampling: sampling config.
    system: optional system message put before string prompts.
    seed: PRNG seed for sampling.
    stream: if given (batch of one only), called with each new piece of text as it is generated.
    stop: stop strings; an answer ends before the first one it produces.

  Returns:
    B answers (decoded, special tokens removed).
  """
  rendered = []
  for p in prompts:
    if isinstance(p, str):
      p = ([{"role": "system", "content": system}] if system else []) + [
          {"role": "user", "content": p}]
    rendered.append(tok_lib.encode(model.tokenizer, tok_lib.render_chat(model.tokenizer, p)))

  if stream is not None and len(prompts) != 1:
    raise ValueError("streaming needs a batch of one prompt")
  outs = gen.generate(model.params, model.cfg, rendered, sampling, rng=jax.random.key(seed),
                      eos_ids=model.eos_ids,
                      on_tokens=stream_callback(model.tokenizer, model.eos_ids, stream),
                      stop_fn=stop_callback(model.tokenizer, stop),
                      mesh=model.mesh, compute_dtype=model.compute_dtype)
  answers = [model.tokenizer.decode(o, skip_special_tokens=True) for o in outs]
  return [cut_at_stop(a, stop) for a in answers]


def stream_callback(tokenizer: Any, eos_ids: Sequence[int],
                    stream: Callable[[str], None] | None
                    ) -> Callable[[Any], None] | None:
  """The `on_tokens` hook of `generate` that calls `stream` with each new piece of text of a
  batch of one (None when `stream` is None).

  The hook decodes all tokens so far (`step_tokens [1]` each step; EOS and negative ids are
  skipped) and passes on only the text added since the last call.
  """
  if stream is None:
    return None
  produced: list[int] = []
  printed = [""]

  def on_tokens(step_tokens):
    if step_tokens[0] < 0 or step_tokens[0] in eos_ids:
      return
    produced.append(int(step_tokens[0]))
    text = tokenizer.decode(produced, skip_special_tokens=True)
    # Only emit once the decoded text is stable (no partial UTF-8 / merged pieces pending).
    if not text.endswith("\ufffd") and text.startswith(printed[0]):
      stream(text[len(printed[0]):])
      printed[0] = text

  return on_tokens


def stop_callback(tokenizer: Any, stop: Sequence[str]
                  ) -> Callable[[int, Sequence[int]], bool] | None:
  """The `stop_fn` hook of `generate`: True once a row's tokens end in one of the `stop`
  strings (None when there are none)."""
  if not stop:
    return None

  def stop_fn(row, ids):
    del row
    # Only the tail can hold a stop string that just appeared.
    tail = tokenizer.decode(ids[-16:], skip_special_tokens=True)
    return any(s in tail for s in stop)

  return stop_fn


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
  """`text` up to the first of the `stop` strings it holds (all of it when none)."""
  cuts = [text.index(s) for s in stop if s in text]
  return text[:min(cuts)] if cuts else text


def read_requests(path: str | pathlib.Path) -> list[dict]:
  """Requests from a JSON/JSONL file, each as `{"messages", "tools", "labels"}`.

  A row is `{"prompt": str}`, `{"query": str}` or any training row format
  (`swiftjax.data.formats`); a trailing assistant message is the reference answer (`labels`),
  not part of the prompt, as ms-swift's `infer --val_dataset` treats it.

  Raises:
    SwiftJaxError: a row that is neither (named by file and line).
  """
  from swiftjax.data import formats  # pylint: disable=g-import-not-at-top
  out = []
  for where, row in formats.iter_rows(path):
    try:
      if isinstance(row, Exception):
        raise row
      if isinstance(row, dict) and set(row) <= {"prompt", "query", "system"} and (
          isinstance(row.get("prompt", row.get("query")), str)):
        messages = formats.system_of(row) + [
            {"role": "user", "content": row.get("prompt", row.get("query"))}]
        tools = None
      else:
        messages, tools = formats.messages_of(row), formats.tools_of(row)
    except (ValueError, TypeError, KeyError) as e:
      raise formats.RowError(f"{where}: {e}") from None
    labels = None
    if messages and messages[-1]["role"] == "assistant":
      labels = messages[-1]["content"]
      messages = messages[:-1]
    if not messages:
      raise formats.RowError(f"{where}: no prompt before the reference answer")
    out.append({"messages": messages, "tools": tools, "labels": labels})
  return out


def answer_file(model: LoadedModel, input_path: str | pathlib.Path,
                output_path: str | pathlib.Path,
                sampling: gen.SamplingConfig = gen.SamplingConfig(), *, batch_size: int = 8, agent_template: str | None = None, seed: int = 0,
                stop: Sequence[str] = ()) -> int:
  """Answers every request of `input_path` and writes one JSONL row per request, in order:
  `{"messages", "response", "labels"}`. The output appears whole or not at all.

  Returns:
    the number of requests answered.
  """
  requests = read_requests(input_path)

  def rows():
    for start in range(0, len(requests), batch_size):
      batch = requests[start:start + batch_size]
      prompts = [_chat_messages(r["messages"], r["tools"], agent_template) for r in batch]
      answers = chat(model, prompts, sampling, seed=seed + start, stop=stop)
      for r, a in zip(batch, answers):
        yield {"messages": r["messages"], "response": a, "labels": r["labels"]}

  write_jsonl_atomic(output_path, rows())
  return len(requests)


def write_jsonl_atomic(path: str | pathlib.Path, rows: Iterable[Any]) -> None:
  """Writes `rows` to `path` as JSONL (one `json.dumps(row, ensure_ascii=False)` per line), whole
  or not at all: into `path` + ".tmp", renamed over `path` once the last row is written, so an
  error while `rows` is being produced (a generator answering requests as it goes) leaves
  neither output nor temporary file. Parent folders are created."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  path.parent.mkdir(parents=True, exist_ok=True)
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def _chat_messages(messages: list[dict], tools: Any, agent_template: str | None) -> list[dict]:
  if agent_template is None:
    if tools:
      raise errors.ConfigError("a request has tools: name an agent template "
                               "(react, toolbench, hermes) to render them")
    return messages
  from swiftjax.agent import templates  # pylint: disable=g-import-not-at-top
  return templates.to_chat(messages, tools, agent_template)
