"""LLaVA-1.5 against transformers' `LlavaForConditionalGeneration` on tiny random checkpoints:
logits (with images), KV-cache decoding, the processor's image-token expansion and pixel values,
the checkpoint namings in use, config defaults of published checkpoints, and `assemble`."""

import json
import pathlib
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax.mllm import llava
from swiftjax.mllm import vit
from swiftjax.models import decoder
from tests import testutil

IMAGE = "<image>"
S, PATCH = 32, 8  # 16 patches per image
# The two variants: LLaVA-1.5's default (penultimate layer, no class token) and the other
# switches (two feature layers concatenated, class token kept).
VARIANTS = {
    "default": dict(vision_feature_layer=-2, vision_feature_select_strategy="default"),
    "full_two_layers": dict(vision_feature_layer=[-3, -1], vision_feature_select_strategy="full"),
}
_TMP = None
_CACHE = {}


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory()


def tearDownModule():
  _TMP.cleanup()


def _images():
  """A real photo (when ../shared is present) and a synthetic image of another size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  synthetic = Image.fromarray(rng.randint(0, 255, (40, 56, 3), dtype=np.uint8))
  root = testutil.shared_data_dir()
  photo = None if root is None else root / "llamafactory/data/mllm_demo_data/1.jpg"
  if photo is not None and photo.is_file():
    return [Image.open(photo).convert("RGB"), synthetic]
  return [synthetic.transpose(Image.Transpose.FLIP_LEFT_RIGHT), synthetic]


def tiny(variant: str):
  """(directory, torch model, processor) of a tiny random LLaVA saved with its processor."""
  if variant in _CACHE:
    return _CACHE[variant]
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(_TMP.name) / variant
  tok = testutil.save_tiny_tokenizer(directory, vocab_size=128)
  tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
  tok.padding_side = "left"
  image_token_id = tok.convert_tokens_to_ids(IMAGE)
  processor = transformers.LlavaProcessor(
      image_processor=transformers.CLIPImageProcessor(
          size={"shortest_edge": S}, crop_size={"height": S, "width": S}),
      tokenizer=tok, patch_size=PATCH, num_additional_image_tokens=1,
      vision_feature_select_strategy=VARIANTS[variant]["vision_feature_select_strategy"],
      chat_template=tok.chat_template)
  processor.save_pretrained(str(directory))
  torch.manual_seed(0)
  config = transformers.LlavaConfig(
      vision_config=transformers.CLIPVisionConfig(
          hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
          image_size=S, patch_size=PATCH, projection_dim=16),
      text_config=testutil.tiny_config("llama", vocab_size=136),
      image_token_index=image_token_id, **VARIANTS[variant])
  model = transformers.LlavaForConditionalGeneration._from_config(  # pylint: disable=protected-access
      config, attn_implementation="eager").float().eval()
  with torch.no_grad():  # random norms and biases, so a swapped one cannot hide
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
      elif name.endswith(".bias") or "class_embedding" in name:
        p.copy_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(directory))
  _CACHE[variant] = (directory, model, transformers.AutoProcessor.from_pretrained(str(directory)))
  return _CACHE[variant]


def _conversation_text(processor, n_images: int, question: str) -> str:
  messages = [{"role": "user", "content": IMAGE * n_images + question}]
  return processor.tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)


def _hf_logits(model, batch):
  import torch  # pylint: disable=g-import-not-at-top
  mask = batch["attention_mask"]
  positions = torch.clamp(mask.long().cumsum(-1) - 1, min=0)
  with torch.no_grad():
    return model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
                 pixel_values=batch["pixel_values"]).logits.numpy()


def _close(test, got, want, rel=2e-5):
  """max abs diff <= rel * the logit range (fp32; measured about 2.5e-7 of the range)."""
  err = np.abs(np.asarray(got) - want).max()
  test.assertLessEqual(err, rel * (want.max() - want.min()), f"max abs diff {err}")


class LlavaTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(v, v) for v in VARIANTS])
  def test_logits_and_kv_cache_match_transformers(self, variant):
    directory, model, processor = tiny(variant)
    cfg, params = llava.load(directory)
    self.assertEqual(cfg.num_image_tokens, 16 + (variant != "default"))
    images = _images()
    # Row 0 holds two images, row 1 one (left-padded): image order runs across rows.
    texts = [_conversation_text(processor, 2, "what is this ?"),
             _conversation_text(processor, 1, "the cat")]
    batch = processor(text=texts, images=[images[0], images[1], images[1]], padding=True,
                      return_tensors="pt")
    want = _hf_logits(model, batch)
    ids = jnp.asarray(batch["input_ids"].numpy())
    mask = jnp.asarray(batch["attention_mask"].numpy().astype(bool))
    image_inputs = {"pixel_values": batch["pixel_values"].numpy()}
    run = jax.jit(llava.apply, static_argnames=("cfg",))
    got, _ = run(params, ids, cfg, image_inputs=image_inputs, mask=mask)
    self.assertEqual(got.shape, want.shape)
    _close(self, got, want)

    # KV cache: prefill row 0 with its images, then feed the continuation one token at a time.
    row = batch["input_ids"][:1, mask[0].argmax():]
    extra = processor.tokenizer(" the cat sat", add_special_tokens=False,
                                return_tensors="pt")["input_ids"]
    import torch  # pylint: disable=g-import-not-at-top
    full = torch.cat([row, extra], axis=1)
    one = {"input_ids": full, "attention_mask": torch.ones_like(full),
           "pixel_values": batch["pixel_values"][:2]}
    want = _hf_logits(model, one)[0]
    P = row.shape[1]
    cache = decoder.init_cache(cfg.text, 1, full.shape[1] + 2)
    logits, cache = run(params, jnp.asarray(row.numpy()), cfg, cache=cache,
                                image_inputs={"pixel_values": one["pixel_values"].numpy()})
    _close(self, logits[0], want[:P])
    for t in range(P, full.shape[1]):
      logits, cache = run(params, jnp.asarray(full[:, t:t + 1].numpy()), cfg, cache=cache)
      _close(self, logits[0, 0], want[t])

  @parameterized.named_parameters(*[(v, v) for v in VARIANTS])
  def test_image_expansion_and_pixels_match_processor(self, variant):
    directory, _, processor = tiny(variant)
    cfg = llava.read_config(directory)
    images = _images()
    image_inputs = llava.preprocess_images(processor, images)
    text = _conversation_text(processor, 2, "how many shapes ?")
    want = processor(text=[text], images=images, return_tensors="np")
    np.testing.assert_allclose(image_inputs["pixel_values"], want["pixel_values"], atol=1e-6)
    self.assertEqual(image_inputs["pixel_values"].shape, (2, 3, S, S))
    # Our expansion: each placeholder replaced in the text, then tokenised plainly.
    pieces = text.split(IMAGE)
    expanded = pieces[0] + "".join(llava.image_text(processor, image_inputs, i) + pieces[i + 1]
                                   for i in range(len(images)))
    ids = processor.tokenizer(expanded, add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(ids, want["input_ids"][0])
    self.assertEqual(int(np.sum(np.asarray(ids) == cfg.image_token_id)),
                     2 * cfg.num_image_tokens)
    # The count is also what the vision tower gives (no placeholder/feature mismatch).
    _, params = llava.load(directory)
    feats = llava.encode_images(params, cfg, **image_inputs)
    self.assertEqual(feats.shape, (2 * cfg.num_image_tokens, cfg.text.hidden_size))

  def test_every_checkpoint_naming_loads(self):
    """What transformers 5 saves (`language_model.model.*`, `vision_tower.*`), the published
    llava-hf names (`vision_tower.vision_model.*`) and transformers 5's in-memory names
    (`model.language_model.*`, `model.vision_tower.*`, `lm_head.*`) give the same params."""
    from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
    directory, _, _ = tiny("default")
    tensors = load_file(str(directory / "model.safetensors"))
    self.assertIn("language_model.model.embed_tokens.weight", tensors)
    _, base = llava.load(directory)

    def renamed(rename):
      out = pathlib.Path(_TMP.name) / f"renamed{len(list(pathlib.Path(_TMP.name).iterdir()))}"
      out.mkdir()
      shutil.copy(directory / "config.json", out / "config.json")
      save_file({rename(k): v for k, v in tensors.items()}, str(out / "model.safetensors"))
      return out

    published = renamed(lambda k: k.replace("vision_tower.", "vision_tower.vision_model."))
    in_memory = renamed(lambda k: (
        "lm_head.weight" if k == "language_model.lm_head.weight" else
        "model.language_model." + k[len("language_model.model."):]
        if k.startswith("language_model.model.") else "model." + k))
    for d in (published, in_memory):
      names = load_file(str(d / "model.safetensors"))
      self.assertNotEqual(set(names), set(tensors))
      _, params = llava.load(d)
      jax.tree.map(np.testing.assert_array_equal, params, base)
    # Sharded straight into a layout on 8 fake devices: same values, the layout asked for.
    from swiftjax import sharding  # pylint: disable=g-import-not-at-top
    cfg = llava.read_config(directory)
    mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
    shardings = sharding.tree_shardings(llava.param_axes(cfg), llava.param_shapes(cfg), mesh)
    _, placed = llava.load(directory, shardings=shardings)
    jax.tree.map(np.testing.assert_array_equal, placed, base)
    for path in (("projector", "linear_1", "kernel"),
                 ("vision", "embeddings", "patch_embedding", "kernel"),
                 ("language_model", "layers", "mlp", "up_proj", "kernel")):
      leaf, want = placed, shardings
      for k in path:
        leaf, want = leaf[k], want[k]
      self.assertEqual(leaf.sharding, want, path)
    # A missing tensor is named.
    broken = renamed(lambda k: k.replace("linear_2.weight", "linear_9.weight"))
    with self.assertRaisesRegex(errors.CheckpointError, "multi_modal_projector.linear_2.weight"):
      llava.load(broken)

  def test_published_config_defaults_match_transformers(self):
    """A llava-1.5-7b-hf style config.json that lists only what differs from the defaults."""
    import transformers  # pylint: disable=g-import-not-at-top
    d = {"model_type": "llava", "image_token_index": 32000, "projector_hidden_act": "gelu",
         "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
         "text_config": {"model_type": "llama", "max_position_embeddings": 4096,
                         "rms_norm_eps": 1e-05, "vocab_size": 32064},
         "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024,
                           "image_size": 336, "intermediate_size": 4096,
                           "num_attention_heads": 16, "num_hidden_layers": 24,
                           "patch_size": 14, "projection_dim": 768}}
    cfg = llava.Config.from_hf_dict(d)
    hf = transformers.LlavaConfig(**json.loads(json.dumps(d)))
    t, v = hf.text_config, hf.vision_config
    self.assertEqual((cfg.text.vocab_size, cfg.text.hidden_size, cfg.text.intermediate_size,
                      cfg.text.num_layers, cfg.text.num_heads, cfg.text.num_kv_heads,
                      cfg.text.rms_norm_eps, cfg.text.tie_word_embeddings),
                     (t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers,
                      t.num_attention_heads, t.num_key_value_heads, t.rms_norm_eps,
                      hf.tie_word_embeddings))
    self.assertEqual((cfg.vision.hidden_size, cfg.vision.num_layers, cfg.vision.activation,
                      cfg.vision.layer_norm_eps, cfg.image_size, cfg.patch_size),
                     (v.hidden_size, v.num_hidden_layers, v.hidden_act, v.layer_norm_eps,
                      v.image_size, v.patch_size))
    self.assertEqual(cfg.image_token_id, hf.image_token_id)
    self.assertEqual(cfg.num_image_tokens, (v.image_size // v.patch_size) ** 2)
    with self.assertRaisesRegex(errors.ConfigError, "siglip_vision_model"):
      llava.Config.from_hf_dict(dict(d, vision_config={"model_type": "siglip_vision_model"}))
    with self.assertRaisesRegex(errors.ConfigError, "not a LLaVA"):
      llava.Config.from_hf_dict(dict(d, model_type="llama"))

  def test_assemble_around_a_language_model(self):
    """A random tower + projector around given decoder params: the language model is kept as
    it is, `make_processor` expands images to as many tokens as the tower gives features, the
    image reaches the logits, and it runs under jit."""
    from swiftjax.models import config as model_config  # pylint: disable=g-import-not-at-top
    tok = tiny("default")[2].tokenizer
    image_token_id = tok.convert_tokens_to_ids(IMAGE)
    text_cfg = model_config.ModelConfig(vocab_size=136, hidden_size=32, intermediate_size=48,
                                        num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                        tie_word_embeddings=True)
    text_params = decoder.init(text_cfg, jax.random.key(0))
    cfg, params = llava.assemble(text_cfg, text_params, vit.VitConfig(24, 48, 2, 4), 16, 4,
                                 jax.random.key(1), image_token_id=image_token_id,
                                 vision_feature_layer=-1)
    self.assertIs(params["language_model"], text_params)
    self.assertEqual(set(params), {"vision", "projector", "language_model"})
    self.assertEqual(jax.tree.structure(params), jax.tree.structure(llava.param_shapes(cfg)))
    self.assertEqual(jax.tree.structure(llava.param_axes(cfg), is_leaf=lambda x: isinstance(
        x, tuple)), jax.tree.structure(llava.param_shapes(cfg)))

    processor = llava.make_processor(cfg, tok)
    images = _images()
    image_inputs = llava.preprocess_images(processor, images)
    self.assertEqual(image_inputs["pixel_values"].shape, (2, 3, 16, 16))
    text = "a" + llava.image_text(processor, image_inputs, 0) + " the cat"
    ids = jnp.asarray(processor.tokenizer([text], add_special_tokens=False)["input_ids"])
    self.assertEqual(int(jnp.sum(ids == image_token_id)), cfg.num_image_tokens)
    np.testing.assert_array_equal(
        ids, processor(text=[f"a{IMAGE} the cat"], images=images[:1],
                       return_tensors="np")["input_ids"])
    run = jax.jit(llava.apply, static_argnames=("cfg",))
    pixels = image_inputs["pixel_values"]
    a, _ = run(params, ids, cfg, image_inputs={"pixel_values": pixels[:1]})
    b, _ = run(params, ids, cfg, image_inputs={"pixel_values": pixels[1:]})
    self.assertEqual(a.shape, (1, ids.shape[1], 136))
    self.assertGreater(float(jnp.abs(a[0, -1] - b[0, -1]).max()), 1e-6)
    np.testing.assert_allclose(a[0, 0], b[0, 0], atol=1e-6)  # before the image: causal
    # Two samples packed in one row: each sees only itself, its image in order.
    n = ids.shape[1]
    packed, _ = run(params, jnp.concatenate([ids, ids], axis=1), cfg,
                    image_inputs=image_inputs,
                    segment_ids=jnp.repeat(jnp.array([[1, 2]]), n, axis=1),
                    positions=jnp.tile(jnp.arange(n), 2)[None])
    np.testing.assert_allclose(packed[0, :n], a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, n:], b[0], atol=1e-5)
    with self.assertRaisesRegex(errors.ConfigError, "16 image tokens.* 32 features"):
      llava.apply(params, ids, cfg, image_inputs=image_inputs)
    with self.assertRaisesRegex(errors.ConfigError, "outside the language model's vocabulary"):
      llava.assemble(text_cfg, text_params, vit.VitConfig(24, 48, 2, 4), 16, 4,
                     jax.random.key(1), image_token_id=136)
    with self.assertRaisesRegex(errors.ConfigError, "single id"):
      llava.make_processor(cfg, tok, image_token="cat")


if __name__ == "__main__":
  absltest.main()
