r"""The main job: teach the embedded SmolLM2-135M-Instruct to call tools with LoRA, and show it.

  python -m launch.demo                                   # `make demo`; minutes on 2 CPU cores
  python -m launch.demo --train_rows=160 --learning_rate=4e-4 --output_dir=output/demo --overwrite

1. Generates the project's own tool-use data (`swiftjax.agent.tooldata`): training
   conversations over 37 tools, and test conversations over 12 held-out tools that never occur
   in training (so a better score means the format and the decision were learnt, not the tools).
2. Scores the base model on the held-out turns: greedy generation with the react agent template,
   ToolBench metrics (`swiftjax.eval.toolbench`: Plan.EM, Act.EM, HalluRate, argument F1,
   Rouge-L).
3. LoRA SFT (`swiftjax.trainer`, react template and react loss_scale) on the training rows.
4. Scores the tuned model on the same turns and prints both score lines and, for the first
   held-out turn that should call a tool and the first that should answer, the reference and
   both models' generations.

Writes `data/` (the generated splits), `run/` (PEFT adapter, Orbax checkpoint, TensorBoard
events, `summary.json`) and `demo.json` (both score sets and every generation) to --output_dir.
"""

import json
import pathlib
import shutil
import time

from absl import flags

from launch import common
from swiftjax import errors

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "output/demo", "Where data, run and results go.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier demo in --output_dir.")
_TRAIN_ROWS = flags.DEFINE_integer("train_rows", 40, "Training conversations.", lower_bound=1)
_EVAL_ROWS = flags.DEFINE_integer("eval_rows", 8, "Held-out test conversations scored turn by "
                                  "turn (about two turns each).", lower_bound=1)
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Generation budget per turn.",
                                       lower_bound=1)
_LR = flags.DEFINE_float("learning_rate", 1e-3, "LoRA peak learning rate.", lower_bound=0.0)
_MAX_LENGTH = flags.DEFINE_integer("max_length", 1024, "Packed row length.", lower_bound=64)
_MAX_STEPS = flags.DEFINE_integer("max_steps", -1, "Stop after this many steps (-1: one epoch).")
_SEED = flags.DEFINE_integer("seed", 0, "Data and training seed.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Turns generated together when scoring.",
                              lower_bound=1)

_WRITTEN = ("data", "run", "demo.json")
_METRICS = ("Plan.EM", "Act.EM", "HalluRate", "F1", "Rouge-L")


def _prepare_output(out: pathlib.Path, overwrite: bool) -> None:
  """Refuses a directory holding anything but an earlier demo; clears that with --overwrite."""
  if not out.exists():
    return
  if not out.is_dir():
    raise errors.SwiftJaxError(f"--output_dir {out} exists and is not a directory")
  present = sorted(p.name for p in out.iterdir())
  foreign = [n for n in present if n not in _WRITTEN]
  if foreign:
    raise errors.SwiftJaxError(
        f"--output_dir {out} holds files this demo did not write ({', '.join(foreign[:3])}); "
        "choose another --output_dir")
  if present and not overwrite:
    raise errors.SwiftJaxError(f"--output_dir {out} holds an earlier demo; pass "
                                      "--overwrite to replace it")
  for name in present:
    path = out / name
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _score_line(name: str, metrics: dict) -> str:
  return f"{name:<26}" + "".join(f"{100 * metrics[m]:>10.1f}" for m in _METRICS)


def _sample(title: str, record_base: dict, record_tuned: dict, reference: str, question: str
            ) -> str:
  def block(label, text):
    lines = (text.strip() or "(empty)").splitlines()
    return "\n".join([f"  {label:<10}{lines[0]}"] + [f"  {'':<10}{x}" for x in lines[1:]])
  return "\n".join([f"{title}: {question}", block("reference", reference),
                    block("base", record_base["prediction"]),
                    block("LoRA", record_tuned["prediction"])])


