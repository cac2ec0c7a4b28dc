"""Multimodal SFT on a tiny LLaVA: the loss falls, `freeze_vit` / `freeze_aligner` decide what
changes (bitwise), packed rows give the same loss as padded ones, saved files reload, and
`launch.sft` routes a multimodal model directory to this job."""

import json
import pathlib
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import losses
from swiftjax import mllm
from swiftjax import train_metrics
from swiftjax import trainer
from swiftjax.data import multimodal
from swiftjax.lora import paths
from swiftjax.mllm import llava
from swiftjax.mllm import train as mtrain
from swiftjax.mllm import vit
from swiftjax.models import decoder
from tests import testutil

IMAGE = "<image>"
COLORS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def _tiny_model(directory) -> mllm.LoadedMLLM:
  """A LLaVA assembled from a random tiny Llama, a random CLIP tower and projector."""
  from swiftjax.models import config as model_config  # pylint: disable=g-import-not-at-top
  tok = testutil.save_tiny_tokenizer(directory, vocab_size=128)
  tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
  text_cfg = model_config.ModelConfig(vocab_size=136, hidden_size=32, intermediate_size=48,
                                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                      tie_word_embeddings=True)
  cfg, params = llava.assemble(text_cfg, decoder.init(text_cfg, jax.random.key(0)),
                               vit.VitConfig(24, 48, 2, 4), 16, 4, jax.random.key(1),
                               tok.convert_tokens_to_ids(IMAGE), vision_feature_layer=-1)
  return mllm.LoadedMLLM("tiny", llava, cfg, params, llava.make_processor(cfg, tok), tok)


