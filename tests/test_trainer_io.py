"""What a training run writes and survives: eval loss, memory, the loss-curve PNG, merged
weights, --overwrite, and SIGKILL while a checkpoint is being saved."""

import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import jax
import numpy as np

from swiftjax import errors
from swiftjax import infer
from swiftjax import losses
from swiftjax import plot
from swiftjax import run_dir
from swiftjax import train_data
from swiftjax import train_metrics
from swiftjax import trainer
from swiftjax.data import packing
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from swiftjax.models import decoder
from tests import testutil
from tests.test_trainer import _event_tags
from tests.test_trainer import _setup

_TMP_SUFFIX = ".orbax-checkpoint-tmp"


def _write_rows(path: pathlib.Path, pairs) -> str:
  path.write_text("".join(json.dumps({"query": q, "response": r}) + "\n" for q, r in pairs))
  return str(path)


def _cfg(model: str, data: str, **kw) -> trainer.TrainConfig:
  base = dict(model=model, dataset=[data], tuner="lora", lora_rank=4, learning_rate=5e-3,
              max_length=64, batch_size=2, warmup_ratio=0.1)
  base.update(kw)
  return trainer.TrainConfig(**base)


def _sft_loss(model: infer.LoadedModel, tuner_cfg, adapters, rows: packing.Batch,
              batch_size: int) -> float:
  """The SFT loss of `rows` under base + adapters, batch by batch as `fit` evaluates."""
  params = lora.apply(model.params, adapters, tuner_cfg)
  out = []
  for idx in train_metrics.eval_batches(len(rows.tokens), batch_size):
    logits, _ = decoder.apply(params, rows.tokens[idx], model.cfg,
                              segment_ids=rows.segment_ids[idx], positions=rows.positions[idx])
    loss, _ = losses.next_token_loss(logits, rows.tokens[idx], rows.weights[idx],
                                     rows.segment_ids[idx])
    out.append(float(loss))
  return float(np.mean(out))


