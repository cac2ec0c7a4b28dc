"""Every family: parity with transformers' PyTorch implementation, KV cache, padding."""

import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
import torch

from swiftjax import models
from swiftjax.models import decoder
from tests import testutil


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


_FAMILIES = [(name, name) for name in testutil.FAMILY_OVERRIDES]


def _tol(want):
  return 1e-4 * max(1.0, float(np.abs(want).max()))


def _load(test, model_type, **overrides):
  """(torch reference, cfg, params) of a fresh tiny checkpoint."""
  tmp = pathlib.Path(test.create_tempdir().full_path)
  ref = testutil.save_tiny_model(tmp, model_type, **overrides)
  cfg, params = models.from_pretrained(tmp)
  return ref, cfg, params


def _check_forward(test, model_type, **overrides):
  ref, cfg, params = _load(test, model_type, **overrides)
  test.assertEqual(cfg.model_type, model_type)
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40))
  want = _torch_logits(ref, tokens)
  got, _ = jax.jit(decoder.apply, static_argnums=2)(params, jnp.asarray(tokens), cfg)
  np.testing.assert_allclose(np.asarray(got), want, atol=_tol(want), rtol=0)


def _check_cached(test, model_type, prefill, unstack=False):
  """Prefills `prefill` tokens, decodes the rest one by one; returns the final cache."""
  ref, cfg, params = _load(test, model_type)
  if unstack:
    params = decoder.unstack_layers(params, donate=True)
  tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 24))
  want = _torch_logits(ref, tokens)
  cache = decoder.init_cache(cfg, batch=2, max_len=32)
  step = jax.jit(decoder.apply, static_argnums=2)
  logits, cache = step(params, jnp.asarray(tokens[:, :prefill]), cfg, cache=cache)
  got = [np.asarray(logits)]
  for t in range(prefill, 24):
    logits, cache = step(params, jnp.asarray(tokens[:, t:t + 1]), cfg, cache=cache)
    got.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=_tol(want), rtol=0)
  return cache


class DecoderParityTest(parameterized.TestCase):

  @parameterized.named_parameters(*_FAMILIES)
  def test_family_logits_match_transformers(self, model_type):
    _check_forward(self, model_type)

  @parameterized.named_parameters(*_FAMILIES)
  def test_family_cached_decoding_matches_transformers(self, model_type):
    _check_cached(self, model_type, prefill=12)

  @parameterized.named_parameters(*_FAMILIES)
  def test_family_cached_decoding_with_unstacked_layers_matches_transformers(self, model_type):
    _check_cached(self, model_type, prefill=12, unstack=True)

  @parameterized.named_parameters(
      ("untied_gqa", {}),
      ("tied_mha", dict(tie_word_embeddings=True, num_key_value_heads=4)),
      ("llama3_rope", dict(rope_scaling=dict(rope_type="llama3", factor=8.0,
                                             low_freq_factor=1.0, high_freq_factor=4.0,
                                             original_max_position_embeddings=32),
                           rope_theta=500000.0)),
      ("head_dim_override", dict(head_dim=32)),
  )
  def test_logits_match_transformers(self, overrides):
    _check_forward(self, "llama", **overrides)

  def test_cached_decoding_matches_full_forward(self):
    cache = _check_cached(self, "llama", prefill=16)
    self.assertEqual(int(cache["end"]), 24)

  def test_left_padding_does_not_change_a_row(self):
    cfg = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=8)
    params = decoder.init(cfg, jax.random.key(0))
    rng = np.random.default_rng(2)
    short = rng.integers(0, 64, (5,))
    long = rng.integers(0, 64, (9,))
    tokens = np.zeros((2, 9), np.int32)
    tokens[0, 4:] = short
    tokens[1] = long
    mask = tokens != 0
    mask[1] = True
    mask[0, :4] = False
    padded, _ = decoder.apply(params, jnp.asarray(tokens), cfg, mask=jnp.asarray(mask))
    alone, _ = decoder.apply(params, jnp.asarray(short[None]), cfg)
    np.testing.assert_allclose(np.asarray(padded[0, 4:]), np.asarray(alone[0]), atol=1e-5)

  def test_param_axes_cover_every_param(self):
    for tie in (False, True):
      cfg = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                               num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
                               tie_word_embeddings=tie)
      shapes = jax.eval_shape(lambda c=cfg: decoder.init(c, jax.random.key(0)))
      axes = decoder.param_axes(cfg)
      is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, str) for a in x)
      self.assertEqual(jax.tree.structure(shapes),
                       jax.tree.structure(jax.tree.map(lambda a: 0, axes, is_leaf=is_axes)))
      jax.tree.map(lambda a, s: self.assertLen(a, s.ndim), axes, shapes, is_leaf=is_axes)

  @parameterized.named_parameters(*_FAMILIES)
  def test_hf_table_names_every_tensor_once(self, model_type):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    testutil.save_tiny_model(tmp, model_type)
    cfg = models.safetensors_loader.read_config(tmp)
    with safe_open(str(tmp / "model.safetensors"), framework="numpy") as f:
      saved = set(f.keys())
    self.assertEqual(set(decoder.hf_tensor_names(cfg)), saved)


