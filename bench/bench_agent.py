r"""The agent-training experiment (issue 6): ToolBench metrics of the base model vs LoRA SFT with
and without the react loss_scale, on held-out tools and on real data.

  python -m bench.bench_agent --output_dir=runs/agent_bench --seeds=0,1,2
  python -m bench.bench_agent --output_dir=runs/agent_bench --table_only

Every step is a launcher subprocess, exactly as a user would type it, and a step whose output
already exists is not repeated (so an interrupted run continues):

1. `launch.tool_data`: the project's synthetic tool-use dataset (train tools and held-out test
   tools are disjoint).
2. Reference turns (`swiftjax.eval.toolbench.split_turns`): `heldout.jsonl` from the first
   --heldout_rows test conversations; `real.jsonl` from real data in ../shared/data:
   the last --glaive_rows rows of LLaMA-Factory's glaive tool-call demo and the ToolBench answer
   trees whose turns fit --real_max_prompt_tokens.
3. `launch.eval --eval_dataset=toolbench:...` with the base model (the embedded
   SmolLM2-135M-Instruct), prompted with the same react template.
4. For each seed: `launch.sft` LoRA on --train_rows training rows with the react template,
   `--loss_scale=default` ("sft") and `--loss_scale=react` ("sft+loss_scale"), then
   `launch.eval --adapters=...` on both reference sets.
5. A markdown table: Plan.EM, Act.EM, HalluRate, F1, Rouge-L (percent; mean ± std over seeds)
   per split and variant, plus training minutes per run.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/agent_bench", "Where everything is written.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
_VARIANTS = flags.DEFINE_list("variants", ["sft", "sft+loss_scale"], "Trained variants.")
_TRAIN_ROWS = flags.DEFINE_integer("train_rows", 128, "Training conversations per run.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 1024, "Packed row length (1536 peaked at 9.4 GB).")
_LR = flags.DEFINE_float("learning_rate", 4e-4, "LoRA learning rate.")
_EPOCHS = flags.DEFINE_float("num_train_epochs", 1.0, "Epochs over --train_rows.")
_DISTRACTORS = flags.DEFINE_string("distractors", "1,2", "Distractor tools per row (min,max).")
_HELDOUT_ROWS = flags.DEFINE_integer("heldout_rows", 25, "Test conversations scored per turn.")
_GLAIVE_ROWS = flags.DEFINE_integer("glaive_rows", 20, "Real glaive conversations scored.")
_TOOLBENCH_TURNS = flags.DEFINE_integer("toolbench_turns", 15, "Real ToolBench turns at most.")
_REAL_MAX_PROMPT = flags.DEFINE_integer("real_max_prompt_tokens", 2048,
                                        "Longest real prompt kept (react-rendered tokens).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 96, "Generation budget per turn.")
_DATA_ROOT = flags.DEFINE_string("data_root", "../shared/data", "The shared real data.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Print the table of finished runs only.")

VARIANT_LOSS_SCALE = {"sft": "default", "sft+loss_scale": "react"}
SPLITS = ("heldout", "real")
METRICS = ("Plan.EM", "Act.EM", "HalluRate", "F1", "Rouge-L")


def _run(args: list[str], log: pathlib.Path) -> float:
  """Runs `python -m args...` from the repository root; returns its wall time in seconds."""
  env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
  env.pop("XLA_FLAGS", None)
  start = time.time()
  print("+ python -m " + " ".join(args), flush=True)
  with open(log, "w", encoding="utf-8") as f:
    r = subprocess.run([sys.executable, "-m", *args], stdout=f, stderr=subprocess.STDOUT,
                       env=env, check=False, cwd=pathlib.Path(__file__).resolve().parent.parent)
  if r.returncode:
    sys.exit(f"failed (exit {r.returncode}); see {log}:\n" + log.read_text()[-3000:])
  return time.time() - start


def _write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  os.replace(tmp, path)


def make_references(out: pathlib.Path, data: pathlib.Path, shared: pathlib.Path) -> None:
  """`heldout.jsonl` and `real.jsonl`: one row per assistant-side turn."""
  from swiftjax import assets  # pylint: disable=g-import-not-at-top
  from swiftjax import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  from swiftjax.agent import converters  # pylint: disable=g-import-not-at-top
  from swiftjax.agent import templates  # pylint: disable=g-import-not-at-top
  from swiftjax.data import formats  # pylint: disable=g-import-not-at-top
  from swiftjax.eval import toolbench  # pylint: disable=g-import-not-at-top

  if not (out / "heldout.jsonl").exists():
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    turns = [t for r in rows[:_HELDOUT_ROWS.value] for t in toolbench.split_turns(r)]
    _write_jsonl(out / "heldout.jsonl", turns)
  if (out / "real.jsonl").exists():
    return
  tokenizer = tok_lib.load_tokenizer(assets.default_model_path())

  def fits(turn):
    prompt = templates.to_chat(turn["messages"][:-1], turn["tools"], "react")
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text)["input_ids"]) <= _REAL_MAX_PROMPT.value

  glaive, _ = formats.read_rows(shared / "llamafactory/data/glaive_toolcall_en_demo.json")
  turns = [t for r in glaive[-_GLAIVE_ROWS.value:] for t in toolbench.split_turns(r)]
  toolbench_turns = []
  for path in sorted((shared / "toolbench/data_example/answer").glob("G*_answer/*.json")):
    row = json.loads(path.read_text())
    try:
      converted = converters.from_toolbench(row)
    except ValueError:
      continue  # answer trees without a valid trajectory
    toolbench_turns += [t for t in toolbench.split_turns(converted) if fits(t)]
  turns += toolbench_turns[:_TOOLBENCH_TURNS.value]
  _write_jsonl(out / "real.jsonl", [t for t in turns if fits(t)])


def evaluate(out: pathlib.Path, name: str, extra: list[str]) -> None:
  for split in SPLITS:
    result = out / "eval" / f"{name}.{split}.json"
    if result.exists():
      continue
    result.parent.mkdir(parents=True, exist_ok=True)
    _run(["launch.eval", f"--eval_dataset=toolbench:{out / 'refs' / (split + '.jsonl')}",
          "--agent_template=react", f"--max_new_tokens={_MAX_NEW_TOKENS.value}",
          f"--output={result}", *extra], out / "logs" / f"eval.{name}.{split}.log")


def train(out: pathlib.Path, variant: str, seed: str) -> pathlib.Path:
  run = out / "runs" / f"{variant}.seed{seed}"
  if not (run / "summary.json").exists():
    seconds = _run(["launch.sft", f"--dataset={out / 'data' / 'train.jsonl'}#{_TRAIN_ROWS.value}",
                    "--agent_template=react", f"--loss_scale={VARIANT_LOSS_SCALE[variant]}",
                    f"--max_length={_MAX_LENGTH.value}", f"--learning_rate={_LR.value}",
                    f"--num_train_epochs={_EPOCHS.value}", "--lora_rank=8", "--lora_alpha=32",
                    f"--seed={seed}", f"--output_dir={run}"],
                   out / "logs" / f"train.{variant}.seed{seed}.log")
    (run / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
  return run


def table(out: pathlib.Path) -> str:
  lines = ["| split | model | runs | " + " | ".join(METRICS) + " | train min/run |",
           "|---|---|---|" + "---|" * (len(METRICS) + 1)]
  for split in SPLITS:
    for variant in ["base", *_VARIANTS.value]:
      names = ["base"] if variant == "base" else [f"{variant}.seed{s}" for s in _SEEDS.value]
      found = [json.loads((out / "eval" / f"{n}.{split}.json").read_text())["metrics"]
               for n in names if (out / "eval" / f"{n}.{split}.json").exists()]
      if not found:
        continue
      cells = []
      for m in METRICS:
        v = 100 * np.asarray([f[m] for f in found], float)
        cells.append(f"{v.mean():.1f}" if len(v) == 1 else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}")
      minutes = [float((out / "runs" / n / "wall_seconds.txt").read_text()) / 60
                 for n in names if (out / "runs" / n / "wall_seconds.txt").exists()]
      turns = f"{found[0]['n']} turns, {found[0]['n_call']} calls"
      lines.append(f"| {split} ({turns}) | {variant} | {len(found)} | " + " | ".join(cells)
                   + (f" | {np.mean(minutes):.1f} |" if minutes else " | - |"))
  return "\n".join(lines)


def main(argv):
  del argv
  out = pathlib.Path(_OUTPUT_DIR.value).resolve()
  if not _TABLE_ONLY.value:
    shared = pathlib.Path(_DATA_ROOT.value).resolve()
    if not shared.is_dir():
      sys.exit(f"error: --data_root {shared} is not a directory")
    for sub in ("refs", "logs", "eval", "runs"):
      (out / sub).mkdir(parents=True, exist_ok=True)
    if not (out / "data" / "train.jsonl").exists():
      _run(["launch.tool_data", f"--output_dir={out / 'data'}", "--train=2000", "--valid=100",
            "--test=300", "--seed=0", f"--distractors={_DISTRACTORS.value}", "--overwrite"],
           out / "logs" / "tool_data.log")
    make_references(out / "refs", out / "data", shared)
    evaluate(out, "base", [])
    for seed in _SEEDS.value:
      for variant in _VARIANTS.value:
        run = train(out, variant, seed)
        evaluate(out, f"{variant}.seed{seed}", [f"--adapters={run / 'adapter'}"])
        print(table(out), flush=True)
  print(table(out))


if __name__ == "__main__":
  app.run(main)
