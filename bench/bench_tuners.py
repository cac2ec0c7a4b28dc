r"""Tuner comparison on SmolLM2-135M (a table like SWIFT's): trainable params, peak host memory
and training tokens/s for the same batch, for each swiftjax tuner, full fine-tuning, LoRA with
gradient checkpointing (`lora_remat`: full remat of every layer), and PyTorch on the same weights
and batch (transformers + PEFT LoRA, and transformers full fine-tuning), in one run.

  python -m bench.bench_tuners [--batch=8 --seq=256 --steps=5] [--only=full,torch_full]

Each tuner runs in a fresh subprocess (so peak memory is its own): load the embedded GGUF in
float32, build the tuner, jit one AdamW step (forward, backward, update), time `--steps` steps
after a warm-up. Peak memory is VmHWM minus VmRSS before loading. The batch is alpaca text from
../shared/data/llamafactory/data/alpaca_en_demo.json, tokenized and packed.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags

_TUNER = flags.DEFINE_string("tuner", None, "Run one tuner (worker mode) and print JSON.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step (8 x 256: the issue's setting).")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
_ONLY = flags.DEFINE_list("only", [], "Run only these rows (default: all of TUNERS).")
_DATA = flags.DEFINE_string(
    "data", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" /
                "llamafactory" / "data" / "alpaca_en_demo.json"), "Alpaca JSON file.")

TUNERS = ("full", "lora", "dora", "qlora", "ia3", "vera", "adapter", "prompt", "galore",
          "lisa", "llama_pro", "lora_remat", "peft_lora", "torch_full")
# Rows run with PyTorch (transformers), not swiftjax.
TORCH_ROWS = ("peft_lora", "torch_full")


def _status(key):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1]) * 1024
  return 0


def _batch(tokenizer, batch, seq, path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = json.loads(pathlib.Path(path).read_text())
  ids = []
  for r in rows:
    ids += tokenizer(r["instruction"] + "\n" + r.get("input", "") + "\n" + r["output"],
                     add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(ids) >= batch * seq:
      break
  return np.asarray(ids[: batch * seq], np.int32).reshape(batch, seq)


def _jax_worker(name, tokens):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax.lora import adapter, galore, ia3, lisa, llama_pro, lora, prompt_tuning, qlora, vera  # pylint: disable=g-import-not-at-top,g-multiple-import
  from swiftjax.models import decoder  # pylint: disable=g-import-not-at-top

  model = infer.load()
  params, cfg = model.params, model.cfg
  del model  # its params would outlive a tuner that replaces them (QLoRA's quantized base)
  if name == "lora_remat":
    # LoRA r=8 all-linear, recomputing every layer in the backward pass.
    name, cfg = "lora", dataclasses.replace(cfg, remat="full")
  tokens = jnp.asarray(tokens)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  opt = optax.adamw(1e-4)

  def ce(logits):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  key = jax.random.key(0)
  frozen = params
  if name in ("full", "galore", "lisa", "llama_pro"):
    if name == "galore":
      opt = galore.galore(optax.adamw(1e-4), rank=64, update_proj_gap=200)
    elif name == "lisa":
      opt = lisa.lisa(optax.adamw(1e-4), num_layers=cfg.num_layers, n_layers=2)
    elif name == "llama_pro":
      params, cfg, new = llama_pro.expand(params, cfg, num_new_blocks=3)
      opt = llama_pro.optimizer(optax.adamw(1e-4), new)
    trainable, frozen = params, None
    loss = lambda t, f: ce(decoder.apply(t, inputs, cfg)[0])
    n_train = sum(x.size for x in jax.tree.leaves(params))
    if name == "llama_pro":
      n_train = int(sum(x[new].size for x in jax.tree.leaves(params["layers"])))
    elif name == "lisa":
      n_train = int(sum(x.size for x in jax.tree.leaves(params)) -
                    sum(x.size for x in jax.tree.leaves(params["layers"])) * (1 - 2 / cfg.num_layers))
  else:
    tuners = {
        "lora": (lora, lora.LoraConfig(r=8, alpha=32)),
        "dora": (lora, lora.LoraConfig(r=8, alpha=32, use_dora=True)),
        "qlora": (lora, lora.LoraConfig(r=8, alpha=32)),
        "ia3": (ia3, ia3.IA3Config()),
        "vera": (vera, vera.VeraConfig(r=256, target_modules=("q_proj", "v_proj"))),
        "adapter": (adapter, adapter.AdapterConfig(dim=128)),
    }
    if name == "prompt":
      pcfg = prompt_tuning.PromptTuningConfig(num_virtual_tokens=20)
      _, trainable = prompt_tuning.init(params, key, pcfg)
      n = pcfg.num_virtual_tokens

      def loss(a, f):
        embeds, mask = prompt_tuning.inputs(f, a, inputs)
        return ce(decoder.apply(f, None, cfg, embeds=embeds, mask=mask)[0][:, n:])
    else:
      module, tcfg = tuners[name]
      base = qlora.quantize_params(params) if name == "qlora" else params
      frozen, trainable = module.init(base, key, tcfg)
      loss = lambda a, f: ce(decoder.apply(module.apply(f, a, tcfg), inputs, cfg)[0])
    n_train = (vera.trainable_count(trainable) if name == "vera" else
               sum(x.size for x in jax.tree.leaves(trainable)))
    if name == "vera":
      opt = optax.multi_transform({"t": opt, "f": optax.set_to_zero()}, lambda t: {
          k: ("f" if k in vera.PROJECTIONS else jax.tree.map(lambda _: "t", v))
          for k, v in t.items()})
  del params
  state = opt.init(trainable)

  # As `swiftjax.trainer` runs it: the frozen tree is an argument (closed over, its arrays
  # would be baked into the program as constants: LoRA peaked at 4.2 GB instead of 2.4 GB),
  # and the trainable params and optimizer state are donated to the step's outputs.
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(t, s, f):
    l, g = jax.value_and_grad(loss)(t, f)
    u, s = opt.update(g, s, t)
    return optax.apply_updates(t, u), s, l

  trainable, state, l0 = step(trainable, state, frozen)
  jax.block_until_ready(l0)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    trainable, state, l = step(trainable, state, frozen)
  jax.block_until_ready(l)
  dt = time.perf_counter() - t0
  return dict(trainable=int(n_train), tok_s=tokens.size * _STEPS.value / dt, loss=float(l))


def _torch_worker(name, tokens):
  """`peft_lora`: transformers + PEFT LoRA (r=8, all linear layers); `torch_full`: every
  parameter trained. Both a plain PyTorch loop with AdamW over the trainable parameters."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from swiftjax import assets  # pylint: disable=g-import-not-at-top
  p = assets.default_model_path()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(p.parent), gguf_file=p.name, dtype=torch.float32)
  if name == "peft_lora":
    import peft  # pylint: disable=g-import-not-at-top
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=32,
                                                       target_modules="all-linear"))
    n_train = model.get_nb_trainable_parameters()[0]
  else:
    # model.parameters() lists a tied embedding / LM head once.
    n_train = sum(q.numel() for q in model.parameters() if q.requires_grad)
  model.train()
  # The fused AdamW kernel, as the Hugging Face Trainer picks for torch >= 2.8 (its
  # `adamw_torch_fused` default): the strongest stock PyTorch optimizer step on CPU.
  fused = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 8)
  opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4,
                          **({"fused": True} if fused else {}))
  x = torch.as_tensor(tokens, dtype=torch.long)

  def step():
    out = model(input_ids=x[:, :-1], labels=x[:, :-1].clone())
    out.loss.backward()
    opt.step()
    opt.zero_grad()
    return out.loss

  step()
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    l = step()
  dt = time.perf_counter() - t0
  return dict(trainable=n_train, tok_s=tokens.size * _STEPS.value / dt, loss=float(l),
              torch_threads=torch.get_num_threads(), fused_adamw=fused)