class UnstackedLayersTest(absltest.TestCase):
  """`decoder.unstack_layers`: per-layer buffers for inference, same function as the scan."""

  def setUp(self):
    super().setUp()
    # Gemma 2 switches: alternating local/global windows, sandwich norms, soft-capping.
    self.cfg = models.ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
        num_kv_heads=2, head_dim=8, layer_windows=(4, 0, 4), sandwich_norms=True,
        attn_logit_softcap=50.0, final_logit_softcap=30.0)
    self.params = decoder.init(self.cfg, jax.random.key(0))
    self.tokens = jnp.asarray(np.random.default_rng(3).integers(0, 64, (2, 10)))

  def test_same_logits_and_cache_as_the_scan(self):
    cache = decoder.init_cache(self.cfg, 2, 16)
    want, want_cache = decoder.apply(self.params, self.tokens, self.cfg, cache=cache)
    flat = decoder.unstack_layers(self.params)
    self.assertLen(flat["layers"], 3)
    self.assertEqual(flat["layers"][1]["mlp"]["up_proj"]["kernel"].shape, (32, 48))
    got, got_cache = decoder.apply(flat, self.tokens, self.cfg,
                                   cache=decoder.init_cache(self.cfg, 2, 16))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
    for name in ("k", "v"):
      np.testing.assert_allclose(np.asarray(got_cache[name]), np.asarray(want_cache[name]),
                                 atol=1e-6, rtol=0)

  def test_cache_layout(self):
    cache = decoder.init_cache(self.cfg, 2, 16)
    self.assertEqual(cache["k"].shape, (3, 2, 2, 16, 8))  # [L, B, K, S, hd]
    self.assertEqual(cache["v"].shape, (3, 2, 2, 8, 16))  # [L, B, K, hd, S]
    per_layer = decoder.init_cache(self.cfg, 2, 16, per_layer=True)
    self.assertLen(per_layer["k"], 3)
    self.assertEqual(per_layer["k"][2].shape, (2, 2, 8, 16))  # [B, K, hd, S]
    self.assertEqual(per_layer["v"][2].shape, (2, 2, 16, 8))  # [B, K, S, hd]
    for c in (cache, per_layer):
      for name in ("k", "v"):
        self.assertEqual(jax.tree.leaves(c[name])[0].shape[decoder.kv_slot_axis(c)[name]], 16)
    axes = decoder.cache_axes(per_layer)
    self.assertEqual(axes["v"][0], ("cache_batch", "cache_kv_heads", "cache_length", "head_dim"))
    self.assertEqual(axes["k"][0], ("cache_batch", "cache_kv_heads", "head_dim", "cache_length"))
    self.assertEqual(decoder.cache_axes(cache)["v"][-2:], ("head_dim", "cache_length"))
    self.assertLen(axes["k"], 3)

  def test_per_layer_cache_decodes_like_the_stacked_cache(self):
    flat = decoder.unstack_layers(self.params)
    self.assertTrue(decoder.cache_uses_layers(flat))
    self.assertFalse(decoder.cache_uses_layers(self.params))
    mask = jnp.ones((2, 10), bool).at[0, :3].set(False)  # left padding on row 0
    want_cache = decoder.init_cache(self.cfg, 2, 16)
    got_cache = decoder.init_cache(self.cfg, 2, 16, per_layer=True)
    tokens = self.tokens
    for step in range(3):  # prefill, then two one-token steps past the window of 4
      m = mask if step == 0 else jnp.ones((2, 1), bool)
      want, want_cache = decoder.apply(self.params, tokens, self.cfg, mask=m, cache=want_cache)
      got, got_cache = decoder.apply(flat, tokens, self.cfg, mask=m, cache=got_cache)
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
      tokens = jnp.argmax(want[:, -1:], axis=-1)
    for name in ("k", "v"):
      self.assertIsInstance(got_cache[name], tuple)
      # Per layer: keys [B, K, hd, S], values [B, K, S, hd], the stacked layout's last two
      # axes swapped.
      np.testing.assert_allclose(np.stack(got_cache[name]).swapaxes(-1, -2),
                                 np.asarray(want_cache[name]), atol=1e-6, rtol=0)
    self.assertEqual(int(got_cache["end"]), 12)

  def test_per_layer_cache_needs_unstacked_layers(self):
    with self.assertRaisesRegex(ValueError, "per-layer cache .* needs unstacked layers"):
      decoder.apply(self.params, self.tokens, self.cfg,
                    cache=decoder.init_cache(self.cfg, 2, 16, per_layer=True))
    short = decoder.init_cache(self.cfg, 2, 16, per_layer=True)
    short = {**short, "k": short["k"][:2], "v": short["v"][:2]}
    with self.assertRaisesRegex(ValueError, "per-layer cache of 2 layers for a config of 3"):
      decoder.apply(decoder.unstack_layers(self.params), self.tokens, self.cfg, cache=short)

  def test_roundtrip_and_donation(self):
    kept = jax.tree.map(np.asarray, self.params)
    flat = decoder.unstack_layers(self.params, donate=True)
    self.assertTrue(self.params["layers"]["mlp"]["up_proj"]["kernel"].is_deleted())
    self.assertIs(decoder.unstack_layers(flat), flat)
    back = decoder.stack_layers(flat)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, back), kept)

  def test_float_kinds_unstack_and_integer_kinds_stay_stacked(self):
    from swiftjax import int8  # pylint: disable=g-import-not-at-top
    from swiftjax.lora import lora  # pylint: disable=g-import-not-at-top
    tcfg = lora.LoraConfig(r=2, alpha=4)
    frozen, adapters = lora.init(self.params, jax.random.key(1), tcfg)
    adapters = jax.tree.map(lambda a: a + 0.1, adapters)  # B starts at zero: make it count
    wrapped = lora.apply(frozen, adapters, tcfg)
    want, _ = decoder.apply(wrapped, self.tokens, self.cfg)
    flat = decoder.unstack_layers(wrapped)
    self.assertIsInstance(flat["layers"][2]["self_attn"]["q_proj"]["kernel"], lora.LoraWeight)
    got, _ = decoder.apply(flat, self.tokens, self.cfg)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
    q = int8.quantize_params(self.params)
    self.assertIs(decoder.unstack_layers(q), q)

  def test_layer_count_must_match_the_config(self):
    flat = decoder.unstack_layers(self.params)
    short = {**flat, "layers": flat["layers"][:2]}
    with self.assertRaisesRegex(ValueError, "2 unstacked layers for a config of 3"):
      decoder.apply(short, self.tokens, self.cfg)