def _colour_dataset(directory) -> pathlib.Path:
  """Solid-colour images; "what colour ?" -> the colour (learnable only from the image); a
  text-only row and a two-image row mixed in."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  (directory / "img").mkdir(parents=True, exist_ok=True)
  rows = []
  for name, rgb in COLORS.items():
    Image.new("RGB", (16, 16), rgb).save(directory / "img" / f"{name}.png")
    rows.append({"messages": [{"role": "user", "content": f"{IMAGE}what colour ?"},
                              {"role": "assistant", "content": name}],
                 "images": [f"img/{name}.png"]})
  rows.append({"messages": [{"role": "user", "content": "the cat ?"},
                            {"role": "assistant", "content": "sat on the mat"}]})
  rows.append({"messages": [{"role": "user", "content": f"{IMAGE} then {IMAGE} ?"},
                            {"role": "assistant", "content": "red then blue"}],
               "images": ["img/red.png", "img/blue.png"]})
  path = directory / "colours.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _flat(tree):
  return {k: np.asarray(v) for k, v in paths.flatten(tree).items()}


class MllmTrainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.dir = pathlib.Path(cls.tmp.name)
    cls.model = _tiny_model(cls.dir / "model")
    cls.data = _colour_dataset(cls.dir / "data")


  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _cfg(self, **kw):
    base = dict(dataset=[str(self.data)], max_steps=30, batch_size=2, max_length=96,
                learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler_type="constant",
                lora_rank=4, packing=False, logging_steps=1)
    return mtrain.MllmTrainConfig(**dict(base, **kw))

  def _fit(self, cfg, name):
    """`trainer.fit` of the job; returns (summary, the trained trees as saved)."""
    job = mtrain.mllm_job(cfg, self.model)
    trained = {}
    save = job.save
    job.save = lambda workdir, tree: (trained.update(tree=tree), save(workdir, tree))[1]
    return trainer.fit(cfg, self.dir / name, job), trained["tree"], job

  def _same_logits(self, cfg, trained, params):
    """The reloaded params give the logits of the trained trees as the loss saw them."""
    _, const, tuner_cfg = mtrain.split_params(cfg, self.model.params)
    live = mtrain.join_params(trained, const, tuner_cfg)
    batch = mtrain.build_rows(cfg, self.model)[0].batch([0, 4])  # 3 images: the slots
    a = mtrain.forward(llava, self.model.cfg, live, batch, packed=False)
    b = mtrain.forward(llava, self.model.cfg, params, batch, packed=False)
    np.testing.assert_allclose(a, b, atol=1e-4)

  def test_frozen_vit_trained_aligner(self):
    """Full fine-tuning of the LM with the projector: the loss falls, the tower stays bitwise,
    the projector moves, and the saved trees reload to the trained model."""
    before = _flat(self.model.params)
    cfg = self._cfg(tuner="full", freeze_aligner=False)
    self.assertEqual(cfg.trained_parts, ("projector",))
    summary, trained, job = self._fit(cfg, "run_aligner")
    self.assertEqual(set(job.trainable), {"language_model", "projector"})
    self.assertEqual(job.stats["image_slots"], {"pixel_values": 3})
    log = [e["loss"] for e in summary["log"]]
    self.assertLess(np.mean(log[-5:]), 0.5 * np.mean(log[:5]), log)
    # The model's own params were not donated away or changed.
    after = _flat(self.model.params)
    for k, v in before.items():
      np.testing.assert_array_equal(after[k], v, err_msg=k)

    out = pathlib.Path(summary["output"])
    self.assertEqual(out, self.dir / "run_aligner" / "full")
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    saved = load_file(str(out / mtrain.MODULES_FILE))
    self.assertEqual({k.split("/")[0] for k in saved}, {"language_model", "projector"})
    params = mtrain.apply_trained(self.model.params, self.model.cfg, out)
    got = _flat(params)
    for k, v in before.items():
      if k.startswith("vision/"):
        np.testing.assert_array_equal(got[k], v, err_msg=k)  # frozen: bitwise
      else:
        np.testing.assert_array_equal(got[k], saved[k], err_msg=k)
    self.assertNotEmpty([k for k in saved if k.startswith("projector/")
                         and not np.array_equal(saved[k], before[k])])
    self._same_logits(cfg, trained, params)

  def test_unfrozen_vit_lora_changes_and_reloads(self):
    """LoRA with the tower unfrozen: the tower moves (at vit_lr), a zero aligner_lr keeps the
    projector; adapter + modules reload to the trained model."""
    before = _flat(self.model.params)
    cfg = self._cfg(freeze_vit=False, freeze_aligner=False, max_steps=6, vit_lr=5e-3,
                    aligner_lr=0.0)
    self.assertEqual(cfg.lr_multipliers(), {"vision": 0.5, "projector": 0.0})
    summary, trained, _ = self._fit(cfg, "run_vit")
    out = pathlib.Path(summary["output"])
    self.assertTrue((out / "adapter_config.json").is_file())
    params = mtrain.apply_trained(self.model.params, self.model.cfg, out)
    got = _flat(params)
    changed = {k for k in before if not np.array_equal(got[k], before[k])}
    self.assertTrue(any(k.startswith("vision/") for k in changed))
    self.assertTrue(any(k.startswith("language_model/") for k in changed))  # merged adapters
    self.assertFalse(any(k.startswith("projector/") for k in changed))
    self._same_logits(cfg, trained, params)
    with self.assertRaisesRegex(Exception, "neither a PEFT adapter"):
      mtrain.apply_trained(self.model.params, self.model.cfg, self.dir)

  def test_validation_rows_report_their_loss(self):
    """`val_dataset` gives eval losses every `eval_steps`; the last equals the loss of the
    saved trees over the validation rows, computed here batch by batch."""
    cfg = self._cfg(val_dataset=[str(self.data)], eval_steps=3, max_steps=6, batch_size=4)
    summary, trained, job = self._fit(cfg, "run_eval")
    self.assertEqual([e["step"] for e in summary["eval_history"]], [3, 6])
    self.assertEqual(job.eval_rows, job.rows)   # the same file as validation data
    first, last = (e["eval_loss"] for e in summary["eval_history"])
    self.assertLess(last, first)
    _, val, _ = mtrain.build_splits(cfg, self.model)
    _, const, _ = mtrain.split_params(cfg, self.model.params)
    loss = jax.jit(lambda t, c, b: job.loss_fn(t, c, b)[0])  # padded image slots: traced
    want = np.mean([float(loss(trained, const, val.batch(np.unique(idx))))
                    for idx in train_metrics.eval_batches(len(val.members), 4)])
    np.testing.assert_allclose(last, want, rtol=1e-5)

  def test_packed_rows_give_the_padded_loss(self):
    """Several samples per row (attention within each, images in order) = one per row."""
    cfg = self._cfg()
    laid, _ = mtrain.build_rows(cfg, self.model)
    laid = multimodal.layout(laid.examples, 96, len(laid.examples), packing=False)
    packed = multimodal.layout(laid.examples, 192, len(laid.examples), packing=True)
    self.assertGreater(packed.max_segments, 1)
    totals = []
    for rows, is_packed in ((laid, False), (packed, True)):
      idx = np.arange(len(rows.members))
      batch = rows.batch(idx)
      self.assertEqual(batch["image/pixel_values"].shape[0], 5)  # all 5 images, no padding
      logits = mtrain.forward(llava, self.model.cfg, self.model.params, batch, packed=is_packed)
      loss, n = losses.next_token_loss(logits, jnp.asarray(batch["tokens"]),
                                       jnp.asarray(batch["weights"]),
                                       jnp.asarray(batch["segment_ids"]), reduction="sum")
      totals.append((float(loss), int(n)))
    self.assertEqual(totals[0][1], totals[1][1])
    np.testing.assert_allclose(totals[0][0], totals[1][0], rtol=1e-5)


class LaunchTest(absltest.TestCase):

  def test_sft_routes_a_multimodal_directory(self):
    """`launch.sft --model=<LLaVA dir>` trains on the real demo photos and writes the adapter
    and the unfrozen projector; the same flags on a text model are a one-line error."""
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    data = testutil.require_shared("llamafactory", "data", "mllm_demo.json")
    directory = pathlib.Path(self.create_tempdir().full_path)
    model = _tiny_model(directory / "m")
    tok = model.tokenizer
    model.processor.save_pretrained(str(directory / "m"))
    torch.manual_seed(0)
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(
            hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            image_size=16, patch_size=4),
        text_config=testutil.tiny_config("llama", vocab_size=136),
        image_token_index=tok.convert_tokens_to_ids(IMAGE), vision_feature_layer=-1)
    transformers.LlavaForConditionalGeneration._from_config(  # pylint: disable=protected-access
        config).float().save_pretrained(str(directory / "m"))
    out = directory / "run"
    r = testutil.run_module("launch.sft", f"--model={directory / 'm'}", f"--dataset={data}",
                            "--max_steps=2", "--max_length=1024", "--freeze_aligner=false",
                            f"--val_dataset={data}", f"--output_dir={out}")
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    self.assertEqual(summary["steps"], 2)
    self.assertEqual([e["step"] for e in summary["eval_history"]], [2])
    self.assertTrue(np.isfinite(summary["eval_loss"]))
    self.assertEqual(summary["images"], 8)
    self.assertEqual(summary["trained_parts"], ["projector"])
    self.assertTrue((out / "adapter" / "adapter_config.json").is_file())
    self.assertTrue((out / "adapter" / mtrain.MODULES_FILE).is_file())
    r = testutil.run_module("launch.sft", f"--model={directory / 'nope'}", f"--dataset={data}",
                            "--freeze_vit=false")
    testutil.assert_one_line_error(self, r, "--freeze_vit only apply to multimodal models")
    r = testutil.run_module("launch.sft", f"--model={directory / 'm'}", f"--dataset={data}",
                            "--merge_lora", f"--output_dir={directory / 'run2'}")
    testutil.assert_one_line_error(self, r, "--merge_lora only apply to text models")


if __name__ == "__main__":
  absltest.main()