class EvalLossTest(absltest.TestCase):

  def test_eval_loss_every_n_steps_and_at_the_end(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)
    val = _write_rows(tmp / "val.jsonl", [("the cat", "sat on the mat"),
                                          ("a bird", "can sing a song"),
                                          ("the dog", "ate the bone")])
    cfg = _cfg(model_dir, data, val_dataset=[val], max_steps=21, eval_steps=10)
    summary = trainer.train(cfg, tmp / "run")
    # Every 10 steps, and after the last (21).
    self.assertEqual([e["step"] for e in summary["eval_history"]], [10, 20, 21])
    self.assertEqual([e["step"] for e in summary["log"] if "eval_loss" in e], [10, 20, 21])
    self.assertEqual(summary["eval_loss"], summary["eval_history"][-1]["eval_loss"])
    self.assertEqual(summary["val_rows"], 3)
    # The val rows are close to the training rows: the eval loss falls as training goes on.
    history = [e["eval_loss"] for e in summary["eval_history"]]
    self.assertLess(history[-1], history[0] - 0.1, history)
    # The final eval loss is the loss of the saved adapters on the val rows.
    model = infer.load(model_dir)
    tuner_cfg, adapters = peft_io.load(tmp / "run" / "adapter", model.cfg, model.params)
    _, val_examples, _ = train_data.build_splits(cfg, model.tokenizer)
    want = _sft_loss(model, tuner_cfg, adapters, packing.pack(val_examples, cfg.max_length),
                     cfg.batch_size)
    self.assertAlmostEqual(summary["eval_loss"], want, delta=1e-5 * abs(want))
    # TensorBoard: eval/loss at those steps, memory at every step.
    tags = _event_tags(tmp / "run" / "tensorboard")
    self.assertEqual(tags["eval/loss"], 3)
    self.assertEqual(tags["train/memory_gb"], 21)
    on_disk = json.loads((tmp / "run" / "summary.json").read_text())
    self.assertEqual(on_disk["eval_history"], summary["eval_history"])
    # Peak host RSS: a JAX process holds well over 50 MB and far less than 1 TB.
    self.assertGreater(summary["memory_gb"], 0.05)
    self.assertLess(summary["memory_gb"], 1000)
    stats = jax.local_devices()[0].memory_stats()
    self.assertEqual("device_peak_memory_gb" in summary,
                     bool(stats and "peak_bytes_in_use" in stats))
    # The loss curve shows both lines.
    self.assertEqual(summary["loss_curve"], str(tmp / "run" / "loss_curve.png"))
    self.assertGreater(_orange_pixels(tmp / "run" / "loss_curve.png"), 20)

  def test_split_dataset_ratio_and_end_only_eval(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)   # 16 rows
    cfg = _cfg(model_dir, data, split_dataset_ratio=0.25, max_steps=3, save_steps=2,
               eval_steps=0, packing=False)
    rows, val, stats = train_data.read_splits(cfg, lambda p, **kw: (
        [json.loads(line) for line in pathlib.Path(p).read_text().splitlines()], 0))
    self.assertEqual((len(rows), len(val), stats["val_rows"]), (12, 4, 4))
    again = train_data.read_splits(cfg, lambda p, **kw: (
        [json.loads(line) for line in pathlib.Path(p).read_text().splitlines()], 0))
    self.assertEqual(again[1], val)  # seeded
    summary = trainer.train(cfg, tmp / "run")
    self.assertEqual((summary["examples"], summary["val_examples"]), (12, 4))
    self.assertEqual([e["step"] for e in summary["eval_history"]], [3])  # only at the end
    with self.assertRaisesRegex(errors.ConfigError, "exclude each other"):
      _cfg(model_dir, data, split_dataset_ratio=0.1, val_dataset=[data])
    with self.assertRaisesRegex(errors.ConfigError, "leaves none to train on"):
      train_data.split_rows([{}], 0.5, 0)

  def test_no_validation_set_no_eval(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)
    summary = trainer.train(_cfg(model_dir, data, max_steps=2, eval_steps=1), tmp / "run")
    self.assertEqual((summary["eval_loss"], summary["eval_history"]), (None, []))
    self.assertNotIn("eval/loss", _event_tags(tmp / "run" / "tensorboard"))
    self.assertEqual(_orange_pixels(tmp / "run" / "loss_curve.png"), 0)

  def test_eval_on_a_mesh_matches_one_device(self):
    if jax.device_count() < 8:
      self.skipTest("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    from swiftjax import sharding  # pylint: disable=g-import-not-at-top
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)
    cfg = _cfg(model_dir, data, batch_size=4, max_steps=2, eval_steps=1, packing=False,
               split_dataset_ratio=0.25)
    one = trainer.train(cfg, tmp / "one")
    mesh = trainer.train(cfg, tmp / "mesh", mesh=sharding.make_mesh(2, 2, 2))
    self.assertEqual([e["step"] for e in mesh["eval_history"]], [1, 2])
    np.testing.assert_allclose([e["eval_loss"] for e in mesh["eval_history"]],
                               [e["eval_loss"] for e in one["eval_history"]], rtol=1e-5)

  def test_eval_batches_cover_every_row_with_the_training_shape(self):
    got = train_metrics.eval_batches(5, 2)
    np.testing.assert_array_equal(got, [[0, 1], [2, 3], [4, 0]])
    np.testing.assert_array_equal(train_metrics.eval_batches(1, 3), [[0, 0, 0]])
    np.testing.assert_array_equal(train_metrics.eval_batches(4, 2), [[0, 1], [2, 3]])