class PackedPrefillTest(parameterized.TestCase):
  """`decoder.apply_with_prefill`: a decode step and packed prompts in one pass."""

  def setUp(self):
    super().setUp()
    # Windows (4 and global), sandwich norms and soft-capping all touch the two parts.
    self.cfg = models.ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
        num_kv_heads=2, head_dim=8, layer_windows=(4, 0, 4), sandwich_norms=True,
        attn_logit_softcap=50.0, final_logit_softcap=30.0, qkv_bias=True)
    self.params = decoder.init(self.cfg, jax.random.key(0))

  @parameterized.parameters(False, True)
  def test_equals_a_separate_decode_step_and_separate_prefills(self, unstack):
    cfg = self.cfg
    params = decoder.unstack_layers(self.params) if unstack else self.params
    rng = np.random.default_rng(0)
    # Two cached rows (row 1 idle on this step) after a 7-token prefill with left padding.
    cache = decoder.init_cache(cfg, 2, 16, per_layer=unstack)
    first = jnp.asarray(rng.integers(0, 64, (2, 7)))
    pmask = jnp.ones((2, 7), bool).at[1, :2].set(False)
    _, cache = decoder.apply(params, first, cfg, mask=pmask, cache=cache)
    step = jnp.asarray(rng.integers(0, 64, (2, 1)))
    active = jnp.asarray([[True], [False]])
    want, want_cache = decoder.apply(params, step, cfg, mask=active, cache=cache,
                                     last_only=True)
    # Prompts of 5 and 6 tokens (past the window of 4) packed into 13 columns.
    prompts = [rng.integers(0, 64, 5), rng.integers(0, 64, 6)]
    tokens = np.zeros((1, 13), np.int32)
    segments = np.zeros((1, 13), np.int32)
    positions = np.zeros((1, 13), np.int32)
    tokens[0, :5], tokens[0, 5:11] = prompts
    segments[0, :5], segments[0, 5:11] = 1, 2
    positions[0, :5], positions[0, 5:11] = np.arange(5), np.arange(6)
    last = jnp.asarray([4, 10, 10])  # the third entry is unused
    got, got_cache, plogits, pkv = decoder.apply_with_prefill(
        params, step, cfg, cache, mask=active, prefill_tokens=jnp.asarray(tokens),
        prefill_segments=jnp.asarray(segments), prefill_positions=jnp.asarray(positions),
        prefill_last=last)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
    for name in ("k", "v", "valid", "next_pos"):
      np.testing.assert_allclose(np.asarray(jax.tree.leaves(got_cache[name])),
                                 np.asarray(jax.tree.leaves(want_cache[name])), atol=1e-6)
    self.assertEqual(plogits.shape, (3, 64))
    # In the cache's layout; compared below as keys [L, 1, K, W, hd], values [L, 1, K, hd, W].
    ks = np.asarray(pkv["k"] if not unstack else np.stack(pkv["k"]))
    vs = np.asarray(pkv["v"] if not unstack else np.stack(pkv["v"]))
    if unstack:
      ks, vs = ks.swapaxes(-1, -2), vs.swapaxes(-1, -2)
    self.assertEqual(ks.shape, (3, 1, 2, 13, 8))
    self.assertEqual(vs.shape, (3, 1, 2, 8, 13))
    for p, (lo, hi) in zip(prompts, ((0, 5), (5, 11))):
      alone = decoder.init_cache(cfg, 1, 8, per_layer=unstack)
      ref, alone = decoder.apply(params, jnp.asarray(p)[None], cfg, cache=alone)
      np.testing.assert_allclose(np.asarray(plogits[0 if lo == 0 else 1]),
                                 np.asarray(ref[0, -1]), atol=1e-5, rtol=0)
      ref_k = np.asarray(jax.tree.leaves(alone["k"]))
      ref_v = np.asarray(jax.tree.leaves(alone["v"]))
      ref_k = ref_k.reshape(3, 1, 2, 8, 8)
      ref_v = ref_v.reshape(3, 1, 2, 8, 8)
      if unstack:
        ref_k, ref_v = ref_k.swapaxes(-1, -2), ref_v.swapaxes(-1, -2)
      np.testing.assert_allclose(ks[..., lo:hi, :], ref_k[..., :hi - lo, :], atol=1e-5)
      np.testing.assert_allclose(vs[..., lo:hi], ref_v[..., :hi - lo], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(plogits[2]), np.asarray(plogits[1]))

  def test_rejects_what_it_cannot_pack(self):
    block = dict(prefill_tokens=jnp.zeros((1, 4), jnp.int32),
                 prefill_segments=jnp.ones((1, 4), jnp.int32),
                 prefill_positions=jnp.arange(4)[None], prefill_last=jnp.asarray([3]))
    with self.assertRaisesRegex(ValueError, "packed prefill block needs a cache"):
      decoder.apply_with_prefill(self.params, jnp.zeros((1, 1), jnp.int32), self.cfg, None,
                                 mask=jnp.ones((1, 1), bool), **block)


if __name__ == "__main__":
  absltest.main()
