"""The embedded default model, the real SmolLM2-135M-Instruct GGUF (slow: loads 135M params)."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
import pytest

from swiftjax import generate as gen
from swiftjax import infer
from swiftjax.models import decoder
from tests import testutil


@pytest.mark.slow
class DefaultModelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.path = testutil.require_default_model()
    cls.model = infer.load(cls.path)

  def test_config_is_smollm2_135m(self):
    cfg = self.model.cfg
    self.assertEqual((cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads,
                      cfg.vocab_size), (30, 576, 9, 3, 49152))
    self.assertTrue(cfg.tie_word_embeddings)
    n = sum(x.size for x in __import__("jax").tree.leaves(self.model.params))
    self.assertBetween(n, 134e6, 135e6)

  def test_answers_capital_of_france(self):
    answer = infer.chat(self.model, ["What is the capital of France?"],
                        gen.SamplingConfig(max_new_tokens=24))[0]
    self.assertIn("Paris", answer)

  def test_logits_match_transformers_on_the_same_gguf(self):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(self.path.parent), gguf_file=self.path.name, dtype=torch.float32).eval()
    tokens = self.model.tokenizer("The quick brown fox jumps over the lazy dog. " * 3,
                                  add_special_tokens=False)["input_ids"]
    with torch.no_grad():
      want = ref(torch.as_tensor([tokens])).logits.numpy()
    got, _ = decoder.apply(self.model.params, jnp.asarray([tokens]), self.model.cfg)
    diff = np.abs(np.asarray(got) - want).max()
    self.assertLessEqual(diff, 1e-3 * max(1.0, float(np.abs(want).max())),
                         f"max |logit diff| {diff} (logit range {np.abs(want).max()})")
    self.assertTrue((np.asarray(got).argmax(-1) == want.argmax(-1)).all())


if __name__ == "__main__":
  absltest.main()
