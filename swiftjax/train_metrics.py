"""What a training run measures besides the training loss: the eval loss over validation
rows, memory, the run's metric history (`metrics.jsonl`, which outlives a resume), and a
TensorBoard writer that does nothing (processes other than 0).

    evaluate = train_metrics.make_evaluate(job, batch_size, place_batch, mesh)
    loss = evaluate(trainable, const)   # mean loss over `eval_batches`, no gradient

Validation batches have the training batch's shape (the last one filled up from the start),
so the eval step compiles once and splits over a mesh as the training step does.
"""

import json
import pathlib
import resource
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np

from swiftjax import errors
from swiftjax import sharding

if TYPE_CHECKING:  # a type only: trainer imports this module
  from swiftjax import trainer


METRICS_FILE = "metrics.jsonl"


class History:
  """The run's log entries, one JSON object per line in `workdir/metrics.jsonl`.

  A training step appends `{"step", "loss", ...}` (with `eval_loss` when it was evaluated);
  a final evaluation after the last step appends `{"step", "eval_loss"}`. On resume from
  step k the entries after k (steps about to be redone) are dropped, so the file and the loss
  curve cover the whole run, not only the part since the resume.
  """

  def __init__(self, workdir: pathlib.Path, *, resume_from: int | None, write: bool):
    self.path = pathlib.Path(workdir) / METRICS_FILE
    self.write = write
    self.earlier: list[dict] = []
    if resume_from is not None and self.path.is_file():
      for line in self.path.read_text().splitlines():
        try:
          entry = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill mid-write
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and (
            entry["step"] <= resume_from):
          self.earlier.append(entry)
    if write:
      self.path.write_text("".join(json.dumps(e) + "\n" for e in self.earlier))

  def append(self, entry: dict) -> None:
    if self.write:
      with self.path.open("a") as f:
        f.write(json.dumps(entry) + "\n")

  def points(self, log: list[dict], eval_history: list[dict]
             ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train loss, eval loss) points of the whole run: earlier entries, then this run's."""
    train = [(e["step"], e["loss"]) for e in self.earlier if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in self.earlier if "eval_loss" in e]
    return (train + [(e["step"], e["loss"]) for e in log],
            evals + [(e["step"], e["eval_loss"]) for e in eval_history])


def eval_batches(rows: int, batch_size: int) -> np.ndarray:
  """Row indices `[n_batches, batch_size]` that cover every validation row in order.

  The last batch is filled up with rows from the start, so every batch has the training
  batch's shape: one compiled program, and the same split over a mesh.
  """
  n = -(-rows // batch_size)
  return (np.arange(n * batch_size) % rows).reshape(n, batch_size)


def make_evaluate(job: "trainer.Job", batch_size: int, place_batch: Callable[[dict], Any],
                  mesh: jax.sharding.Mesh | None = None
                  ) -> Callable[[Any, Any], float] | None:
  """`evaluate(trainable, const) -> eval loss`: the mean of `job.loss_fn` over the batches of
  `eval_batches(job.eval_rows, batch_size)`, jitted once, no gradient. None without
  validation rows."""
  if not job.eval_rows:
    return None
  if job.get_eval_batch is None:
    raise errors.ConfigError(f"the job has {job.eval_rows} validation rows but no "
                             "get_eval_batch")
  kwargs = {} if mesh is None else {"out_shardings": sharding.replicated(mesh)}
  loss_fn = jax.jit(lambda trainable, const, batch: job.loss_fn(trainable, const, batch)[0],
                    **kwargs)
  batches = eval_batches(job.eval_rows, batch_size)

  def evaluate(trainable, const) -> float:
    return float(np.mean([float(loss_fn(trainable, const, place_batch(job.get_eval_batch(idx))))
                          for idx in batches]))

  return evaluate


def log_eval(evaluate, trainable, const, step: int, history: list, writer) -> tuple[float, float]:
  """Runs `evaluate`, records it in `history` and TensorBoard; `(eval loss, seconds taken)`."""
  t = time.perf_counter()
  loss = evaluate(trainable, const)
  history.append({"step": step, "eval_loss": loss})
  writer.add_scalar("eval/loss", loss, step)
  return loss, time.perf_counter() - t


def memory_gb() -> dict[str, float]:
  """This process's memory in GB (1e9 bytes): `memory_gb`, the peak host RSS
  (`getrusage`), and, where the backend reports them (not on CPU), the first local device's
  `device_memory_gb` in use and `device_peak_memory_gb`."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
  out = {"memory_gb": peak * (1 if sys.platform == "darwin" else 1024) / 1e9}
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  (backends without the query)
    stats = None
  for key, name in (("bytes_in_use", "device_memory_gb"),
                    ("peak_bytes_in_use", "device_peak_memory_gb")):
    if stats and key in stats:
      out[name] = stats[key] / 1e9
  return out


class NullWriter:
  """Stands in for the TensorBoard writer in processes other than 0: every call is a no-op."""

  def __getattr__(self, name):
    return lambda *args, **kwargs: None