def worker(name):
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  jnp.zeros(1).block_until_ready()
  tok = infer.tok_lib.load_tokenizer(infer.assets.default_model_path())
  tokens = _batch(tok, _BATCH.value, _SEQ.value + 1, _DATA.value)
  before = _status("VmRSS")
  res = _torch_worker(name, tokens) if name in TORCH_ROWS else _jax_worker(name, tokens)
  res["peak_mb"] = (_status("VmHWM") - before) / 1e6
  print("RESULT " + json.dumps(res))


def main(argv):
  del argv
  if _TUNER.value:
    worker(_TUNER.value)
    return
  if not pathlib.Path(_DATA.value).is_file():
    sys.exit(f"error: --data={_DATA.value} does not exist")
  unknown = set(_ONLY.value) - set(TUNERS)
  if unknown:
    sys.exit(f"error: --only names unknown rows {sorted(unknown)} (rows: {', '.join(TUNERS)})")
  rows = {}
  for name in [n for n in TUNERS if not _ONLY.value or n in _ONLY.value]:
    cmd = [sys.executable, "-m", "bench.bench_tuners", f"--tuner={name}",
           f"--batch={_BATCH.value}", f"--seq={_SEQ.value}", f"--steps={_STEPS.value}",
           f"--data={_DATA.value}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode or not line:
      print(f"{name}: failed\n{r.stderr[-2000:]}")
      continue
    rows[name] = json.loads(line[-1][len("RESULT "):])
    print(f"{name}: {rows[name]}", flush=True)
  ref = rows.get("peft_lora", {}).get("tok_s")
  full = rows.get("full", {}).get("tok_s")
  torch_full = rows.get("torch_full", {}).get("tok_s")
  print(f"\nSmolLM2-135M, batch {_BATCH.value} x {_SEQ.value} tokens, AdamW, float32, CPU")
  print("| tuner | trainable params | peak host memory (MB) | train tokens/s | vs full | "
        "vs PEFT LoRA | vs torch full |")
  print("|---|---|---|---|---|---|---|")
  for name, r in rows.items():
    vs_full = f"{r['tok_s'] / full:.2f}x" if full else "-"
    vs_peft = f"{r['tok_s'] / ref:.2f}x" if ref else "-"
    # swiftjax full fine-tuning against PyTorch full fine-tuning (and the memory ratio).
    vs_torch_full = (f"{r['tok_s'] / torch_full:.2f}x, memory "
                     f"{r['peak_mb'] / rows['torch_full']['peak_mb']:.2f}x"
                     if torch_full and name == "full" else "-")
    print(f"| {name} | {r['trainable']:,d} | {r['peak_mb']:.0f} | {r['tok_s']:.0f} | "
          f"{vs_full} | {vs_peft} | {vs_torch_full} |")


if __name__ == "__main__":
  app.run(main)
