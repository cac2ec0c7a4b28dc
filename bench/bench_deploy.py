r"""Load test of `launch.deploy` (OpenAI API, continuous batching) vs serial transformers.

  python -m bench.bench_deploy [--clients=16] [--duration_s=60] [--max_tokens=64]
      [--baseline_s=60] [--rounds=3] [--model=x.gguf] [--out_json=deploy.json]
  python -m bench.bench_deploy --duration_s=300 --rounds=1 --baseline_s=30   # 5-minute soak

1. Starts `python -m launch.deploy --port=0` as a user would (a subprocess) and waits for its
   "serving ... on http://..." line.
2. Warm-up (not measured): one round of `--clients` concurrent requests, so the first compiles
   of the prompt and cache buckets do not count.
3. Load: `--clients` threads on loopback, each with one keep-alive connection, send greedy chat
   completions back to back for `--duration_s` (requests in flight at the end are awaited).
   Prompts are the instructions of `../shared/data/llamafactory/data/alpaca_en_demo.json` (a
   built-in list without it), taken in turn. Throughput is completion tokens (the server's
   `usage`) over the wall time from the first send to the last answer, so it includes each
   round's drain (the batch emptying as the last requests finish); the window throughput is
   the server's own token count within the --duration_s windows over their length. Latency
   is per request.
   Every answer must be a 200 with a distinct response id and one per request sent (nothing
   lost or duplicated); the server's resident memory is read before and after, and every
   --rss_every_s while serving.
4. Baseline: the same prompts in the same order, answered one by one by transformers'
   `generate` (PyTorch CPU, greedy, the same GGUF dequantized to float32, the same chat template
   and `max_new_tokens`) for `--baseline_s`. Load and baseline alternate in `--rounds` rounds
   (the server idles during the baseline), so background load on a shared machine is spread
   over both sides.

Prints both sides and the ratios (target in issue 7: aggregate tokens/s >= 10x the serial
baseline at 16 clients). Both phases run on the same machine one after the other; on a shared
machine, load from other jobs moves both numbers.
"""

import http.client
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
import numpy as np

from bench import chat_prompts

_MODEL = flags.DEFINE_string("model", None, "GGUF file (default: the embedded SmolLM2).")
_CLIENTS = flags.DEFINE_integer("clients", 16, "Concurrent clients.")
_DURATION = flags.DEFINE_float("duration_s", 60.0, "Length of the load phase (seconds).")
_RSS_EVERY = flags.DEFINE_float("rss_every_s", 10.0, "Sample the server's resident memory this "
                                "often during the load phases (a soak: --duration_s=300).")
