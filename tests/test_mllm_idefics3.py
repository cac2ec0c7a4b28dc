"""SmolVLM / Idefics3: a tiny random transformers model against swiftjax.mllm.idefics3.

Tolerance for fp32 logits: max |ours - transformers| <= 1e-4 * (logit range) at every
non-padding position.
"""

import dataclasses
import json
import pathlib
import shutil
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.mllm import idefics3
from swiftjax.mllm import siglip
from swiftjax.mllm import vit
from swiftjax.models import decoder
from tests import testutil

PHOTO = ("llamafactory", "data", "mllm_demo_data", "1.jpg")
IMAGE_TOKENS = (["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
                + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)])
# Vision grid 6x6 patches (1/6 is not a binary fraction: the bucketised positions matter),
# pixel shuffle 2 -> 9 image tokens per sub-image; images are resized to a longest edge of 96
# and cut into 48x48 squares.
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              image_size=48, patch_size=8, layer_norm_eps=1e-5)


def _photo():
  root = testutil.shared_data_dir()
  path = root.joinpath(*PHOTO) if root is not None else None
  if path is None or not path.is_file():
    return None
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return Image.open(path).convert("RGB")


def _wide_image():
  """A synthetic 200x60 image: resized to 96x28, it splits into 1 row x 2 columns."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  return Image.fromarray(rng.integers(0, 256, (60, 200, 3), dtype=np.uint8))


def _tokenizer(directory):
  tok = testutil.save_tiny_tokenizer(directory, vocab_size=128)
  tok.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
  tok.add_tokens(["\n"])  # the tiny BPE has no newline; rows and the global view use it
  return tok


def _processor(tok, splitting: bool = True):
  import transformers  # pylint: disable=g-import-not-at-top
  ip = transformers.Idefics3ImageProcessor(
      size={"longest_edge": 96}, max_image_size={"longest_edge": 48},
      do_image_splitting=splitting)
  return transformers.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=9,
                                        chat_template=tok.chat_template)


def _save_model(directory, tok, seed=0, tie=False):
  """A random Idefics3ForConditionalGeneration (random norms, biases and position table)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  text = testutil.tiny_config("llama", vocab_size=len(tok), tie_word_embeddings=tie).to_dict()
  config = transformers.Idefics3Config(
      vision_config=VISION, text_config=text, scale_factor=2, tie_word_embeddings=tie,
      image_token_id=tok.convert_tokens_to_ids("<image>"))
  torch.manual_seed(seed)
  model = transformers.Idefics3ForConditionalGeneration(config).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
      elif "position_embedding" in name or "proj" in name:
        p.normal_(0, 0.2)
  model.save_pretrained(str(directory))
  return transformers.Idefics3ForConditionalGeneration.from_pretrained(
      str(directory), attn_implementation="eager").float().eval()


