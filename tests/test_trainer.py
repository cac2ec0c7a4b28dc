"""SFT trainer: a tiny model learns its data, output is a PEFT adapter, resume is exact."""

import json
import pathlib

from absl.testing import absltest
import numpy as np

from swiftjax import errors
from swiftjax import trainer
from tests import testutil


def _setup(tmp: pathlib.Path) -> tuple[str, str]:
  model_dir = tmp / "model"
  testutil.save_tiny_llama(model_dir)
  testutil.save_tiny_tokenizer(model_dir)
  data = tmp / "data.jsonl"
  pairs = [("the cat", "sat on the mat"), ("the dog", "ate the bone"),
           ("a bird", "can sing a song"), ("what is the capital", "paris is the capital")]
  data.write_text("".join(json.dumps({"query": q, "response": r}) + "\n" for q, r in pairs * 4))
  return str(model_dir), str(data)


def _event_tags(directory: pathlib.Path) -> dict[str, int]:
  """Counts scalar values per tag in TensorBoard event files (TFRecord framing)."""
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  counts: dict[str, int] = {}
  for f in directory.glob("events.out.tfevents.*"):
    data, at = f.read_bytes(), 0
    while at < len(data):
      (n,) = struct.unpack("<Q", data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + n])
      at += 12 + n + 4
      for v in event.summary.value:
        counts[v.tag] = counts.get(v.tag, 0) + 1
  return counts


class TrainerTest(absltest.TestCase):

  def test_lora_sft_learns_and_writes_a_peft_adapter(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model, data = _setup(tmp)
    cfg = trainer.TrainConfig(model=model, dataset=[data], tuner="lora", lora_rank=4,
                              learning_rate=5e-3, max_length=64, batch_size=2, max_steps=40,
                              warmup_ratio=0.1)
    summary = trainer.train(cfg, tmp / "run")
    # A random 64-wide model learns slowly through rank-4 adapters (measured: 4.90 -> 4.20).
    self.assertLess(summary["final_loss"], summary["first_loss"] - 0.4, summary["log"][-3:])
    self.assertTrue((tmp / "run" / "adapter" / "adapter_model.safetensors").is_file())
    self.assertTrue((tmp / "run" / "summary.json").is_file())
    tags = _event_tags(tmp / "run" / "tensorboard")
    self.assertEqual(tags["train/loss"], 40)
    self.assertIn("train/tokens_per_s", tags)
    with self.assertRaisesRegex(errors.ConfigError, "already holds checkpoints"):
      trainer.train(cfg, tmp / "run")

  def test_full_fine_tuning_fits_the_data(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model, data = _setup(tmp)
    cfg = trainer.TrainConfig(model=model, dataset=[data], tuner="full", learning_rate=1e-2,
                              max_length=64, batch_size=2, max_steps=40, warmup_ratio=0.1)
    summary = trainer.train(cfg, tmp / "run")
    self.assertLess(summary["final_loss"], 0.4 * summary["first_loss"])  # 4.90 -> ~1.4

  def test_resume_gives_the_same_losses(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model, data = _setup(tmp)
    cfg = trainer.TrainConfig(model=model, dataset=[data], tuner="lora", lora_rank=4,
                              learning_rate=5e-3, max_length=64, batch_size=2, max_steps=8,
                              save_steps=3, gradient_accumulation_steps=1)
    whole = trainer.train(cfg, tmp / "whole")
    trainer.train(cfg, tmp / "parts", stop_at_step=4)   # checkpoint at 3, "killed" after 4
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(tmp / "parts" / "checkpoints" / "4", ignore_errors=True)
    resumed = trainer.train(cfg, tmp / "parts", resume=True)
    self.assertEqual(resumed["resumed_from"], 3)
    want = [e["loss"] for e in whole["log"][3:]]
    got = [e["loss"] for e in resumed["log"]]
    np.testing.assert_array_equal(got, want)  # bitwise on CPU
    # The run's history covers steps 1-8 once each (step 4 was redone after the resume).
    lines = [json.loads(x) for x in (tmp / "parts" / "metrics.jsonl").read_text().splitlines()]
    self.assertEqual([e["step"] for e in lines if "loss" in e], list(range(1, 9)))
    np.testing.assert_array_equal([e["loss"] for e in lines if "loss" in e],
                                  [e["loss"] for e in whole["log"]])
    self.assertTrue((tmp / "parts" / "loss_curve.png").is_file())

  def test_bad_inputs(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model, data = _setup(tmp)
    with self.assertRaisesRegex(errors.ConfigError, "no example has a trained token"):
      trainer.train(trainer.TrainConfig(model=model, dataset=[data], max_length=4,
                                        max_steps=1), tmp / "a")
    with self.assertRaisesRegex(errors.ConfigError, "tuner 'lorax'"):
      trainer.TrainConfig(dataset=[data], tuner="lorax")


if __name__ == "__main__":
  absltest.main()