def main(argv):
  del argv
  import dataclasses  # pylint: disable=g-import-not-at-top
  from swiftjax import infer  # pylint: disable=g-import-not-at-top
  from swiftjax import trainer  # pylint: disable=g-import-not-at-top
  from swiftjax.agent import templates  # pylint: disable=g-import-not-at-top
  from swiftjax.agent import tooldata  # pylint: disable=g-import-not-at-top
  from swiftjax.eval import toolbench  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  out = pathlib.Path(_OUTPUT_DIR.value)
  _prepare_output(out, _OVERWRITE.value)
  data = out / "data"
  split = tooldata.write_splits(data, _TRAIN_ROWS.value, 0, _EVAL_ROWS.value, seed=_SEED.value,
                                distractors=(1, 2))
  print(f"data: {split['train']} training conversations over {split['train_tools']} tools; "
        f"{split['test']} test conversations over {split['test_tools']} held-out tools "
        f"({data})", flush=True)
  test_rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
  turns = [t for row in test_rows for t in toolbench.split_turns(row)]
  refs = [toolbench.reference_of(f"{data / 'test.jsonl'} turn {i}", t)
          for i, t in enumerate(turns)]

  model = infer.load()
  kw = dict(template="react", max_new_tokens=_MAX_NEW_TOKENS.value,
            batch_size=min(_BATCH.value, len(refs)))
  t = time.perf_counter()
  base, base_recs = toolbench.evaluate(model, refs, **kw)
  print(f"base model scored on {base['n']} held-out turns ({base['n_call']} should call a tool) "
        f"in {time.perf_counter() - t:.0f} s", flush=True)

  cfg = trainer.TrainConfig(
      dataset=[str(data / "train.jsonl")], agent_template="react", loss_scale="react",
      learning_rate=_LR.value, max_length=_MAX_LENGTH.value, max_steps=_MAX_STEPS.value,
      lora_rank=8, lora_alpha=32.0, seed=_SEED.value, logging_steps=1)
  summary = trainer.fit(cfg, out / "run", trainer.sft_job(cfg, model))
  print(f"LoRA SFT: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
        f"{summary['final_loss']:.3f}, {summary['tokens_per_s']:.0f} tokens/s, "
        f"{summary['train_seconds'] / 60:.1f} min ({summary['output']})", flush=True)

  tuned_model = dataclasses.replace(
      model, params=infer.apply_adapters(model.params, model.cfg, summary["output"]))
  tuned, tuned_recs = toolbench.evaluate(tuned_model, refs, **kw)

  print()
  print(f"{'held-out tools, % (n=' + str(base['n']) + ')':<26}"
        + "".join(f"{m:>10}" for m in _METRICS))
  print(_score_line("base SmolLM2-135M", base))
  print(_score_line("+ LoRA (react)", tuned))
  print()
  for title, plan in (("should call a tool", "call"), ("should answer", "finish")):
    i = next((k for k, r in enumerate(refs) if r.action.plan == plan), None)
    if i is None:
      continue
    question = next(m["content"] for m in reversed(refs[i].prompt) if m["role"] == "user")
    if refs[i].prompt[-1]["role"] == "tool_response":
      title += " (after the tool's result)"
    reference = templates.to_chat(turns[i]["messages"], turns[i]["tools"], "react")[-1]["content"]
    print(_sample(title, base_recs[i], tuned_recs[i], reference, question))
    print()

  result = {"base": base, "tuned": tuned, "train": {k: v for k, v in summary.items()
                                                     if k != "log"},
            "turns": [{"where": r.where, "base": b["prediction"], "tuned": u["prediction"]}
                      for r, b, u in zip(refs, base_recs, tuned_recs)],
            "wall_seconds": time.perf_counter() - start}
  (out / "demo.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
  print(f"done in {result['wall_seconds'] / 60:.1f} min; results in {out / 'demo.json'}")


if __name__ == "__main__":
  common.run(main)
