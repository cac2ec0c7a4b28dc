"""PEFT interop: adapters made by PEFT load into swiftjax, ours load into PEFT, same logits."""

import json
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

from swiftjax import errors
from swiftjax import models
from swiftjax.lora import ia3
from swiftjax.lora import lora
from swiftjax.lora import peft_io
from swiftjax.lora import prompt_tuning
from swiftjax.lora import vera
from swiftjax.models import decoder
from tests import testutil

_KINDS = (("lora_all_linear", dict(target_modules="all-linear")),
          ("lora_qv", dict(target_modules=["q_proj", "v_proj"])),
          ("rslora", dict(target_modules="all-linear", use_rslora=True)),
          ("dora", dict(target_modules=["q_proj", "k_proj", "down_proj"], use_dora=True)))


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens))).logits.float().numpy()


def _tol(want):
  return 1e-4 * max(1.0, float(np.abs(want).max()))


class PeftInteropTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    import tempfile  # pylint: disable=g-import-not-at-top
    cls._tmp = tempfile.TemporaryDirectory()
    cls.dir = pathlib.Path(cls._tmp.name) / "base"
    testutil.save_tiny_llama(cls.dir, num_hidden_layers=3)
    cls.cfg, cls.params = models.from_pretrained(cls.dir)
    cls.tokens = np.random.default_rng(0).integers(0, 128, (2, 16))

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _torch_base(self):
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(self.dir), dtype=torch.float32, attn_implementation="eager").eval()

  @parameterized.named_parameters(*_KINDS)
  def test_peft_made_adapter_loads_with_same_logits(self, kw):
    torch.manual_seed(0)
    pm = peft.get_peft_model(self._torch_base(), peft.LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, **kw)).eval()
    out = pathlib.Path(self.create_tempdir().full_path) / "adapter"
    pm.save_pretrained(str(out))
    want = _torch_logits(pm, self.tokens)
    cfg, adapters = peft_io.load(out, self.cfg, self.params)
    got, _ = decoder.apply(lora.apply(self.params, adapters, cfg), jnp.asarray(self.tokens),
                           self.cfg)
    np.testing.assert_allclose(np.asarray(got), want, atol=_tol(want), rtol=0)
    self.assertEqual(lora.count_params(adapters), pm.get_nb_trainable_parameters()[0])
    self.assertEqual(lora.count_params(self.params) + lora.count_params(adapters),
                     pm.get_nb_trainable_parameters()[1])

  @parameterized.named_parameters(*_KINDS, ("pissa", dict(target_modules="all-linear",
                                                          init_lora_weights="pissa")))
  def test_our_adapter_loads_into_peft_with_same_logits(self, kw):
    kw = dict(kw)
    if isinstance(kw.get("target_modules"), list):
      kw["target_modules"] = tuple(kw["target_modules"])
    cfg = lora.LoraConfig(r=4, alpha=8, **kw)
    params, initial = lora.init(self.params, jax.random.key(0), cfg)
    adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape),
                            initial)
    got, _ = decoder.apply(lora.apply(params, adapters, cfg), jnp.asarray(self.tokens), self.cfg)
    out = pathlib.Path(self.create_tempdir().full_path) / "adapter"
    peft_io.save(out, adapters, cfg, self.cfg, base_model_name_or_path=str(self.dir),
                 initial_adapters=initial)
    pm = peft.PeftModel.from_pretrained(self._torch_base(), str(out)).eval()
    want = _torch_logits(pm, self.tokens)
    np.testing.assert_allclose(np.asarray(got), want, atol=_tol(want), rtol=0)
    # And back: what we wrote reads back into the same adapters (PiSSA: the rank-2r form).
    cfg2, back = peft_io.load(out, self.cfg, self.params)
    again, _ = decoder.apply(lora.apply(self.params, back, cfg2), jnp.asarray(self.tokens),
                             self.cfg)
    np.testing.assert_allclose(np.asarray(again), np.asarray(got), atol=_tol(want))

  def test_ia3_both_ways(self):
    torch.manual_seed(0)
    kw = dict(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    pm = peft.get_peft_model(self._torch_base(), peft.IA3Config(**kw)).eval()
    with torch.no_grad():
      for name, p in pm.named_parameters():
        if "ia3_l" in name:
          p.add_(0.3 * torch.randn_like(p))
    out = pathlib.Path(self.create_tempdir().full_path)
    pm.save_pretrained(str(out / "peft"))
    want = _torch_logits(pm, self.tokens)
    cfg, adapters = peft_io.load_ia3(out / "peft", self.cfg, self.params)
    got, _ = decoder.apply(ia3.apply(self.params, adapters, cfg), jnp.asarray(self.tokens),
                           self.cfg)
    np.testing.assert_allclose(np.asarray(got), want, atol=_tol(want), rtol=0)
    self.assertEqual(lora.count_params(adapters), pm.get_nb_trainable_parameters()[0])
    merged, _ = decoder.apply(ia3.merged(self.params, adapters, cfg), jnp.asarray(self.tokens),
                              self.cfg)
    np.testing.assert_allclose(np.asarray(merged), want, atol=_tol(want), rtol=0)
    # Ours -> PEFT.
    adapters = jax.tree.map(lambda x: x * 1.1, adapters)
    ours, _ = decoder.apply(ia3.apply(self.params, adapters, cfg), jnp.asarray(self.tokens),
                            self.cfg)
    peft_io.save_ia3(out / "ours", adapters, cfg, self.cfg)
    back = peft.PeftModel.from_pretrained(self._torch_base(), str(out / "ours")).eval()
    theirs = _torch_logits(back, self.tokens)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=_tol(theirs), rtol=0)

  def test_prompt_tuning_both_ways(self):
    torch.manual_seed(0)
    pm = peft.get_peft_model(self._torch_base(), peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=5)).eval()
    out = pathlib.Path(self.create_tempdir().full_path)
    pm.save_pretrained(str(out / "peft"))
    want = _torch_logits(pm, self.tokens)[:, 5:]
    cfg, adapters = peft_io.load_prompt_tuning(out / "peft", self.cfg)
    embeds, mask = prompt_tuning.inputs(self.params, adapters, jnp.asarray(self.tokens))
    got, _ = decoder.apply(self.params, None, self.cfg, embeds=embeds, mask=mask)
    np.testing.assert_allclose(np.asarray(got[:, 5:]), want, atol=_tol(want), rtol=0)
    self.assertEqual(lora.count_params(adapters), pm.get_nb_trainable_parameters()[0])
    # Ours -> PEFT.
    _, mine = prompt_tuning.init(self.params, jax.random.key(0), cfg)
    embeds, mask = prompt_tuning.inputs(self.params, mine, jnp.asarray(self.tokens))
    ours, _ = decoder.apply(self.params, None, self.cfg, embeds=embeds, mask=mask)
    peft_io.save_prompt_tuning(out / "ours", mine, cfg, self.cfg)
    back = peft.PeftModel.from_pretrained(self._torch_base(), str(out / "ours")).eval()
    theirs = _torch_logits(back, self.tokens)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=_tol(theirs), rtol=0)

  def test_vera_both_ways(self):
    torch.manual_seed(0)
    pm = peft.get_peft_model(self._torch_base(), peft.VeraConfig(
        r=8, target_modules=["q_proj", "v_proj", "up_proj"])).eval()
    with torch.no_grad():
      for name, p in pm.named_parameters():
        if "vera_lambda" in name:
          p.add_(0.3 * torch.randn_like(p))
    out = pathlib.Path(self.create_tempdir().full_path)
    pm.save_pretrained(str(out / "peft"))
    want = _torch_logits(pm, self.tokens)
    cfg, adapters = peft_io.load_vera(out / "peft", self.cfg)
    got, _ = decoder.apply(vera.apply(self.params, adapters, cfg), jnp.asarray(self.tokens),
                           self.cfg)
    np.testing.assert_allclose(np.asarray(got), want, atol=_tol(want), rtol=0)
    self.assertEqual(vera.trainable_count(adapters), pm.get_nb_trainable_parameters()[0])
    # Ours -> PEFT.
    _, mine = vera.init(self.params, jax.random.key(0), cfg)
    mine = jax.tree.map(lambda x: x + 0.1, mine)
    ours, _ = decoder.apply(vera.apply(self.params, mine, cfg), jnp.asarray(self.tokens),
                            self.cfg)
    peft_io.save_vera(out / "ours", mine, cfg, self.cfg)
    back = peft.PeftModel.from_pretrained(self._torch_base(), str(out / "ours")).eval()
    theirs = _torch_logits(back, self.tokens)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=_tol(theirs), rtol=0)

  def test_unsupported_peft_type(self):
    out = pathlib.Path(self.create_tempdir().full_path) / "ia3"
    pm = peft.get_peft_model(self._torch_base(), peft.IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    pm.save_pretrained(str(out))
    with self.assertRaisesRegex(errors.ConfigError, r"peft_type 'IA3' is not supported"):
      peft_io.load(out, self.cfg)

  def test_adapter_for_another_architecture(self):
    out = pathlib.Path(self.create_tempdir().full_path) / "adapter"
    cfg = lora.LoraConfig(r=4, target_modules=("q_proj",))
    _, adapters = lora.init(self.params, jax.random.key(0), cfg)
    peft_io.save(out, adapters, cfg, self.cfg)
    two_layers = models.ModelConfig(**{**self.cfg.__dict__, "num_layers": 2})
    with self.assertRaisesRegex(errors.CheckpointError,
                                r"targets module 'model\.layers\.2\.self_attn\.q_proj', which a "
                                r"llama model with 2 layers does not have"):
      peft_io.load(out, two_layers)
    wider = models.ModelConfig(**{**self.cfg.__dict__, "hidden_size": 128})
    wider_params = decoder.init(wider, jax.random.key(0))
    with self.assertRaisesRegex(errors.CheckpointError,
                                r"layers/self_attn/q_proj lora_a has shape \(3, 64, 4\), "
                                r"expected \(3, 128, 4\)"):
      peft_io.load(out, wider, wider_params)

  def test_missing_files_and_atomic_save(self):
    empty = pathlib.Path(self.create_tempdir().full_path)
    with self.assertRaisesRegex(errors.CheckpointError, "adapter_config.json is missing"):
      peft_io.load(empty, self.cfg)
    cfg = lora.LoraConfig(r=4, init_lora_weights="pissa", target_modules=("q_proj",))
    _, adapters = lora.init(self.params, jax.random.key(0), cfg)
    with self.assertRaisesRegex(errors.ConfigError, "pass initial_adapters="):
      peft_io.save(empty / "out", adapters, cfg, self.cfg)
    self.assertEqual(list(empty.iterdir()), [])  # nothing half-written
    good = lora.LoraConfig(r=4, target_modules=("q_proj",))
    _, adapters = lora.init(self.params, jax.random.key(0), good)
    peft_io.save(empty / "out", adapters, good, self.cfg)
    config = json.loads((empty / "out" / "adapter_config.json").read_text())
    self.assertEqual((config["peft_type"], config["r"], config["target_modules"]),
                     ("LORA", 4, ["q_proj"]))


@pytest.mark.slow
class SmolLM2PeftTest(absltest.TestCase):

  def test_peft_lora_on_the_real_model(self):
    path = testutil.require_default_model()
    cfg, params = models.from_pretrained(path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    torch.manual_seed(0)
    pm = peft.get_peft_model(ref, peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"],
        init_lora_weights=False)).eval()
    out = pathlib.Path(self.create_tempdir().full_path) / "adapter"
    pm.save_pretrained(str(out))
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 24))
    want = _torch_logits(pm, tokens)
    lcfg, adapters = peft_io.load(out, cfg, params)
    got, _ = decoder.apply(lora.apply(params, adapters, lcfg), jnp.asarray(tokens), cfg)
    diff = float(np.abs(np.asarray(got) - want).max())
    self.assertLessEqual(diff, 1e-3 * max(1.0, float(np.abs(want).max())), diff)
    self.assertEqual(lora.count_params(adapters), pm.get_nb_trainable_parameters()[0])


if __name__ == "__main__":
  absltest.main()
