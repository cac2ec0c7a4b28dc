"""A run's output directory (`workdir`): what a run writes there, and whether it may.

    run_dir.check_workdir(workdir, resume=False, overwrite=False)   # before loading the model
    run_dir.prepare_workdir(workdir, resume=False, overwrite=True)  # removes the earlier run

A workdir holds a run when `checkpoints/` has a finished step or `summary.json` exists; such a
workdir is refused unless the run is resumed or overwritten, and overwriting removes only
`RUN_OUTPUTS`. After training, `finish_merge` (with `merge_lora`) writes `workdir/merged`, the
base model with the adapters folded in (`merge_output`).
"""

import json
import pathlib
import shutil

import jax

from swiftjax import errors
from swiftjax.train_config import TrainConfig

# What runs write into their workdir (`fit`, the jobs' `save`, `merge_output`). `overwrite`
# removes these names and nothing else.
RUN_OUTPUTS = ("checkpoints", "tensorboard", "adapter", "full", "merged",
               "value_head.safetensors", "summary.json", "loss_curve.png", "metrics.jsonl")


def checkpoint_steps(directory: pathlib.Path) -> list[int]:
  """Steps of the finished Orbax checkpoints in `directory` (temporary ones are not steps)."""
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def check_workdir(workdir: str | pathlib.Path, *, resume: bool, overwrite: bool) -> bool:
  """Whether `workdir` holds another run that `overwrite` is to replace.

  A run is there when `checkpoints/` holds a step or `summary.json` exists; it is refused
  unless `resume` (continue it) or `overwrite`.

  Raises:
    ConfigError: a run is there and neither flag is given, or both flags are.
  """
  workdir = pathlib.Path(workdir)
  if resume and overwrite:
    raise errors.ConfigError("resume and overwrite exclude each other: continue the run in "
                             f"{workdir} or replace it, not both")
  steps = checkpoint_steps(workdir / "checkpoints")
  if resume or not (steps or (workdir / "summary.json").is_file()):
    return False
  if not overwrite:
    what = (f"checkpoints of a run (up to step {steps[-1]})" if steps
            else "a finished run (summary.json)")
    raise errors.ConfigError(f"{workdir} already holds {what}; pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --output_dir")
  return True


def prepare_workdir(workdir: pathlib.Path, *, resume: bool, overwrite: bool) -> None:
  """`check_workdir`, then with `overwrite` removes the earlier run's outputs
  (`RUN_OUTPUTS`) and leaves every other file where it is."""
  if not check_workdir(workdir, resume=resume, overwrite=overwrite):
    return
  multi = jax.process_count() > 1
  if multi:  # every process has looked before any file goes
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("swiftjax.run_dir.prepare_workdir:checked")
  if jax.process_index() == 0:
    for name in RUN_OUTPUTS:
      path = workdir / name
      if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
      elif path.exists() or path.is_symlink():
        path.unlink()
  if multi:
    multihost_utils.sync_global_devices("swiftjax.run_dir.prepare_workdir:removed")


def merge_output(workdir: str | pathlib.Path, model: str | None,
                 adapter_dir: str | pathlib.Path) -> pathlib.Path:
  """Folds a run's PEFT adapters into the base `model` (None: the embedded default) and writes
  a Hugging Face directory, `workdir/merged` (config.json, safetensors, generation config,
  tokenizer files), with `swiftjax.export` (atomically; an earlier `merged` is replaced)."""
  from swiftjax import export  # pylint: disable=g-import-not-at-top
  return export.export(pathlib.Path(workdir) / "merged", model, [adapter_dir],
                       overwrite=True).output_dir


def finish_merge(cfg: TrainConfig, workdir: str | pathlib.Path, summary: dict) -> dict:
  """With `cfg.merge_lora`, `merge_output` of the run's adapters (process 0); the summary
  (and `summary.json`) gains `merged`, the directory."""
  if not cfg.merge_lora or jax.process_index() != 0:
    return summary
  summary["merged"] = str(merge_output(workdir, cfg.model, summary["output"]))
  (pathlib.Path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
