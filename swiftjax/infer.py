"""Load a model with its tokenizer and answer chat prompts: the library side of `launch.infer`."""

import dataclasses
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from swiftjax import assets
from swiftjax import generate as gen
from swiftjax import models
from swiftjax import packed_bf16
from swiftjax import tokenizer as tok_lib


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
         mesh: jax.sharding.Mesh | None = None) -> LoadedModel:
  """Loads a model and its tokenizer; `None` means the embedded SmolLM2-135M-Instruct.

  With `mesh`, parameters are loaded straight into their `NamedSharding` layout. bfloat16
  weights on a CPU backend are stored as `PackedBF16` and computed in float32, because
  XLA:CPU's bf16 dots are slow (see `swiftjax.packed_bf16`).
  """
  path = assets.default_model_path() if path is None else path
  cfg, params = models.from_pretrained(path, dtype=dtype, mesh=mesh)
  compute_dtype = None
  if models.resolve_dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
    params, compute_dtype = packed_bf16.pack(params), jnp.float32
  return LoadedModel(path, cfg, params, tok_lib.load_tokenizer(path), mesh, compute_dtype)


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

  on_tokens = None
  if stream is not None:
    if len(prompts) != 1:
      raise ValueError("streaming needs a batch of one prompt")
    produced: list[int] = []
    printed = [""]

    def on_tokens(step_tokens):
      if step_tokens[0] < 0 or step_tokens[0] in model.eos_ids:
        return
      produced.append(int(step_tokens[0]))
      text = model.tokenizer.decode(produced, skip_special_tokens=True)
      # Only emit once the decoded text is stable (no partial UTF-8 / merged pieces pending).
      if not text.endswith("\ufffd") and text.startswith(printed[0]):
        stream(text[len(printed[0]):])
        printed[0] = text

  stop_fn = None
  if stop:
    def stop_fn(row, ids):
      del row
      # Only the tail can hold a stop string that just appeared.
      tail = model.tokenizer.decode(ids[-16:], skip_special_tokens=True)
      return any(s in tail for s in stop)

  outs = gen.generate(model.params, model.cfg, rendered, sampling, rng=jax.random.key(seed),
                      eos_ids=model.eos_ids, on_tokens=on_tokens, stop_fn=stop_fn,
                      mesh=model.mesh, compute_dtype=model.compute_dtype)
  answers = [model.tokenizer.decode(o, skip_special_tokens=True) for o in outs]
  return [_cut_at_stop(a, stop) for a in answers]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
  cuts = [text.index(s) for s in stop if s in text]
  return text[:min(cuts)] if cuts else text
