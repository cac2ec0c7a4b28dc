"""Gradient checkpointing (`ModelConfig.remat`, `TrainConfig.gradient_checkpointing`): the same
loss and gradients as without it, less memory for the backward pass, and the trainer's flag
reaches the model."""

import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import infer
from swiftjax import models
from swiftjax import rlhf
from swiftjax import trainer
from swiftjax.lora import lora
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig
from tests import testutil

_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
             "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _policies(jaxpr) -> list:
  """The checkpoint policy of every `jax.checkpoint` in `jaxpr`, nested jaxprs (scan) included.

  Found by the `policy` parameter rather than the primitive's name, which jax has renamed.
  """
  found = []

  def walk(j):
    j = getattr(j, "jaxpr", j)
    for eqn in j.eqns:
      if "policy" in eqn.params and "jaxpr" in eqn.params:
        found.append(eqn.params["policy"])
      for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
          if hasattr(v, "eqns") or hasattr(getattr(v, "jaxpr", None), "eqns"):
            walk(v)

  walk(jaxpr)
  return found


def _max_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                            jax.tree.leaves(b)))


class DecoderRematTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    with tempfile.TemporaryDirectory() as tmp:
      testutil.save_tiny_llama(tmp, num_hidden_layers=3)
      cls.cfg, cls.params = models.from_pretrained(tmp)
    rng = np.random.default_rng(0)
    cls.tokens = jnp.asarray(rng.integers(3, cls.cfg.vocab_size, (2, 24)), jnp.int32)
    # Two packed segments per row, so the closure's masks and positions are recomputed too.
    seg = np.ones((2, 24), np.int32)
    seg[:, 10:] = 2
    seg[1, 20:] = 0
    cls.segment_ids = jnp.asarray(seg)
    cls.positions = jnp.asarray(np.concatenate([np.arange(10), np.arange(14)])[None]
                                .repeat(2, 0), jnp.int32)

  def _loss(self, params, cfg):
    logits, _ = decoder.apply(params, self.tokens, cfg, segment_ids=self.segment_ids,
                              positions=self.positions)
    logp = jax.nn.log_softmax(logits[:, :-1])
    picked = jnp.take_along_axis(logp, self.tokens[:, 1:, None], axis=-1)[..., 0]
    return -jnp.mean(picked * (self.segment_ids[:, 1:] > 0))

  @parameterized.named_parameters(("full", "full"), ("dots", "dots"))
  def test_loss_and_gradients_match_no_remat(self, policy):
    grad = jax.jit(jax.value_and_grad(self._loss), static_argnums=1)
    want_loss, want_grads = grad(self.params, self.cfg)
    cfg = dataclasses.replace(self.cfg, remat=policy)
    loss, grads = grad(self.params, cfg)
    self.assertEqual(_policies(jax.make_jaxpr(self._loss, static_argnums=1)(self.params, cfg)),
                     [_POLICIES[policy]])
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    # Recomputation in float32 repeats the same operations: equal up to rounding.
    self.assertLess(_max_diff(grads, want_grads), 1e-6)
    self.assertGreater(_max_diff(want_grads, jax.tree.map(jnp.zeros_like, want_grads)), 1e-3)

  def test_lora_adapter_gradients_match_no_remat(self):
    tcfg = lora.LoraConfig(r=4, alpha=8)
    frozen, adapters = lora.init(self.params, jax.random.key(0), tcfg)
    # B starts at zero; make it non-zero so the gradient of A is not trivially zero.
    adapters = jax.tree.map(lambda a: a + 0.01, adapters)

    def loss(a, cfg):
      return self._loss(lora.apply(frozen, a, tcfg), cfg)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    want = grad(adapters, self.cfg)
    got = grad(adapters, dataclasses.replace(self.cfg, remat="full"))
    self.assertLess(_max_diff(got, want), 1e-6)

  def test_generation_with_a_cache_ignores_remat(self):
    cfg = dataclasses.replace(self.cfg, remat="full")
    cache = decoder.init_cache(cfg, 2, 32)
    fn = lambda p, c: decoder.apply(p, self.tokens, c, cache=cache)[0]
    self.assertEqual(_policies(jax.make_jaxpr(fn, static_argnums=1)(self.params, cfg)), [])
    np.testing.assert_array_equal(fn(self.params, cfg), fn(self.params, self.cfg))

  def test_config_is_static_and_checked(self):
    cfg = dataclasses.replace(self.cfg, remat="dots")
    self.assertNotEqual(hash(cfg), hash(self.cfg))
    self.assertEqual(cfg, dataclasses.replace(self.cfg, remat="dots"))
    with self.assertRaisesRegex(errors.ConfigError, "remat policy 'some'"):
      dataclasses.replace(self.cfg, remat="some")

  def test_export_ignores_remat(self):
    from swiftjax.export import hf  # pylint: disable=g-import-not-at-top
    self.assertEqual(hf.hf_config(dataclasses.replace(self.cfg, remat="full")),
                     hf.hf_config(self.cfg))  # a training-only setting, not written

  def test_full_remat_needs_less_backward_memory(self):
    # Six layers at 512 tokens: without remat the scan keeps every layer's attention scores
    # [B, K, G, T, T] and MLP activations for the backward pass; with full remat only the
    # layer inputs [L, B, T, D]. Measured on CPU (jax 0.10.2): temp 183 MB none, 52 MB dots,
    # 39 MB full.
    cfg = ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=192, num_layers=6,
                      num_heads=4, num_kv_heads=2, head_dim=16)
    params = jax.eval_shape(lambda: decoder.init(cfg, jax.random.key(0)))
    tokens = jax.ShapeDtypeStruct((2, 512), jnp.int32)

    def temp_bytes(policy):
      def loss(p, t):
        logits, _ = decoder.apply(p, t, dataclasses.replace(cfg, remat=policy))
        return jnp.mean(logits)
      analysis = jax.jit(jax.grad(loss)).lower(params, tokens).compile().memory_analysis()
      if analysis is None:
        self.skipTest("this backend gives no compiled memory analysis")
      return analysis.temp_size_in_bytes

    none, dots, full = temp_bytes("none"), temp_bytes("dots"), temp_bytes("full")
    self.assertLess(full, 0.5 * none, (none, dots, full))
    self.assertLess(dots, none, (none, dots, full))