_BASELINE = flags.DEFINE_float("baseline_s", 60.0, "Time given to the serial baseline.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64, "max_tokens of every request.")
_SLOTS = flags.DEFINE_integer("num_slots", 0, "Server decode slots (0: --clients).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Server weights.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternations of load and baseline phases (each "
                               "gets 1/rounds of its time).")
_THREADS = flags.DEFINE_integer("torch_threads", -1, "torch threads (0: torch's default; -1: "
                                "whichever of 1 and the default is faster on a warm-up prompt, "
                                "as oversubscribed cores make torch's spinning threads slow).")
_OUT = flags.DEFINE_string("out_json", None, "Also write the results here.")
_SERVER_ARGS = flags.DEFINE_list(
    "server_args", [], "Extra launch.deploy flags, comma-separated, for A/B runs (e.g. "
    "--server_args=--precompile_len=0,--mixed_prefill_tokens=0 for the server as it was before "
    "both existed).")
_NUM_PROMPTS = flags.DEFINE_integer(
    "num_prompts", 0, "Use only the first N prompts (0: all), so that after warm-up no new "
    "prompt bucket or cache length appears: a soak then tells leaks from compiled code.")

REPO = pathlib.Path(__file__).resolve().parent.parent
def rss_mb(pid: int) -> float:
  for line in open(f"/proc/{pid}/status"):
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 1024
  return float("nan")


def start_server() -> tuple[subprocess.Popen, int, str]:
  args = [sys.executable, "-m", "launch.deploy", "--port=0", "--warmup",
          f"--num_slots={_SLOTS.value or _CLIENTS.value}", f"--max_queue={4 * _CLIENTS.value}",
          f"--max_tokens={_MAX_TOKENS.value}", f"--dtype={_DTYPE.value}", "--max_seq_len=1024"]
  if _MODEL.value:
    args.append(f"--model={_MODEL.value}")
  args += _SERVER_ARGS.value
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
  for line in proc.stdout:
    m = re.match(r"serving (\S+) on http://[^:]+:(\d+)/v1", line)
    if m:
      # Keep draining stdout so the server never blocks on a full pipe.
      threading.Thread(target=proc.stdout.read, daemon=True).start()
      return proc, int(m.group(2)), m.group(1)
  raise RuntimeError(f"launch.deploy exited ({proc.wait()}) without serving")


class Client(threading.Thread):
  """Sends chat completions back to back until `deadline`; records every outcome."""

  def __init__(self, port, model, texts, counter, lock, deadline, min_requests=0):
    super().__init__(daemon=True)
    self.port, self.model, self.texts = port, model, texts
    self.counter, self.lock, self.deadline = counter, lock, deadline
    self.min_requests = min_requests
    self.results = []  # (prompt index, status, latency s, completion tokens, response id)

  def run(self):
    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
    while time.monotonic() < self.deadline or len(self.results) < self.min_requests:
      with self.lock:
        i = next(self.counter)
      body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": _MAX_TOKENS.value,
                         "messages": [{"role": "user",
                                       "content": self.texts[i % len(self.texts)]}]})
      t = time.perf_counter()
      try:
        conn.request("POST", "/v1/chat/completions", body,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        status = resp.status
      except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        status, data = -1, {"error": repr(e)}
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
      ok = status == 200
      self.results.append((i, status, time.perf_counter() - t,
                           data["usage"]["completion_tokens"] if ok else 0,
                           data.get("id") if ok else json.dumps(data)[:200]))
    conn.close()


def run_load(port: int, model: str, texts: list[str], seconds: float, start: int = 0,
             min_requests: int = 0):
  """Runs the clients for `seconds`, then waits for the requests in flight.

  Returns:
    (results, wall seconds until the last answer, tokens the server generated within the
    `seconds` window by its own counter)
  """
  import itertools  # pylint: disable=g-import-not-at-top
  counter, lock = itertools.count(start), threading.Lock()
  tokens_before = _health(port)["tokens"]
  t0 = time.perf_counter()
  clients = [Client(port, model, texts, counter, lock, time.monotonic() + seconds,
                    min_requests)
             for _ in range(_CLIENTS.value)]
  for c in clients:
    c.start()
  time.sleep(max(0.0, t0 + seconds - time.perf_counter()))
  window_tokens = _health(port)["tokens"] - tokens_before
  for c in clients:
    c.join()
  wall = time.perf_counter() - t0
  results = [r for c in clients for r in c.results]
  return results, wall, window_tokens


class Baseline:
  """transformers (PyTorch CPU) answering one prompt at a time, greedily, on the same GGUF."""

  def __init__(self):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    from swiftjax import assets  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(_MODEL.value) if _MODEL.value else assets.default_model_path()
    self.torch = torch
    self.tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    self.model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    self.eos = {self.tok.eos_token_id} | set(
        int(i) for i in np.atleast_1d(self.model.generation_config.eos_token_id or []))
    self.answer("Hi", 4)  # warm-up
    default = torch.get_num_threads()
    if _THREADS.value > 0:
      torch.set_num_threads(_THREADS.value)
    elif _THREADS.value < 0 and default > 1:
      speed = {}
      for threads in (1, default):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        speed[threads] = self.answer(chat_prompts.FALLBACK[0], 16) / (time.perf_counter() - t)
      torch.set_num_threads(max(speed, key=speed.get))
    self.threads = torch.get_num_threads()

  def answer(self, text: str, max_new_tokens: int) -> int:
    """Generated tokens (trailing EOS dropped) for one chat prompt."""
    rendered = self.tok.apply_chat_template([{"role": "user", "content": text}],
                                            tokenize=False, add_generation_prompt=True)
    ids = self.tok(rendered, add_special_tokens=False, return_tensors="pt")
    with self.torch.inference_mode():
      out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=self.tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    while new and new[-1] in self.eos:
      new.pop()
    return len(new)

  def run(self, texts: list[str], order: list[int], seconds: float) -> list[tuple]:
    """(prompt index, latency s, new tokens) for the prompts in `order` until time is up
    (at least two)."""
    out = []
    t_end = time.monotonic() + seconds
    for n, i in enumerate(order):
      if n >= 2 and time.monotonic() > t_end:
        break
      t = time.perf_counter()
      tokens = self.answer(texts[i % len(texts)], _MAX_TOKENS.value)
      out.append((i, time.perf_counter() - t, tokens))
    return out


def _health(port: int) -> dict:
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  conn.request("GET", "/health")
  health = json.loads(conn.getresponse().read())
  conn.close()
  return health


def main(argv):
  del argv
  texts = chat_prompts.prompts()[:_NUM_PROMPTS.value or None]
  proc, port, model = start_server()
  rounds = max(_ROUNDS.value, 1)
  results, base, wall, window_tokens = [], [], 0.0, 0
  try:
    print(f"server up on port {port} ({model}); loading the transformers baseline", flush=True)
    reference = Baseline()
    warm = run_load(port, model, texts, 0.0, start=len(texts) // 2, min_requests=1)[0]
    rss_before = rss_mb(proc.pid)
    health_before = _health(port)
    samples, sampling = [], threading.Event()

    def sample_rss():
      t_start = time.monotonic()
      while True:
        if sampling.is_set():
          # The KV cache grows and shrinks with the longest live row (cache_len columns),
          # and every new prompt bucket or cache length compiles code, so resident memory is
          # read next to both.
          health = _health(port)
          samples.append((round(time.monotonic() - t_start, 1), rss_mb(proc.pid),
                          health["cache_len"], health["compiled_shapes"]))
        if stop_sampling.wait(_RSS_EVERY.value):
          return

    stop_sampling = threading.Event()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    for r in range(rounds):
      # Rounds alternate the two sides, so load from other jobs on a shared machine falls on
      # both alike.
      sampling.set()
      got, seconds, in_window = run_load(port, model, texts, _DURATION.value / rounds,
                                         start=len(results))
      window_tokens += in_window
      sampling.clear()
      results += got
      wall += seconds
      order = [g[0] for g in sorted(got, key=lambda g: g[0])]
      base += reference.run(texts, order, _BASELINE.value / rounds)
      print(f"round {r + 1}/{rounds}: {len(got)} served, {len(base)} baseline so far",
            flush=True)
    rss_after = rss_mb(proc.pid)
    stop_sampling.set()
    sampler.join()
    health = _health(port)
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)

  ok = [r for r in results if r[1] == 200]
  errors = [r for r in results if r[1] != 200]
  ids = [r[4] for r in ok]
  tokens = sum(r[3] for r in ok)
  lat = np.array([r[2] for r in ok]) if ok else np.array([np.nan])
  serving = {"clients": _CLIENTS.value, "requests": len(results), "ok": len(ok),
             "errors": len(errors), "warmup_errors": sum(r[1] != 200 for r in warm),
             "duplicate_ids": len(ids) - len(set(ids)),
             "lost": sum(r[1] == -1 for r in results),
             "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
             # The server's own count of tokens generated inside the --duration_s windows
             # (the "bounded time"), without the drain after each window, when the batch
             # empties as the last requests finish (~3 s per round for SmolLM2 here).
             "window_s": _DURATION.value, "window_tokens": window_tokens,
             "window_tokens_per_s": window_tokens / _DURATION.value,
             "p50_latency_s": float(np.percentile(lat, 50)),
             "p99_latency_s": float(np.percentile(lat, 99)),
             "rss_mb_before": rss_before, "rss_mb_after": rss_after,
             # (seconds since the first round began, MB, KV-cache columns, compiled shapes)
             # while serving; flat memory shows as a small growth from the middle sample to
             # the last.
             "rss_mb_samples": samples,
             "rss_mb_second_half_growth": (samples[-1][1] - samples[len(samples) // 2][1]
                                           if samples else None),
             # Engine counters over the measured rounds (warm-up compiles excluded).
             "engine": {k: round(health[k] - health_before[k], 3)
                        for k in ("steps", "step_rows", "prefills", "prefill_tokens",
                                  "packed_prefills", "relayouts", "decode_seconds",
                                  "prefill_seconds", "compiled_shapes")}}
  if errors:
    serving["first_error"] = errors[0][4]
  b_tokens = sum(r[2] for r in base)
  b_time = sum(r[1] for r in base)
  b_lat = np.array([r[1] for r in base])
  serial = {"requests": len(base), "torch_threads": reference.threads, "tokens": b_tokens,
            "seconds": b_time,
            "tokens_per_s": b_tokens / b_time, "p50_latency_s": float(np.percentile(b_lat, 50)),
            "p99_latency_s": float(np.percentile(b_lat, 99))}
  ratio = serving["tokens_per_s"] / serial["tokens_per_s"]
  window_ratio = serving["window_tokens_per_s"] / serial["tokens_per_s"]
  result = {"server_args": _SERVER_ARGS.value, "serving": serving,
            "transformers_serial": serial, "rounds": rounds,
            "throughput_ratio": ratio, "window_throughput_ratio": window_ratio,
            "target_ratio": 10.0}
  print(json.dumps(result, indent=1))
  print(f"\n{_CLIENTS.value} clients: {serving['tokens_per_s']:.1f} tok/s aggregate "
        f"({len(ok)} requests, {len(errors)} errors, p50 {serving['p50_latency_s']:.2f} s, "
        f"p99 {serving['p99_latency_s']:.2f} s) vs transformers serial "
        f"{serial['tokens_per_s']:.1f} tok/s (p50 {serial['p50_latency_s']:.2f} s): "
        f"{ratio:.2f}x with each round's drain, {window_ratio:.2f}x within the load windows "
        f"({serving['window_tokens_per_s']:.1f} tok/s; target 10x); server memory "
        f"{rss_before:.0f} -> {rss_after:.0f} MB, {serving['rss_mb_second_half_growth'] or 0:+.0f} "
        f"MB over the second half of {len(samples)} samples")
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