def _torch_logits(model, enc):
  import torch  # pylint: disable=g-import-not-at-top
  kwargs = {k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()
            if k in ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask")}
  with torch.no_grad():
    return model(**kwargs).logits.numpy()


def _assert_close(test, ours, ref, valid=None):
  ours, ref = np.asarray(ours), np.asarray(ref)
  if valid is not None:
    ours, ref = ours[valid], ref[valid]
  span = float(ref.max() - ref.min())
  diff = float(np.abs(ours - ref).max())
  test.assertLessEqual(diff, 1e-4 * span, f"max diff {diff} vs logit range {span}")
  return diff, span


class Idefics3Test(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    import transformers  # pylint: disable=g-import-not-at-top
    cls.tmp = pathlib.Path(tempfile.mkdtemp())
    cls.dir = cls.tmp / "model"
    tok = _tokenizer(cls.dir)
    _processor(tok).save_pretrained(str(cls.dir))
    cls.torch_model = _save_model(cls.dir, tok)
    cls.processor = transformers.AutoProcessor.from_pretrained(str(cls.dir))
    cls.cfg, cls.params = idefics3.load(cls.dir)
    cls.photo = _photo()
    cls.wide = _wide_image()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _need_photo(self):
    if self.photo is None:
      self.skipTest(f"../shared/data/{'/'.join(PHOTO)} is absent")
    return self.photo

  def _render(self, content):
    return self.processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)

  def _expand(self, text, image_inputs):
    parts = text.split("<image>")
    out = parts[0]
    for i, part in enumerate(parts[1:]):
      out += idefics3.image_text(self.processor, image_inputs, i) + part
    return out

  def test_config_and_params(self):
    cfg = self.cfg
    self.assertEqual(cfg.image_seq_len, self.processor.image_seq_len)
    self.assertEqual(cfg.image_token_id, self.processor.image_token_id)
    self.assertEqual((cfg.vision.activation, cfg.vision.layer_norm_eps),
                     ("gelu_pytorch_tanh", 1e-5))
    self.assertEqual(cfg.patches, siglip.PatchConfig(48, 8, 3))
    self.assertFalse(cfg.text.tie_word_embeddings)
    self.assertEqual(sorted(self.params), ["language_model", "projector", "vision"])
    shapes = idefics3.param_shapes(cfg)
    self.assertEqual(jax.tree.structure(shapes), jax.tree.structure(self.params))
    for got, want in zip(jax.tree.leaves(self.params), jax.tree.leaves(shapes)):
      self.assertEqual(got.shape, want.shape)
    axes = idefics3.param_axes(cfg)
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
    self.assertEqual(len(flat_axes), len(jax.tree.leaves(shapes)))
    for a, s in zip(flat_axes, jax.tree.leaves(shapes)):
      self.assertLen(a, len(s.shape))
    init = jax.eval_shape(lambda k: idefics3.init(cfg, k), jax.random.PRNGKey(0))
    self.assertEqual(init, shapes)

  def test_expansion_matches_processor(self):
    photo = self._need_photo()
    text = self._render("<image>What is in <image> these?")
    images = [photo, self.wide]
    for splitting in (True, False):
      proc = _processor(self.processor.tokenizer, splitting=splitting)
      enc = proc(text=[text], images=[images], return_tensors="np")
      ours = idefics3.preprocess_images(proc, images)
      if splitting:  # 2x2 + global for the photo, 1x2 + global for the wide image
        np.testing.assert_array_equal(ours["rows"], [2, 1])
        np.testing.assert_array_equal(ours["cols"], [2, 2])
      np.testing.assert_array_equal(ours["pixel_values"], enc["pixel_values"][0])
      np.testing.assert_array_equal(ours["pixel_attention_mask"],
                                    enc["pixel_attention_mask"][0].astype(bool))
      ids = proc.tokenizer(self._expand(text, ours))["input_ids"]
      np.testing.assert_array_equal(ids, enc["input_ids"][0])
      n_tokens = int(np.sum(enc["input_ids"] == proc.image_token_id))
      self.assertEqual(n_tokens, len(ours["pixel_values"]) * proc.image_seq_len)
    self.assertEqual(n_tokens, 2 * 9)  # unsplit: one global view per image

  def test_logits_match_transformers_with_padding_sub_images(self):
    photo = self._need_photo()
    # Two samples with 5 and 3 sub-images: the processor pads the second with 2 zero images,
    # and the shorter text with padding tokens on the right.
    texts = [self._render("<image>What is this?"), self._render("Describe <image>")]
    self.processor.tokenizer.padding_side = "right"
    enc = self.processor(text=texts, images=[[photo], [self.wide]], padding=True,
                         return_tensors="np")
    self.assertEqual(enc["pixel_values"].shape[:2], (2, 5))
    self.assertTrue(np.all(enc["pixel_values"][1, 3:] == 0))
    ref = _torch_logits(self.torch_model, enc)
    image_inputs = {"pixel_values": enc["pixel_values"],
                    "pixel_attention_mask": enc["pixel_attention_mask"]}
    mask = enc["attention_mask"].astype(bool)
    logits, _ = idefics3.apply(self.params, enc["input_ids"], self.cfg,
                               image_inputs=image_inputs, mask=mask)
    _, span = _assert_close(self, logits, ref, mask)
    # The images matter: other pixels (negated; padding stays zero) move the logits by far
    # more than the tolerance.
    other = dict(image_inputs, pixel_values=-enc["pixel_values"])
    moved, _ = idefics3.apply(self.params, enc["input_ids"], self.cfg, image_inputs=other,
                              mask=mask)
    self.assertGreater(float(np.abs(np.asarray(moved) - ref)[mask].max()), 1e-2 * span)
    # Under jit padding sub-images stay in the batch (static shapes) and give the same logits.
    jitted = jax.jit(lambda p, ids, ii, m: idefics3.apply(p, ids, self.cfg, image_inputs=ii,
                                                          mask=m)[0])
    out = jitted(self.params, jnp.asarray(enc["input_ids"]),
                 jax.tree.map(jnp.asarray, image_inputs), jnp.asarray(mask))
    _assert_close(self, out, ref, mask)

  def test_packed_row_with_zero_image_slots(self):
    photo = self._need_photo()
    # Two samples packed in one row (segment ids, per-sample positions), their image inputs
    # concatenated and followed by two all-zero slots, as the training batches lay them out.
    samples = [(self._render("<image>What is this?"), photo),
               (self._render("Describe <image> please"), self.wide)]
    ids, refs, found = [], [], []
    for text, image in samples:
      ii = idefics3.preprocess_images(self.processor, [image])
      enc = self.processor(text=[text], images=[[image]], return_tensors="np")
      ids.append(enc["input_ids"][0])
      refs.append(_torch_logits(self.torch_model, enc)[0])
      found.append(ii)
    images = {k: np.concatenate([f[k] for f in found]
                                + [np.zeros((2, *found[0][k].shape[1:]), found[0][k].dtype)])
              for k in found[0]}
    tokens = np.concatenate(ids)[None]
    segments = np.concatenate([np.full(len(x), i + 1) for i, x in enumerate(ids)])[None]
    positions = np.concatenate([np.arange(len(x)) for x in ids])[None]
    fn = jax.jit(lambda p, t, ii, s, pos: idefics3.apply(p, t, self.cfg, image_inputs=ii,
                                                         segment_ids=s, positions=pos)[0])
    logits = np.asarray(fn(self.params, tokens, images, segments, positions))[0]
    _assert_close(self, logits, np.concatenate(refs))

  def test_kv_cache_decoding(self):
    photo = self._need_photo()
    text = self._render("<image>What is this?")
    ii = idefics3.preprocess_images(self.processor, [photo])
    prompt = np.asarray(self.processor.tokenizer(self._expand(text, ii))["input_ids"])[None]
    extra = np.asarray(self.processor.tokenizer(" the cat sat")["input_ids"])[None]
    full = np.concatenate([prompt, extra], axis=1)
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      ref = self.torch_model(input_ids=torch.from_numpy(full),
                             pixel_values=torch.from_numpy(ii["pixel_values"][None]),
                             pixel_attention_mask=torch.from_numpy(
                                 ii["pixel_attention_mask"][None])).logits.numpy()
    cache = decoder.init_cache(self.cfg.text, 1, full.shape[1])
    logits, cache = idefics3.apply(self.params, prompt, self.cfg, image_inputs=ii, cache=cache)
    steps = [np.asarray(logits)]
    step = jax.jit(lambda p, t, c: idefics3.apply(p, t, self.cfg, cache=c))
    for t in range(extra.shape[1]):
      logits, cache = step(self.params, jnp.asarray(extra[:, t:t + 1]), cache)
      steps.append(np.asarray(logits))
    self.assertGreaterEqual(extra.shape[1], 3)
    _assert_close(self, np.concatenate(steps, axis=1), ref)

  def test_position_ids_and_masked_tower_match_transformers(self):
    # pylint: disable=g-import-not-at-top
    import torch
    from transformers.models.idefics3 import configuration_idefics3
    from transformers.models.idefics3 import modeling_idefics3
    # pylint: enable=g-import-not-at-top
    rng = np.random.default_rng(0)
    # Grid sides of Idefics3-8B (364/14 = 26) and SmolVLM-2.2B (384/14 = 27), and 19, whose
    # full-size positions are not 0..n*n-1 in transformers (float32 bucketing).
    for n in (19, 26, 27):
      vc = configuration_idefics3.Idefics3VisionConfig(
          hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
          image_size=n, patch_size=1, num_channels=1)
      emb = modeling_idefics3.Idefics3VisionEmbeddings(vc)
      with torch.no_grad():
        emb.patch_embedding.weight.zero_()
        emb.patch_embedding.bias.zero_()
        emb.position_embedding.weight.copy_(
            torch.arange(n * n, dtype=torch.float32)[:, None].repeat(1, 8))
      masks = [np.ones((n, n), bool)]
      for _ in range(5):
        h, w = rng.integers(1, n + 1, 2)
        m = np.zeros((n, n), bool)
        m[:h, :w] = True
        masks.append(m)
      masks = np.stack(masks)
      with torch.no_grad():
        want = emb(torch.zeros(len(masks), 1, n, n), torch.from_numpy(masks))[..., 0]
      np.testing.assert_array_equal(siglip.position_ids(masks, n), want.numpy().astype(int))
    # The whole tower on images padded inside (real patches only; see siglip.apply).
    vc = configuration_idefics3.Idefics3VisionConfig(**VISION)
    vc._attn_implementation = "eager"  # pylint: disable=protected-access
    torch.manual_seed(0)
    tower = modeling_idefics3.Idefics3VisionTransformer(vc).float().eval()
    with torch.no_grad():
      for name, p in tower.named_parameters():
        if name.endswith(".bias") or "norm" in name:
          p.add_(0.1 * torch.randn_like(p))
    pv = rng.normal(size=(2, 3, 48, 48)).astype(np.float32)
    patch_mask = np.zeros((2, 6, 6), bool)
    patch_mask[0, :4, :5] = True
    patch_mask[1] = True
    with torch.no_grad():
      want = tower(pixel_values=torch.from_numpy(pv),
                   patch_attention_mask=torch.from_numpy(patch_mask)).last_hidden_state.numpy()
    tmp = self.tmp / "tower"
    tmp.mkdir()
    from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
    save_file({f"model.vision_model.{k}": v.contiguous() for k, v in tower.state_dict().items()},
              str(tmp / "model.safetensors"))
    table = siglip.hf_tensor_names(self.cfg.vision, "model.vision_model.")
    from swiftjax.models import safetensors_loader  # pylint: disable=g-import-not-at-top
    params = safetensors_loader.read_tensors(
        tmp, table, siglip.param_shapes(self.cfg.vision, self.cfg.patches))
    params["embeddings"]["patch_embedding"]["kernel"] = jnp.asarray(vit.patch_kernel_from_hf(
        tower.embeddings.patch_embedding.weight.detach().numpy()))
    got = siglip.apply(params, jnp.asarray(pv), self.cfg.vision, self.cfg.patches,
                       patch_mask=jnp.asarray(patch_mask))
    valid = patch_mask.reshape(2, -1)
    np.testing.assert_allclose(np.asarray(got)[valid], want[valid], atol=2e-5, rtol=0)

  def test_other_tensor_names_and_tied_head(self):
    from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
    # The same tensors under other prefixes load into the same parameters.
    renamed = self.tmp / "renamed"
    renamed.mkdir()
    shutil.copy(self.dir / "config.json", renamed / "config.json")
    tensors = load_file(str(self.dir / "model.safetensors"))
    save_file({k.replace("model.text_model.", "model.language_model.")
               .replace("lm_head.", "language_model.lm_head."): v for k, v in tensors.items()},
              str(renamed / "model.safetensors"))
    cfg, params = idefics3.load(renamed)
    self.assertEqual(cfg, self.cfg)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(self.params)):
      np.testing.assert_array_equal(a, b)
    # A tied checkpoint has no lm_head tensor; logits still match transformers.
    tied = self.tmp / "tied"
    tok = _tokenizer(tied)
    model = _save_model(tied, tok, seed=1, tie=True)
    self.assertNotIn("lm_head.weight", load_file(str(tied / "model.safetensors")))
    cfg, params = idefics3.load(tied)
    self.assertTrue(cfg.text.tie_word_embeddings)
    self.assertNotIn("lm_head", params["language_model"])
    ii = idefics3.preprocess_images(self.processor, [self.wide])
    ids = np.asarray(self.processor.tokenizer(
        self._expand(self._render("<image>hi"), ii))["input_ids"])[None]
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      ref = model(input_ids=torch.from_numpy(ids),
                  pixel_values=torch.from_numpy(ii["pixel_values"][None])).logits.numpy()
    logits, _ = idefics3.apply(params, ids, cfg, image_inputs=ii)
    _assert_close(self, logits, ref)

  def test_errors(self):
    with self.assertRaisesRegex(errors.CheckpointError, "has no config.json"):
      idefics3.load(self.tmp / "nowhere")
    bad = self.tmp / "bad"
    bad.mkdir()
    d = json.loads((self.dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(d, model_type="llava")))
    with self.assertRaisesRegex(errors.ConfigError, r"config\.json: model_type 'llava'"):
      idefics3.read_config(bad)
    (bad / "config.json").write_text(json.dumps(d))
    from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
    tensors = load_file(str(self.dir / "model.safetensors"))
    del tensors["model.connector.modality_projection.proj.weight"]
    save_file(tensors, str(bad / "model.safetensors"))
    with self.assertRaisesRegex(errors.CheckpointError, "no connector tensors"):
      idefics3.load(bad)
    ii = idefics3.preprocess_images(self.processor, [self.wide])
    ids = np.full((1, 5), self.cfg.image_token_id)
    with self.assertRaisesRegex(errors.ConfigError, "5 image tokens .* 27 features"):
      idefics3.apply(self.params, ids, self.cfg, image_inputs=ii)
    with self.assertRaisesRegex(errors.ConfigError, "image index 1 is out of range"):
      idefics3.image_text(self.processor, ii, 1)
    with self.assertRaisesRegex(errors.ConfigError, "does not divide"):
      dataclasses.replace(self.cfg, scale_factor=4)


if __name__ == "__main__":
  absltest.main()