def _orange_pixels(path: pathlib.Path) -> int:
  """Pixels of the eval line's colour (matplotlib's tab:orange, #ff7f0e, anti-aliased)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
  near = np.abs(rgb - np.array([0xff, 0x7f, 0x0e])).max(axis=-1) < 40
  return int(near.sum())


class LossCurveTest(absltest.TestCase):

  def test_png_decodes_with_the_size_and_lines(self):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    tmp = pathlib.Path(self.create_tempdir().full_path)
    train = [(s, 3.0 * np.exp(-s / 20)) for s in range(1, 61)]
    evals = [(s, 3.2 * np.exp(-s / 25)) for s in (20, 40, 60)]
    path = plot.loss_curve(tmp / "a.png", train, evals, size=(640, 400))
    self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
    with Image.open(path) as im:
      im.load()  # decodes every chunk (CRCs, zlib stream)
      self.assertEqual((im.format, im.size), ("PNG", (640, 400)))
      rgb = np.asarray(im.convert("RGB")).astype(int)
    background = rgb[2, 2]
    self.assertGreater(int((np.abs(rgb - background).max(axis=-1) > 60).sum()), 500)
    blue = (np.abs(rgb - np.array([0x1f, 0x77, 0xb4])).max(axis=-1) < 40).sum()
    self.assertGreater(int(blue), 100)  # the train line (tab:blue)
    self.assertGreater(_orange_pixels(path), 20)
    train_only = plot.loss_curve(tmp / "b.png", train)
    self.assertEqual(_orange_pixels(train_only), 0)


class MergeAndOverwriteTest(absltest.TestCase):

  def test_launcher_merge_lora_and_overwrite(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)
    out = tmp / "run"
    common = [f"--model={model_dir}", f"--dataset={data}", "--max_length=64", "--batch_size=2",
              "--lora_rank=4", "--learning_rate=5e-3", f"--output_dir={out}"]
    args = common + ["--max_steps=4", "--merge_lora", "--split_dataset_ratio=0.25",
                     "--eval_steps=2"]
    r = testutil.run_module("launch.sft", *args)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    brief = json.loads(r.stdout)
    self.assertEqual(brief["merged"], str(out / "merged"))
    self.assertIsNotNone(brief["eval_loss"])
    for name in ("config.json", "model.safetensors", "tokenizer.json",
                 "generation_config.json"):
      self.assertTrue((out / "merged" / name).is_file(), name)
    # The merged directory loads as a plain model and gives base + adapters' logits.
    base = infer.load(model_dir)
    merged = infer.load(out / "merged")
    tuner_cfg, adapters = peft_io.load(out / "adapter", base.cfg, base.params)
    tokens = np.asarray([[1, 40, 41, 42, 43, 44, 45, 46]], np.int32)
    want, _ = decoder.apply(lora.apply(base.params, adapters, tuner_cfg), tokens, base.cfg)
    got, _ = decoder.apply(merged.params, tokens, merged.cfg)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    # ... and not the base's: the adapters changed something.
    plain, _ = decoder.apply(base.params, tokens, base.cfg)
    self.assertGreater(float(np.abs(np.asarray(plain) - np.asarray(want)).max()), 1e-3)

    # The same directory again: refused in one line, then replaced with --overwrite; a file
    # the run did not write stays.
    (out / "notes.txt").write_text("mine")
    testutil.assert_one_line_error(self, testutil.run_module("launch.sft", *args),
                                   "already holds checkpoints.*--overwrite")
    r = testutil.run_module("launch.sft", *common, "--max_steps=2", "--overwrite")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertEqual(json.loads(r.stdout)["steps"], 2)
    self.assertEqual((out / "notes.txt").read_text(), "mine")
    self.assertFalse((out / "merged").exists())  # the old run's, not asked for this time
    self.assertEqual(_event_tags(out / "tensorboard")["train/loss"], 2)
    self.assertEqual(sorted(p.name for p in (out / "checkpoints").iterdir()), ["2"])

  def test_overwrite_in_the_library(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)
    cfg = _cfg(model_dir, data, max_steps=1)
    # A directory holding only a summary.json (checkpoints removed) still holds a run.
    (tmp / "run").mkdir()
    (tmp / "run" / "summary.json").write_text("{}")
    (tmp / "run" / "data").mkdir()
    with self.assertRaisesRegex(errors.ConfigError, r"already holds a finished run"):
      trainer.train(cfg, tmp / "run")
    with self.assertRaisesRegex(errors.ConfigError, "exclude each other"):
      trainer.train(cfg, tmp / "run", resume=True, overwrite=True)
    summary = trainer.train(cfg, tmp / "run", overwrite=True)
    self.assertEqual(summary["steps"], 1)
    self.assertTrue((tmp / "run" / "data").is_dir())
    # An empty or foreign-only directory is not a run: no flag needed.
    (tmp / "other").mkdir()
    (tmp / "other" / "readme.md").write_text("x")
    self.assertFalse(run_dir.check_workdir(tmp / "other", resume=False, overwrite=False))

  def test_merge_lora_needs_adapters(self):
    with self.assertRaisesRegex(errors.ConfigError, "merge_lora needs a LoRA"):
      trainer.TrainConfig(dataset=["x.jsonl"], tuner="full", merge_lora=True)


# The worker `SigkillTest` starts and kills: trains (resuming when it can) with the config
# given as JSON.
_WORKER = """
import json, sys
from swiftjax import trainer
cfg = trainer.TrainConfig(**json.loads(sys.argv[1]))
trainer.train(cfg, sys.argv[2], resume=True)
"""


def _tmp_steps(directory: pathlib.Path) -> list[int]:
  names = os.listdir(directory) if directory.is_dir() else []
  return [int(re.match(r"\d+", n).group()) for n in names if _TMP_SUFFIX in n]


class SigkillTest(absltest.TestCase):

  def test_kill_while_saving_keeps_the_last_good_checkpoint(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir, data = _setup(tmp)
    kw = dict(model=model_dir, dataset=[data], tuner="lora", lora_rank=4, learning_rate=5e-3,
              max_length=64, batch_size=2, max_steps=20, save_steps=1, save_total_limit=2,
              warmup_ratio=0.1)
    # Saving does not change the numbers: the reference run saves only at the end.
    whole = trainer.train(trainer.TrainConfig(**dict(kw, save_steps=0)), tmp / "whole")
    want = [e["loss"] for e in whole["log"]]

    work = tmp / "killed"
    ckpt = work / "checkpoints"
    rng = random.Random(0)
    in_flight = []
    last = 0
    # Kill three workers: twice the moment an Orbax save is seen in flight (its temporary
    # directory exists), once at a random moment after a new checkpoint was finished.
    for attempt in range(3):
      log = open(tmp / f"worker{attempt}.log", "w")
      proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(kw), str(work)],
                              cwd=testutil.REPO_ROOT, env=testutil.subprocess_env(),
                              stdout=log, stderr=subprocess.STDOUT)
      deadline = time.monotonic() + 120
      try:
        while True:
          self.assertIsNone(proc.poll(), (tmp / f"worker{attempt}.log").read_text()[-2000:])
          self.assertLess(time.monotonic(), deadline)
          if attempt < 2:
            if any(s >= last + 2 for s in _tmp_steps(ckpt)):
              break
          elif any(s > last for s in run_dir.checkpoint_steps(ckpt)):
            time.sleep(rng.uniform(0.0, 0.3))
            break
          time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
      finally:
        proc.wait()
        log.close()
      self.assertEqual(proc.returncode, -signal.SIGKILL)
      in_flight.append(bool(_tmp_steps(ckpt)))
      steps = run_dir.checkpoint_steps(ckpt)
      self.assertGreater(steps[-1], last, steps)  # progress was made and kept
      last = steps[-1]
    self.assertTrue(any(in_flight), "no kill landed while a save was in flight")

    # Resume: the latest complete checkpoint is restored, the partial one is cleaned up, and
    # the run goes on exactly as the uninterrupted one did (bitwise on CPU).
    resumed = trainer.train(trainer.TrainConfig(**kw), work, resume=True)
    self.assertEqual(resumed["resumed_from"], last)
    np.testing.assert_array_equal([e["loss"] for e in resumed["log"]], want[last:])
    self.assertEqual(_tmp_steps(ckpt), [])
    self.assertEqual(run_dir.checkpoint_steps(ckpt), [19, 20])


if __name__ == "__main__":
  absltest.main()
