"""Preference training: pair data, masks, the adapters-off reference, every loss, the launcher."""

import json
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swiftjax import errors
from swiftjax import infer
from swiftjax import preference
from swiftjax import rlhf
from swiftjax import train_metrics
from swiftjax import trainer
from swiftjax.data import formats
from swiftjax.data import pairs
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from tests import testutil

# (prompt, chosen, rejected) in the tiny tokenizer's corpus.
_PAIRS = [("the cat", "sat on the mat", "ate the bone"),
          ("the dog", "ate the bone", "can sing a song"),
          ("a bird", "can sing a song", "sat on the mat"),
          ("what is the capital", "paris is the capital", "the cat sat")]


def _tiny(tmp: pathlib.Path) -> str:
  testutil.save_tiny_llama(tmp / "model")
  testutil.save_tiny_tokenizer(tmp / "model")
  return str(tmp / "model")


def _write_pairs(path: pathlib.Path, triples=_PAIRS) -> str:
  path.write_text("".join(json.dumps({
      "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": c}],
      "rejected_response": r}) + "\n" for q, c, r in triples))
  return str(path)


class PairDataTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("ms_swift", {"messages": [{"role": "system", "content": "s"},
                                 {"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "c"}],
                    "rejected_response": "r"}, ["system", "user"]),
      ("llamafactory", {"conversations": [{"from": "human", "value": "q"}],
                        "chosen": {"from": "gpt", "value": "c"},
                        "rejected": {"from": "gpt", "value": "r"}}, ["user"]),
      ("prompt_strings", {"prompt": "q", "chosen": "c", "rejected": "r"}, ["user"]),
      ("implicit_prompt", {"chosen": [{"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "c"}],
                           "rejected": [{"role": "user", "content": "q"},
                                        {"role": "assistant", "content": "r"}]}, ["user"]),
      ("hh_transcript", {"chosen": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: q\n\nAssistant: c",
                         "rejected": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: q\n\nAssistant: r"},
       ["user", "assistant", "user"]),
      ("v1_messages", {"chosen_messages": [
          {"role": "user", "content": [{"type": "text", "value": "q"}]},
          {"role": "assistant", "content": [{"type": "text", "value": "c"}]}],
                       "rejected_messages": [
          {"role": "user", "content": [{"type": "text", "value": "q"}]},
          {"role": "assistant", "content": [{"type": "text", "value": "r"}]}]}, ["user"]),
  )
  def test_layouts(self, row, prompt_roles):
    got = pairs.normalize_pair(row)
    self.assertEqual([m["role"] for m in got["prompt"]], prompt_roles)
    self.assertEqual(got["prompt"][-1]["content"], "q")
    self.assertEqual([(m["role"], m["content"]) for m in got["chosen"]], [("assistant", "c")])
    self.assertEqual([(m["role"], m["content"]) for m in got["rejected"]], [("assistant", "r")])

  def test_kto_rows_and_pairs_as_kto(self):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
           "label": False}
    got = pairs.normalize_kto(row)
    self.assertEqual((got["label"], got["completion"][0]["content"]), (False, "a"))
    trl = pairs.normalize_kto({"prompt": "q", "completion": "a", "label": True})
    self.assertEqual((trl["label"], trl["prompt"][0]["role"]), (True, "user"))
    both = pairs.pairs_as_kto([pairs.normalize_pair({"prompt": "q", "chosen": "c",
                                                     "rejected": "r"})])
    self.assertEqual([(r["completion"][0]["content"], r["label"]) for r in both],
                     [("c", True), ("r", False)])

  def test_bad_rows_name_file_and_line(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    path = tmp / "p.jsonl"
    good = {"prompt": "q", "chosen": "c", "rejected": "r"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "q", "chosen": "c"}) + "\n"
                    + json.dumps({"chosen": "no transcript", "rejected": "x"}) + "\n")
    with self.assertRaisesRegex(formats.RowError, rf"^{path}:2: no preference pair"):
      pairs.read(path)
    rows, skipped = pairs.read(path, skip_bad_rows=True)
    self.assertEqual((len(rows), skipped), (1, 2))
    kto = tmp / "k.json"
    kto.write_text(json.dumps([{"prompt": "q", "completion": "a", "label": "maybe"}]))
    with self.assertRaisesRegex(formats.RowError, rf"^{kto}\[0\]: label must be true or false"):
      pairs.read(kto, "kto")
    with self.assertRaisesRegex(formats.RowError, r":1: a KTO row \(with `label`\) where a "
                                "chosen/rejected pair is needed"):
      pairs.read(_kto_file(tmp))

  def test_real_files(self):
    for parts, kind, n in [(("llamafactory", "data", "dpo_en_demo.json"), "pair", 300),
                           (("llamafactory", "data", "v1_dpo_demo.jsonl"), "pair", 10),
                           (("llamafactory", "data", "kto_en_demo.json"), "kto", 300),
                           (("hh_rlhf", "harmless-base", "test.jsonl.gz"), "pair", 2312)]:
      rows, skipped = pairs.read(testutil.require_shared(*parts), kind)
      self.assertEqual((len(rows), skipped), (n, 0), parts)
      key = "completion" if kind == "kto" else "chosen"
      self.assertTrue(all(r[key][0]["role"] == "assistant" for r in rows), parts)

  def test_masks_token_by_token(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    tok = testutil.save_tiny_tokenizer(tmp)
    prompt = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"},
              {"role": "user", "content": "the dog"}]
    for answer in ("ate the bone", "can sing a song"):
      ex = pairs.render_answer(tok, prompt, [{"role": "assistant", "content": answer}])
      head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
      self.assertTrue(ex.text.startswith(head))
      self.assertEqual(ex.text[len(head):], f" {answer}\n")
      enc = tok(ex.text, add_special_tokens=False, return_offsets_mapping=True)
      np.testing.assert_array_equal(ex.input_ids, enc["input_ids"])
      for i, (start, end) in enumerate(enc["offset_mapping"]):
        # A token is trained exactly when its characters are in the answer (after the
        # generation prompt); the earlier assistant turn "sat" is not.
        self.assertEqual(ex.weights[i], float(start >= len(head)), (i, ex.text[start:end]))
      # (The tiny vocabulary has no "\n" token, so compare characters, not decoded tokens.)
      trained = "".join(ex.text[a:b] for (a, b), w in zip(enc["offset_mapping"], ex.weights)
                        if w)
      self.assertEqual(trained, ex.text[len(head):])

  def test_batch_layout(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    tok = testutil.save_tiny_tokenizer(tmp)
    rows, _ = pairs.read(_write_pairs(tmp / "p.jsonl"))
    data, desirable, stats = pairs.build(rows, tok, max_length=64)
    self.assertEqual(data.tokens.shape[:2], (4, 2))
    self.assertEqual(data.tokens.shape[2] % 16, 0)
    self.assertEqual(stats["examples"], 4)
    batch = pairs.take(data, desirable, np.array([2, 0]))
    self.assertEqual(batch["tokens"].shape, (4, data.tokens.shape[2]))
    for j, (row, side) in enumerate([(2, 0), (2, 1), (0, 0), (0, 1)]):  # pairs side by side
      want = pairs.render_answer(tok, rows[row]["prompt"],
                                 rows[row]["chosen" if side == 0 else "rejected"])
      n = len(want.input_ids)
      np.testing.assert_array_equal(batch["tokens"][j, :n], want.input_ids)
      np.testing.assert_array_equal(batch["weights"][j, :n], want.weights)
      self.assertEqual(batch["segment_ids"][j].sum(), n)  # 1 on tokens, 0 on padding
    kto_rows = [{"prompt": [{"role": "user", "content": q}],
                 "completion": [{"role": "assistant", "content": c}], "label": i % 2 == 0,
                 "tools": None} for i, (q, c, _) in enumerate(_PAIRS)]
    kdata, _, kstats = pairs.build(kto_rows, tok, max_length=64, seed=3)
    self.assertEqual((kstats["desirable"], kstats["undesirable"]), (2, 2))
    # The second sequence of a KTO row is its prompt with another row's completion.
    seconds = []
    for i, r in enumerate(kto_rows):
      got = kdata.tokens[i, 1, :int(kdata.segment_ids[i, 1].sum())]
      seconds.append([j for j, o in enumerate(kto_rows) if np.array_equal(
          got, pairs.render_answer(tok, r["prompt"], o["completion"]).input_ids)])
    self.assertEqual(sorted(j for js in seconds for j in js), [0, 1, 2, 3])  # a derangement
    self.assertTrue(all(js != [i] for i, js in enumerate(seconds)), seconds)


def _kto_file(tmp: pathlib.Path) -> str:
  path = tmp / "kto_rows.jsonl"
  path.write_text(json.dumps({"prompt": "q", "completion": "a", "label": True}) + "\n")
  return str(path)


class ReferenceTest(absltest.TestCase):

  def test_reference_is_the_base_without_adapters(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model = infer.load(_tiny(tmp))
    rows, _ = pairs.read(_write_pairs(tmp / "p.jsonl"))
    data, desirable, _ = pairs.build(rows, model.tokenizer, 64)
    batch = pairs.take(data, desirable, np.arange(4))
    tuner_cfg = lora.LoraConfig(r=4, alpha=8)
    frozen, adapters = lora.init(model.params, jax.random.key(0), tuner_cfg)
    # Trained-looking adapters: B is no longer zero, so the policy differs from the base.
    adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape),
                            adapters)
    logps_fn = rlhf.make_preference_logps_fn(
        model.cfg, tuner_cfg, preference.PreferenceConfig("dpo"))
    policy, ref = jax.jit(logps_fn)({"model": adapters}, {"base": frozen}, batch)
    # A separate copy of the base weights, loaded again from disk, without any tuner.
    separate = infer.load(str(tmp / "model"))
    want = jax.jit(rlhf.preference_logps, static_argnums=1)(separate.params, separate.cfg,
                                                               batch)
    np.testing.assert_array_equal(ref.sum, want.sum)
    np.testing.assert_array_equal(ref.mean, want.mean)
    self.assertGreater(float(jnp.max(jnp.abs(policy.sum - ref.sum))), 1e-2)
    # No gradient reaches the adapters through the reference.
    grads = jax.jit(jax.grad(
        lambda a: jnp.sum(logps_fn({"model": a}, {"base": frozen}, batch)[1].sum)))(adapters)
    self.assertEqual(max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)), 0.0)