def _tiny_run(tmp: pathlib.Path) -> str:
  testutil.save_tiny_llama(tmp / "model")
  testutil.save_tiny_tokenizer(tmp / "model")
  return str(tmp / "model")


class TrainerRematTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp_dir = tempfile.TemporaryDirectory()
    cls.tmp = pathlib.Path(cls.tmp_dir.name)
    cls.model = _tiny_run(cls.tmp)

  @classmethod
  def tearDownClass(cls):
    cls.tmp_dir.cleanup()
    super().tearDownClass()

  def test_config_checks_the_policy(self):
    cfg = trainer.TrainConfig(dataset=["x.jsonl"])
    self.assertEqual((cfg.gradient_checkpointing, cfg.remat), (False, "none"))
    self.assertEqual(trainer.TrainConfig(dataset=["x.jsonl"], gradient_checkpointing=True,
                                         remat_policy="dots").remat, "dots")
    with self.assertRaisesRegex(errors.ConfigError, "remat_policy 'none'"):
      trainer.TrainConfig(dataset=["x.jsonl"], remat_policy="none")

  def test_sft_with_gradient_checkpointing_gives_the_same_losses(self):
    data = self.tmp / "sft.jsonl"
    pairs = [("the cat", "sat on the mat"), ("the dog", "ate the bone"),
             ("a bird", "can sing a song"), ("what is the capital", "paris is the capital")]
    data.write_text("".join(json.dumps({"query": q, "response": r}) + "\n"
                            for q, r in pairs * 2))
    runs = {}
    for ckpt in (False, True):
      cfg = trainer.TrainConfig(model=self.model, dataset=[str(data)], tuner="lora",
                                lora_rank=4, learning_rate=5e-3, max_length=64, batch_size=2,
                                max_steps=4, gradient_checkpointing=ckpt)
      job = trainer.sft_job(cfg, infer.load(self.model))
      batch = job.get_batch(np.arange(2))
      jaxpr = jax.make_jaxpr(lambda t, c, b: job.loss_fn(t, c, b)[0])(
          job.trainable, job.const, batch)
      self.assertEqual(_policies(jaxpr), [_POLICIES["full"]] if ckpt else [])
      runs[ckpt] = trainer.train(cfg, self.tmp / f"sft_{ckpt}")
    want = [(e["loss"], e["grad_norm"]) for e in runs[False]["log"]]
    got = [(e["loss"], e["grad_norm"]) for e in runs[True]["log"]]
    self.assertLen(got, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    self.assertNotEqual(got[0][0], got[-1][0])  # it trained
    # The written adapter config does not depend on the flag.
    self.assertEqual(*(json.loads((self.tmp / f"sft_{c}" / "adapter" /
                                   "adapter_config.json").read_text()) for c in (False, True)))

  def test_dpo_with_gradient_checkpointing_gives_the_same_losses(self):
    data = self.tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps({
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": c}],
        "rejected_response": r}) + "\n" for q, c, r in [
            ("the cat", "sat on the mat", "ate the bone"),
            ("the dog", "ate the bone", "can sing a song"),
            ("a bird", "can sing a song", "sat on the mat"),
            ("what is the capital", "paris is the capital", "the cat sat")]))
    logs = {}
    for ckpt in (False, True):
      cfg = rlhf.RlhfConfig(model=self.model, dataset=[str(data)], rlhf_type="dpo",
                            tuner="lora", lora_rank=4, learning_rate=5e-3, max_length=32,
                            batch_size=2, max_steps=3, gradient_checkpointing=ckpt)
      job = rlhf.preference_job(cfg, infer.load(self.model))
      batch = job.get_batch(np.arange(2))
      jaxpr = jax.make_jaxpr(lambda t, c, b: job.loss_fn(t, c, b)[0])(
          job.trainable, job.const, batch)
      # The policy's pass and the reference pass (base without adapters) both checkpoint.
      self.assertEqual(_policies(jaxpr), [_POLICIES["full"]] * 2 if ckpt else [])
      summary = rlhf.train_preference(cfg, self.tmp / f"dpo_{ckpt}")
      logs[ckpt] = [(e["loss"], e["grad_norm"]) for e in summary["log"]]
    np.testing.assert_allclose(logs[True], logs[False], rtol=1e-5)


class FlagsTest(absltest.TestCase):

  def test_launcher_flags_reach_the_train_config(self):
    script = ("import json, sys\n"
              "from absl import flags\n"
              "from launch import train_flags\n"
              "from swiftjax import train_config\n"
              "flags.FLAGS(sys.argv)\n"
              "cfg = train_config.TrainConfig(**train_flags.config_kwargs(None))\n"
              "print(json.dumps([cfg.gradient_checkpointing, cfg.remat]))\n")
    outputs = []
    for args in ([], ["--gradient_checkpointing"],
                 ["--gradient_checkpointing", "--remat_policy=dots"]):
      r = subprocess.run([sys.executable, "-c", script, "--dataset=d.jsonl", *args],
                         cwd=testutil.REPO_ROOT, env=testutil.subprocess_env(),
                         capture_output=True, text=True, timeout=120)
      self.assertEqual(r.returncode, 0, r.stderr[-2000:])
      outputs.append(json.loads(r.stdout))
    self.assertEqual(outputs, [[False, "none"], [True, "full"], [True, "dots"]])


if __name__ == "__main__":
  absltest.main()
