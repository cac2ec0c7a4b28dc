r"""Prefill and decode speed of a Llama-3-8B-shaped random bf16 model on one accelerator.

  python -m bench.bench_decode_gpu [--layers=32] [--batches=1,8,32] [--new_tokens=64]

The weights are random (no 8B checkpoint is available offline); the shapes are Llama-3-8B's
(D 4096, F 14336, 32 layers, 32 query / 8 KV heads, vocab 128256, untied head), so the work per
token is the real model's. It prints prefill tokens/s, decode tokens/s per batch size, and the
fraction of the device's memory bandwidth batch-1 decode reaches: (weight bytes + KV-cache bytes
read per step) / step time / measured bandwidth, where the bandwidth is that of a jitted sum over
a 4 GiB array on the same device (read-only, like decode).

It uses only swiftjax's decoder and generation steps (numpy + jax), so it runs from a plain
checkout on a machine with a CUDA jax and nothing else installed. On the CPU use `--layers=2`
to smoke-test it.
"""

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import generate
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig


def llama3_8b(num_layers: int) -> ModelConfig:
  return ModelConfig(model_type="llama", vocab_size=128256, hidden_size=4096,
                     intermediate_size=14336, num_layers=num_layers, num_heads=32,
                     num_kv_heads=8, head_dim=128, rope_theta=500000.0, rms_norm_eps=1e-5,
                     tie_word_embeddings=False, max_position_embeddings=8192)


def _time(fn, repeats: int) -> float:
  """Best wall time of `fn()` (which must block until its result is ready) over `repeats`."""
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def read_bandwidth(gib: float = 4.0) -> float:
  """Bytes/s of a jitted sum over a `gib` GiB bf16 array (reads every byte once)."""
  n = int(gib * (1 << 30) // 2)
  x = jnp.ones((n // 4096, 4096), jnp.bfloat16)
  f = jax.jit(lambda a: jnp.sum(a, dtype=jnp.float32))
  f(x).block_until_ready()
  t = _time(lambda: f(x).block_until_ready(), 5)
  del x
  return n * 2 / t


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--layers", type=int, default=32)
  p.add_argument("--batches", default="1,8,32")
  p.add_argument("--prompt_len", type=int, default=512)
  p.add_argument("--new_tokens", type=int, default=64)
  p.add_argument("--scan_unroll", type=int, default=1,
                 help="layers per layer-scan iteration (0: unroll all)")
  p.add_argument("--out_json", default=None)
  a = p.parse_args()
  cfg = dataclasses.replace(llama3_8b(a.layers), scan_unroll=a.scan_unroll or a.layers)
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  bw = read_bandwidth(4.0 if jax.default_backend() != "cpu" else 0.25)
  print(f"measured read bandwidth: {bw / 1e9:.0f} GB/s")
  params = jax.jit(decoder.init, static_argnums=(0, 2))(cfg, jax.random.key(0), jnp.bfloat16)
  jax.block_until_ready(params)
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  print(f"weights: {weight_bytes / 1e9:.2f} GB bf16 ({a.layers} layers)")
  greedy = generate.SamplingConfig(max_new_tokens=a.new_tokens)
  results = {"device": dev.device_kind, "read_bandwidth_gbs": bw / 1e9,
             "weight_gb": weight_bytes / 1e9, "layers": a.layers, "rows": []}
  rng = np.random.default_rng(0)
  for b in [int(x) for x in a.batches.split(",")]:
    S = generate.bucket(a.prompt_len + a.new_tokens + 1)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, a.prompt_len)), jnp.int32)
    mask = jnp.ones((b, a.prompt_len), bool)
    key = jax.random.key(1)

    def prefill():
      cache = decoder.init_cache(cfg, b, S, jnp.bfloat16)
      out = generate._prefill(params, tokens, mask, cache, key, cfg, greedy, None)  # pylint: disable=protected-access
      jax.block_until_ready(out)
      return out

    prefill()
    t_prefill = _time(prefill, 3)

    def decode():
      token, cache, seen = prefill()
      t = time.perf_counter()
      for _ in range(a.new_tokens):
        token, cache, seen = generate._decode_step(params, token, cache, seen, key, cfg,  # pylint: disable=protected-access
                                                   greedy, None)
      token.block_until_ready()
      return time.perf_counter() - t

    decode()
    t_decode = min(decode() for _ in range(2))
    step = t_decode / a.new_tokens
    # KV bytes read per step: the cache up to the prompt + half the new tokens, K and V, bf16.
    kv_bytes = 2 * cfg.num_layers * b * (a.prompt_len + a.new_tokens // 2) * \
        cfg.num_kv_heads * cfg.head_dim * 2
    frac = (weight_bytes + kv_bytes) / step / bw
    row = {"batch": b, "prefill_tok_s": b * a.prompt_len / t_prefill,
           "decode_tok_s": b / step, "decode_step_ms": step * 1e3, "bandwidth_fraction": frac}
    results["rows"].append(row)
    print(f"batch {b:3d}: prefill {row['prefill_tok_s']:9.0f} tok/s ({a.prompt_len} tokens/row), "
          f"decode {row['decode_tok_s']:8.1f} tok/s ({row['decode_step_ms']:.2f} ms/step), "
          f"bytes read per step / step time = {frac * 100:.0f}% of measured bandwidth")
  if a.out_json:
    with open(a.out_json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