def _assert_learned(test, margin: float, accuracy: float, msg=None):
  # Measured over 6 runs (the tiny tokenizer's merges vary between runs): per-pair margins
  # 0.42 to 0.82 after 24 steps, accuracy 1.0; before training both are exactly 0.
  test.assertGreater(margin, 0.2, msg)
  test.assertEqual(accuracy, 1.0, msg)


class PairLossTest(parameterized.TestCase):

  @parameterized.parameters("sigmoid", "ipo", "hinge")
  def test_dpo_variants_read_the_logps_trl_reads(self, loss_type):
    lp = [preference.SequenceLogps(jnp.array([-10.0, -12.0]) + d, jnp.array([-1.0, -1.5]) + d,
                                   jnp.array([10.0, 8.0])) for d in (0.0, -1.0, 0.5, 0.2)]
    cfg = preference.PreferenceConfig("dpo", beta=0.1, loss_type=loss_type)
    loss, chosen, rejected = preference.pair_loss(cfg, *lp)
    field = "mean" if loss_type == "ipo" else "sum"
    want = preference.dpo_loss(*(getattr(x, field) for x in lp), 0.1, loss_type)
    np.testing.assert_allclose(loss, want[0], rtol=1e-6)
    np.testing.assert_allclose(chosen - rejected, want[1] - want[2], rtol=1e-6)

  def test_config_defaults_and_errors(self):
    self.assertEqual(preference.PreferenceConfig("simpo").beta, 2.0)
    self.assertEqual(preference.PreferenceConfig("dpo").beta, 0.1)
    self.assertFalse(preference.PreferenceConfig("orpo").needs_reference)
    self.assertTrue(preference.PreferenceConfig("kto").needs_reference)
    with self.assertRaisesRegex(Exception, "rlhf_type 'ppo'"):
      rlhf.RlhfConfig(dataset=["x"], rlhf_type="ppo")


