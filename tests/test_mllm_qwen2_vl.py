"""Qwen2-VL against transformers' `Qwen2VLForConditionalGeneration` on a tiny random model.

Dynamic resolution (two images of different sizes in one sample, a second padded row), M-RoPE
positions, logits, KV-cache decoding, the image-token expansion, both tensor naming schemes.
"""

import json
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.mllm import qwen2_vl
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig
from tests import testutil

SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>",
            "<|im_end|>"]
# Qwen2-VL's chat template, shortened: string content as is, an image item as the wrapped pad.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
RTOL = 1e-4  # max abs logit difference allowed, as a fraction of the logit range (fp32)


def _tokenizer(directory):
  tok = testutil.save_tiny_tokenizer(directory)
  tok.add_special_tokens({"additional_special_tokens": SPECIALS})
  tok.chat_template = CHAT_TEMPLATE
  tok.padding_side = "left"
  tok.save_pretrained(str(directory))
  return tok


def _save_model(directory, tok, seed: int, tie: bool = False):
  """A random tiny Qwen2-VL (fp32, eager attention) saved with `save_pretrained`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  vs, ve, pad = tok.convert_tokens_to_ids(SPECIALS[:3])
  cfg = transformers.Qwen2VLConfig(
      text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=96,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       rope_parameters=dict(rope_type="default", mrope_section=[2, 3, 3],
                                            rope_theta=10000.0),
                       rms_norm_eps=1e-6, max_position_embeddings=512, bos_token_id=1,
                       eos_token_id=2, initializer_range=0.08),
      vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                         patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                         initializer_range=0.08),
      image_token_id=pad, vision_start_token_id=vs, vision_end_token_id=ve,
      tie_word_embeddings=tie)
  model = transformers.Qwen2VLForConditionalGeneration._from_config(  # pylint: disable=protected-access
      cfg, attn_implementation="eager").float().eval()
  with torch.no_grad():  # random norms and biases, so a swapped one cannot hide
    for name, p in model.named_parameters():
      if "norm" in name or "ln_q" in name:
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(directory))
  return model


def _processor(tok):
  """transformers' own Qwen2VLProcessor. In transformers 5 its constructor insists on a video
  processor, which needs torchvision; the image and text path does not use it."""
  import transformers  # pylint: disable=g-import-not-at-top
  image_processor = transformers.Qwen2VLImageProcessor(
      min_pixels=8 * 8 * 4, max_pixels=24 * 24 * 16, patch_size=4, merge_size=2,
      temporal_patch_size=2)
  with mock.patch.object(transformers.Qwen2VLProcessor, "check_argument_for_proper_class",
                         lambda self, name, arg: None):
    return transformers.Qwen2VLProcessor(image_processor=image_processor, tokenizer=tok,
                                         video_processor=None, chat_template=CHAT_TEMPLATE)


def _images():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  return [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
          for shape in ((40, 56, 3), (70, 30, 3), (48, 48, 3))]


class Qwen2VLTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.dir = pathlib.Path(cls._tmp.name) / "model"
    cls.tok = _tokenizer(cls.dir)
    cls.hf = _save_model(cls.dir, cls.tok, seed=0)
    cls.proc = _processor(cls.tok)
    cls.proc.image_processor.save_pretrained(str(cls.dir))
    cls.cfg, cls.params = qwen2_vl.load(cls.dir)
    # Row 0: two images of different sizes; row 1: one image, shorter, left-padded.
    texts = ["the cat <|vision_start|><|image_pad|><|vision_end|> sat on "
             "<|vision_start|><|image_pad|><|vision_end|> the mat .",
             "a bird <|vision_start|><|image_pad|><|vision_end|> can sing"]
    cls.batch = cls.proc(text=texts, images=_images(), padding=True, return_tensors="pt")

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _ours(self, batch):
    return {"pixel_values": batch["pixel_values"].numpy(),
            "image_grid_thw": batch["image_grid_thw"].numpy()}

  def _hf_logits(self, batch, model=None):
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      return (model or self.hf)(**batch).logits.numpy()

  def _assert_logits_close(self, got, want, mask):
    got, want = np.asarray(got)[mask], want[mask]
    tol = RTOL * np.ptp(want)
    self.assertLessEqual(np.abs(got - want).max(), tol)
    return tol

  def test_config_from_nested_and_flat_layouts(self):
    d = json.loads((self.dir / "config.json").read_text())
    self.assertIn("text_config", d)  # what transformers 5 writes
    nested = qwen2_vl.Config.from_hf_dict(d)
    self.assertEqual(nested.text.mrope_section, (2, 3, 3))
    self.assertEqual(nested.text.rope_scaling, None)
    self.assertTrue(nested.text.qkv_bias)
    # Published checkpoints: text keys at the top level, `rope_scaling: {type: mrope}`.
    flat = {k: v for k, v in d.items() if k != "text_config"}
    flat.update({k: v for k, v in d["text_config"].items()
                 if k not in ("rope_parameters", "model_type")})
    flat.update(rope_theta=10000.0, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(d["vision_config"])
    vision["in_chans"] = vision.pop("in_channels")
    vision.pop("rope_parameters")
    flat["vision_config"] = vision
    self.assertEqual(qwen2_vl.Config.from_hf_dict(flat), nested)
    with self.assertRaisesRegex(errors.ConfigError, "mrope_section"):
      ModelConfig.from_hf_dict(dict(flat, model_type="qwen2", rope_scaling={
          "type": "mrope", "mrope_section": [2, 3, 4]}))
    plain = ModelConfig.from_hf_dict(testutil.tiny_config("qwen2").to_dict())
    self.assertIsNone(plain.mrope_section)

  def test_param_tree(self):
    shapes = qwen2_vl.param_shapes(self.cfg)
    self.assertEqual(set(shapes), {"vision", "projector", "language_model"})
    self.assertEqual(jax.tree.structure(shapes), jax.tree.structure(self.params))
    self.assertEqual(jax.tree.map(lambda s: s.shape, shapes),
                     jax.tree.map(lambda a: a.shape, self.params))
    init = qwen2_vl.init(self.cfg, jax.random.key(0))
    self.assertEqual(jax.tree.structure(init), jax.tree.structure(self.params))
    axes = qwen2_vl.param_axes(self.cfg)
    for ax, s in zip(jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple)),
                     jax.tree.leaves(shapes)):
      self.assertLen(ax, len(s.shape))

  def test_rope_index_matches_transformers(self):
    b = self.batch
    want, want_deltas = self.hf.model.get_rope_index(
        b["input_ids"], b["mm_token_type_ids"], b["image_grid_thw"],
        attention_mask=b["attention_mask"])
    mask = b["attention_mask"].numpy().astype(bool)
    got, deltas = qwen2_vl.rope_index(b["input_ids"].numpy(), b["image_grid_thw"].numpy(),
                                      self.cfg, mask)
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
    np.testing.assert_array_equal(np.asarray(deltas), want_deltas.numpy().ravel())
    self.assertFalse(mask.all())  # row 1 is padded
    # Under jit too (grids traced), as a training step runs it.
    jitted = jax.jit(lambda i, g, m: qwen2_vl.rope_index(i, g, self.cfg, m))
    np.testing.assert_array_equal(
        jitted(b["input_ids"].numpy(), b["image_grid_thw"].numpy(), mask)[0], got)

  def test_image_features_match_transformers(self):
    import torch  # pylint: disable=g-import-not-at-top
    b = self.batch
    grids = b["image_grid_thw"].numpy()
    self.assertGreater(len({tuple(g) for g in grids}), 1)  # dynamic resolution
    with torch.no_grad():
      want = torch.cat(self.hf.model.get_image_features(
          b["pixel_values"], b["image_grid_thw"]).pooler_output).numpy()
    got = np.asarray(qwen2_vl.encode_images(self.params, self.cfg, **self._ours(b)))
    self.assertEqual(got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())

  def test_logits_match_transformers(self):
    b = self.batch
    want = self._hf_logits(b)
    mask = b["attention_mask"].numpy().astype(bool)
    ids = b["input_ids"].numpy()
    got, _ = qwen2_vl.apply(self.params, ids, self.cfg, image_inputs=self._ours(b), mask=mask)
    tol = self._assert_logits_close(got, want, mask)
    # The same under jit (the path training takes).
    jitted = jax.jit(lambda p, i, ii, m: qwen2_vl.apply(p, i, self.cfg, image_inputs=ii,
                                                         mask=m)[0])
    self._assert_logits_close(jitted(self.params, ids, self._ours(b), mask), want, mask)
    # Plain 1D positions give clearly different logits: the comparison above can fail.
    plain = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    wrong, _ = qwen2_vl.apply(self.params, ids, self.cfg, image_inputs=self._ours(b),
                              mask=mask, positions=plain)
    self.assertGreater(np.abs(np.asarray(wrong)[mask] - want[mask]).max(), 100 * tol)

  def test_kv_cache_decoding(self):
    import torch  # pylint: disable=g-import-not-at-top
    b = self.batch
    steps = 4
    rng = np.random.default_rng(1)
    extra = rng.integers(5, 100, (2, steps))
    full = {k: v for k, v in b.items()}
    full["input_ids"] = torch.cat([b["input_ids"], torch.tensor(extra)], dim=1)
    full["attention_mask"] = torch.cat([b["attention_mask"], torch.ones(2, steps, dtype=int)], 1)
    full["mm_token_type_ids"] = torch.cat([b["mm_token_type_ids"],
                                           torch.zeros(2, steps, dtype=int)], 1)
    want = self._hf_logits(full)
    T = b["input_ids"].shape[1]
    mask = b["attention_mask"].numpy().astype(bool)
    cache = decoder.init_cache(self.cfg.text, 2, T + steps)
    logits, cache = qwen2_vl.apply(self.params, b["input_ids"].numpy(), self.cfg,
                                   image_inputs=self._ours(b), mask=mask, cache=cache,
                                   last_only=True)
    self._assert_logits_close(logits[:, 0], want[:, T - 1], np.ones(2, bool))
    # The cache continues at the largest position + 1 = real tokens + rope_deltas.
    _, deltas = self.hf.model.get_rope_index(
        b["input_ids"], b["mm_token_type_ids"], b["image_grid_thw"],
        attention_mask=b["attention_mask"])
    np.testing.assert_array_equal(cache["next_pos"],
                                  mask.sum(1) + deltas.numpy().ravel())
    step = jax.jit(lambda p, i, c: qwen2_vl.apply(p, i, self.cfg, cache=c))
    for s in range(steps):
      logits, cache = step(self.params, jnp.asarray(extra[:, s:s + 1]), cache)
      self._assert_logits_close(logits[:, 0], want[:, T + s], np.ones(2, bool))

  def test_image_token_expansion_matches_processor(self):
    images = _images()[:2]
    ii = qwen2_vl.preprocess_images(self.proc, images)
    # ms-swift rows: `<image>` placeholders in string content, matched in order to images.
    row = [{"role": "user", "content": "<image>what is the cat ?<image>"},
           {"role": "assistant", "content": "a dog ."}]
    parts = row[0]["content"].split("<image>")
    text = parts[0] + "".join(qwen2_vl.image_text(self.proc, ii, k) + p
                              for k, p in enumerate(parts[1:]))
    ours = self.tok.apply_chat_template([dict(row[0], content=text), row[1]],
                                        tokenize=True)["input_ids"]
    listed = [{"role": "user", "content": [{"type": "image"},
                                           {"type": "text", "text": "what is the cat ?"},
                                           {"type": "image"}]}, row[1]]
    rendered = self.proc.apply_chat_template(listed, tokenize=False)
    theirs = self.proc(text=[rendered], images=images, return_tensors="np")
    np.testing.assert_array_equal(np.asarray(ours), theirs["input_ids"][0])
    np.testing.assert_array_equal(ii["pixel_values"], theirs["pixel_values"])
    counts = [qwen2_vl.num_image_tokens(self.proc, ii, k) for k in range(2)]
    self.assertEqual(sum(counts), int((theirs["input_ids"] == self.cfg.image_token_id).sum()))
    self.assertNotEqual(counts[0], counts[1])
    with self.assertRaisesRegex(errors.ConfigError, "image 2 requested"):
      qwen2_vl.image_text(self.proc, ii, 2)

  def test_transformers5_names_and_tied_embeddings(self):
    from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as tmp:
      d = pathlib.Path(tmp)
      _tokenizer(d)
      hf = _save_model(d, self.tok, seed=3, tie=True)
      tensors = load_file(str(d / "model.safetensors"))
      self.assertNotIn("lm_head.weight", tensors)
      renamed = {}
      for name, w in tensors.items():
        if name.startswith("visual."):
          name = "model." + name
        elif name.startswith("model."):
          name = "model.language_model." + name[len("model."):]
        renamed[name] = w
      save_file(renamed, str(d / "model.safetensors"), metadata={"format": "pt"})
      cfg, params = qwen2_vl.load(d)
      self.assertTrue(cfg.text.tie_word_embeddings)
      b = self.batch
      mask = b["attention_mask"].numpy().astype(bool)
      got, _ = qwen2_vl.apply(params, b["input_ids"].numpy(), cfg, image_inputs=self._ours(b),
                              mask=mask)
      self._assert_logits_close(got, self._hf_logits(b, hf), mask)
      # A checkpoint without vision tensors, and one missing a tensor, are named errors.
      save_file({k: v for k, v in renamed.items() if "visual" not in k},
                str(d / "model.safetensors"), metadata={"format": "pt"})
      with self.assertRaisesRegex(errors.CheckpointError, "no Qwen2-VL vision tensors"):
        qwen2_vl.load(d)
      save_file({k: v for k, v in renamed.items() if "merger.ln_q.bias" not in k},
                str(d / "model.safetensors"), metadata={"format": "pt"})
      with self.assertRaisesRegex(errors.CheckpointError, "model.visual.merger.ln_q.bias"):
        qwen2_vl.load(d)

  def test_feature_count_mismatch_is_an_error(self):
    b = self.batch
    ids = b["input_ids"].numpy()[:1]  # row 0 alone has 2 of the 3 images' tokens
    with self.assertRaisesRegex(errors.ConfigError, "image tokens in the text"):
      qwen2_vl.apply(self.params, ids, self.cfg, image_inputs=self._ours(b))

  def test_real_photo(self):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    path = testutil.require_shared("llamafactory", "data", "mllm_demo_data", "1.jpg")
    photo = Image.open(path).convert("RGB")
    processor = qwen2_vl.load_processor(self.dir)  # the fallback without torchvision
    ii = qwen2_vl.preprocess_images(processor, [photo])
    text = self.tok.apply_chat_template(
        [{"role": "user", "content": qwen2_vl.image_text(processor, ii, 0) + "what is this ?"}],
        tokenize=False, add_generation_prompt=True)
    b = self.proc(text=[text.replace(qwen2_vl.image_text(processor, ii, 0),
                                     "<|vision_start|><|image_pad|><|vision_end|>")],
                  images=[photo], return_tensors="pt")
    np.testing.assert_array_equal(ii["pixel_values"], b["pixel_values"].numpy())
    np.testing.assert_array_equal(self.tok(text)["input_ids"], b["input_ids"].numpy()[0])
    got, _ = qwen2_vl.apply(self.params, b["input_ids"].numpy(), self.cfg, image_inputs=ii)
    mask = np.ones(b["input_ids"].shape, bool)
    self._assert_logits_close(got, self._hf_logits(b), mask)


if __name__ == "__main__":
  absltest.main()
