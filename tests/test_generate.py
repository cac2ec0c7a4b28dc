"""Generation: greedy parity with transformers, sampling controls, batching."""

import pathlib

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import torch

from swiftjax import errors
from swiftjax import generate as gen
from swiftjax import models
from tests import testutil


class GenerateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    import tempfile  # pylint: disable=g-import-not-at-top
    cls._tmp = tempfile.TemporaryDirectory()
    cls.ref = testutil.save_tiny_llama(pathlib.Path(cls._tmp.name))
    cls.cfg, cls.params = models.from_pretrained(cls._tmp.name)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _hf_greedy(self, prompt, n):
    with torch.no_grad():
      out = self.ref.generate(torch.as_tensor([prompt]), max_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()

  def test_greedy_matches_transformers_for_a_ragged_batch(self):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 128, n).tolist() for n in (5, 11, 17)]
    got = gen.generate(self.params, self.cfg, prompts, gen.SamplingConfig(max_new_tokens=12),
                       eos_ids=[-5])
    for p, g in zip(prompts, got):
      self.assertEqual(g, self._hf_greedy(p, 12))

  def test_unstacked_layers_generate_the_same_tokens(self):
    from swiftjax.models import decoder  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(4)
    prompts = [rng.integers(3, 128, n).tolist() for n in (4, 9)]
    sampling = gen.SamplingConfig(max_new_tokens=10)
    want = gen.generate(self.params, self.cfg, prompts, sampling, eos_ids=[-5])
    got = gen.generate(decoder.unstack_layers(self.params), self.cfg, prompts, sampling,
                       eos_ids=[-5])
    self.assertEqual(got, want)

  def test_top_k_one_and_tiny_top_p_are_greedy(self):
    prompts = [[5, 6, 7, 8]]
    greedy = gen.generate(self.params, self.cfg, prompts, gen.SamplingConfig(max_new_tokens=8),
                          eos_ids=[-5])
    for s in (gen.SamplingConfig(max_new_tokens=8, temperature=1.0, top_k=1),
              gen.SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=1e-6)):
      self.assertEqual(gen.generate(self.params, self.cfg, prompts, s, eos_ids=[-5]), greedy)

  def test_sampling_is_seeded(self):
    s = gen.SamplingConfig(max_new_tokens=16, temperature=1.5)
    a = gen.generate(self.params, self.cfg, [[5, 6]], s, rng=jax.random.key(1), eos_ids=[-5])
    b = gen.generate(self.params, self.cfg, [[5, 6]], s, rng=jax.random.key(1), eos_ids=[-5])
    c = gen.generate(self.params, self.cfg, [[5, 6]], s, rng=jax.random.key(2), eos_ids=[-5])
    self.assertEqual(a, b)
    self.assertNotEqual(a, c)

  def test_eos_stops_a_row(self):
    first = gen.generate(self.params, self.cfg, [[5, 6, 7]], gen.SamplingConfig(max_new_tokens=4),
                         eos_ids=[-5])[0]
    out = gen.generate(self.params, self.cfg, [[5, 6, 7]], gen.SamplingConfig(max_new_tokens=4),
                       eos_ids=[first[1]])[0]
    self.assertEqual(out, first[:1])

  def test_stop_fn_ends_only_its_row(self):
    prompts = [[5, 6, 7], [9, 10, 11]]
    full = gen.generate(self.params, self.cfg, prompts, gen.SamplingConfig(max_new_tokens=6),
                        eos_ids=[-5])
    cut = gen.generate(self.params, self.cfg, prompts, gen.SamplingConfig(max_new_tokens=6),
                       eos_ids=[-5], stop_fn=lambda row, ids: row == 0 and len(ids) == 2)
    self.assertEqual(cut, [full[0][:2], full[1]])

  def test_streaming_callback_sees_every_token(self):
    seen = []
    out = gen.generate(self.params, self.cfg, [[5, 6, 7]], gen.SamplingConfig(max_new_tokens=6),
                       eos_ids=[-5], on_tokens=lambda t: seen.append(int(t[0])))
    self.assertEqual(seen, out[0])

  def test_repetition_penalty_follows_hf_convention(self):
    logits = jnp.array([[2.0, -2.0, 1.0]])
    seen = jnp.array([[True, True, False]])
    s = gen.SamplingConfig(repetition_penalty=4.0)
    # 2/4 = 0.5 < 1.0 now, so the unseen token wins.
    self.assertEqual(int(gen.sample_logits(logits, jax.random.key(0), seen, s)[0]), 2)

  def test_bad_sampling_values(self):
    with self.assertRaisesRegex(errors.ConfigError, "top_p must be in"):
      gen.SamplingConfig(top_p=1.5)
    with self.assertRaisesRegex(errors.ConfigError, "max_new_tokens must be >= 1"):
      gen.SamplingConfig(max_new_tokens=0)
    with self.assertRaisesRegex(errors.ConfigError, "exceeds the model's context"):
      gen.generate(self.params, self.cfg, [[1] * 200], gen.SamplingConfig(max_new_tokens=100))

  def test_one_compile_per_bucket(self):
    s = gen.SamplingConfig(max_new_tokens=5)
    gen.generate(self.params, self.cfg, [[3] * 4, [4] * 7], s, eos_ids=[-5])
    prefill, step = gen._prefill._cache_size(), gen._decode_step._cache_size()
    for n in (3, 9, 16):  # same batch size, same 16-token bucket: no new compiles
      gen.generate(self.params, self.cfg, [[3] * n, [5] * 2], s, eos_ids=[-5])
    self.assertEqual((gen._prefill._cache_size(), gen._decode_step._cache_size()),
                     (prefill, step))
    gen.generate(self.params, self.cfg, [[3] * 17, [5] * 2], s, eos_ids=[-5])  # next bucket
    self.assertEqual(gen._prefill._cache_size(), prefill + 1)

  def test_bucket(self):
    self.assertEqual([gen.bucket(n) for n in (1, 16, 17, 100)], [16, 16, 32, 128])


if __name__ == "__main__":
  absltest.main()