class TrainPreferenceTest(parameterized.TestCase):

  def test_dpo_with_lora_separates_its_training_pairs(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir = _tiny(tmp)
    cfg = rlhf.RlhfConfig(model=model_dir, dataset=[_write_pairs(tmp / "p.jsonl")],
                             rlhf_type="dpo", beta=0.1, lora_rank=4, learning_rate=5e-3,
                             max_length=64, batch_size=2, max_steps=24, warmup_ratio=0.1)
    summary = rlhf.train_preference(cfg, tmp / "run")
    # Before the first update the policy is the reference: every implicit reward is 0.
    first = summary["log"][0]
    self.assertEqual((first["rewards/margins"], first["rewards/accuracies"]), (0.0, 0.0))
    with self.assertRaises(AssertionError):
      _assert_learned(self, first["rewards/margins"], first["rewards/accuracies"])
    # After training, measured on every training pair with the saved PEFT adapters.
    model = infer.load(model_dir)
    tuner_cfg, adapters = peft_io.load(tmp / "run" / "adapter", model.cfg, model.params)
    rows, _ = pairs.read(cfg.dataset[0])
    data, desirable, _ = pairs.build(rows, model.tokenizer, 64)
    batch = pairs.take(data, desirable, np.arange(len(rows)))
    policy, ref = rlhf.make_preference_logps_fn(model.cfg, tuner_cfg, cfg.preference)(
        {"model": adapters}, {"base": model.params}, batch)
    pc, pr, rc, rr = (preference.SequenceLogps(*side) for lp in (policy, ref)
                      for side in zip(*(pairs.sides(x) for x in lp)))
    _, chosen, rejected = preference.pair_loss(cfg.preference, pc, pr, rc, rr)
    metrics = {k: float(v) for k, v in preference.reward_metrics(chosen, rejected).items()}
    _assert_learned(self, metrics["rewards/margins"], metrics["rewards/accuracies"], metrics)
    self.assertLess(summary["final_loss"], summary["first_loss"])

  @parameterized.named_parameters(
      # DPO with LoRA runs in the test above; here DPO's reference is a copy of the params.
      ("dpo_full", "dpo", "sigmoid", "full"),
      ("orpo", "orpo", "sigmoid", "lora"), ("simpo", "simpo", "sigmoid", "lora"),
      ("cpo", "cpo", "sigmoid", "lora"), ("kto", "kto", "sigmoid", "lora"),
      ("rm", "rm", "sigmoid", "lora"))
  def test_one_step_of_each_loss(self, rlhf_type, loss_type, tuner):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model = _shared_model()
    cfg = rlhf.RlhfConfig(model=model.path, dataset=[_write_pairs(tmp / "p.jsonl")],
                             rlhf_type=rlhf_type, loss_type=loss_type, tuner=tuner,
                             label_smoothing=0.1 if loss_type == "sigmoid" else 0.0,
                             lora_rank=2, max_length=64, batch_size=2)
    job = rlhf.preference_job(cfg, model)
    optimizer, _ = trainer.make_optimizer(cfg, 10)
    step = jax.jit(trainer.make_step(job.loss_fn, optimizer))
    trainable, _, metrics = step(job.trainable, optimizer.init(job.trainable),
                                 job.get_batch(np.array([0, 1])), job.const)
    for key, value in metrics.items():
      self.assertTrue(np.isfinite(float(value)), (key, value))
    self.assertGreater(float(metrics["grad_norm"]), 0.0)
    self.assertIn("rewards/margins", metrics)
    if rlhf_type == "rm":
      self.assertEqual(trainable["value_head"].shape, (model.cfg.hidden_size, 1))
    if tuner == "full":  # the reference stayed the initial params
      np.testing.assert_array_equal(job.const["reference"]["norm"]["scale"],
                                    model.params["norm"]["scale"])

  def test_eval_loss_on_held_out_pairs(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir = _tiny(tmp)
    cfg = rlhf.RlhfConfig(model=model_dir, dataset=[_write_pairs(tmp / "p.jsonl", _PAIRS * 2)],
                          rlhf_type="dpo", beta=0.1, lora_rank=4, learning_rate=5e-3,
                          max_length=64, batch_size=2, max_steps=4, eval_steps=2,
                          split_dataset_ratio=0.25)
    summary = rlhf.train_preference(cfg, tmp / "run")
    self.assertEqual((summary["examples"], summary["val_examples"]), (6, 2))
    self.assertEqual([e["step"] for e in summary["eval_history"]], [2, 4])
    # The final eval loss is the DPO loss of the saved adapters on the held-out pairs.
    model = infer.load(model_dir)
    tuner_cfg, adapters = peft_io.load(tmp / "run" / "adapter", model.cfg, model.params)
    _, val, _ = rlhf.build_preference_splits(cfg, model.tokenizer)
    loss_fn = rlhf.make_preference_loss_fn(model.cfg, tuner_cfg, cfg.preference)
    want = np.mean([float(loss_fn({"model": adapters}, {"base": model.params, "reference": None},
                                  pairs.take(*val, idx))[0])
                    for idx in train_metrics.eval_batches(len(val[1]), cfg.batch_size)])
    self.assertAlmostEqual(summary["eval_loss"], want, delta=1e-5)
    # Before any update the policy is the reference (loss log 2); after 4 steps it is not.
    self.assertGreater(abs(summary["eval_loss"] - float(np.log(2.0))), 1e-4)
    self.assertTrue((tmp / "run" / "loss_curve.png").is_file())

  def test_merge_lora_refused_for_a_reward_model(self):
    with self.assertRaisesRegex(errors.ConfigError, "value head"):
      rlhf.RlhfConfig(dataset=["p.jsonl"], rlhf_type="rm", merge_lora=True)


_MODEL_CACHE = {}


def _shared_model():
  """One tiny model for the one-step tests (loading is cheap; this saves the disk writes)."""
  if "model" not in _MODEL_CACHE:
    import tempfile  # pylint: disable=g-import-not-at-top
    # Kept in the cache so the directory lives (and is removed) with the test process.
    _MODEL_CACHE["dir"] = tempfile.TemporaryDirectory(prefix="rlhf_tiny_")
    _MODEL_CACHE["model"] = infer.load(_tiny(pathlib.Path(_MODEL_CACHE["dir"].name)))
  return _MODEL_CACHE["model"]


class LaunchRlhfTest(absltest.TestCase):

  def test_tiny_run_and_a_bad_row(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    model_dir = _tiny(tmp)
    data = _write_pairs(tmp / "p.jsonl")
    r = testutil.run_module("launch.rlhf", f"--model={model_dir}", f"--dataset={data}",
                            "--rlhf_type=rm", "--max_steps=2", "--max_length=32",
                            "--lora_rank=2", f"--output_dir={tmp / 'run'}")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    out = json.loads(r.stdout)
    self.assertEqual((out["steps"], out["rlhf_type"]), (2, "rm"))
    self.assertIn("rewards/accuracies", out["final_metrics"])
    self.assertTrue((tmp / "run" / "adapter" / "adapter_config.json").is_file())
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    head = load_file(str(tmp / "run" / "adapter" / "value_head.safetensors"))["score.weight"]
    self.assertEqual(head.shape, (1, 64))
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "c", "rejected": "r"}) + "\n"
                   + json.dumps({"prompt": "q", "chosen": "c"}) + "\n")
    r = testutil.run_module("launch.rlhf", f"--model={model_dir}", f"--dataset={bad}",
                            f"--output_dir={tmp / 'r2'}")
    self.assertEqual(r.returncode, 2, r.stderr[-2000:])
    self.assertNotIn("Traceback", r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    self.assertEqual(len(lines), 1, r.stderr)
    self.assertRegex(lines[0], rf"^error: {bad}:2: no preference pair")


@pytest.mark.slow
class DefaultModelTest(absltest.TestCase):

  def test_dpo_on_the_embedded_model_and_hh_pairs(self):
    testutil.require_default_model()
    hh = testutil.require_shared("hh_rlhf", "harmless-base", "test.jsonl.gz")
    tmp = pathlib.Path(self.create_tempdir().full_path)
    r = testutil.run_module("launch.rlhf", f"--dataset={hh}#4", "--max_steps=2",
                            "--max_length=256", "--truncation_strategy=left",
                            f"--output_dir={tmp / 'run'}", timeout=600)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    out = json.loads(r.stdout)
    self.assertEqual(out["steps"], 2)
    self.assertAlmostEqual(out["first_loss"], float(np.log(2.0)), places=5)


if __name__ == "__main__":
  absltest.main()
