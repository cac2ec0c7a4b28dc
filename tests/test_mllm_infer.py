"""Multimodal inference: greedy generation with images equals transformers' `generate`, a
left-padded batch equals each request alone, the family registry, `launch.infer --images`, and
the user's mistakes (missing/unreadable image, placeholder count, images for a text model)."""

import json
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np

from swiftjax import errors
from swiftjax import generate as gen
from swiftjax import mllm
from swiftjax.mllm import generate as mgen
from tests import testutil

IMAGE = "<image>"
SIDE, PATCH = 32, 8  # 16 patches: 16 image tokens per image
DEMO = ("llamafactory", "data", "mllm_demo_data")


def save_tiny_llava(directory: pathlib.Path, seed: int = 0):
  """A random tiny LLaVA-1.5 (fp32) with its processor saved in `directory`; the torch model."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tok = testutil.save_tiny_tokenizer(directory)
  tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
  transformers.LlavaProcessor(
      image_processor=transformers.CLIPImageProcessor(
          size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}),
      tokenizer=tok, patch_size=PATCH, num_additional_image_tokens=1,
      vision_feature_select_strategy="default",
      chat_template=tok.chat_template).save_pretrained(str(directory))
  torch.manual_seed(seed)
  config = transformers.LlavaConfig(
      vision_config=transformers.CLIPVisionConfig(
          hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
          image_size=SIDE, patch_size=PATCH, projection_dim=16),
      text_config=testutil.tiny_config("llama", vocab_size=len(tok)),
      image_token_index=tok.convert_tokens_to_ids(IMAGE))
  model = transformers.LlavaForConditionalGeneration._from_config(  # pylint: disable=protected-access
      config, attn_implementation="eager").float().eval()
  with torch.no_grad():  # random norms and biases, so a swapped one cannot hide
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(directory))
  return model


def _hf_greedy(model, prompt, image_inputs, n, **extra):
  """transformers' greedy continuation (no EOS) of one prompt with its image inputs."""
  import torch  # pylint: disable=g-import-not-at-top
  kwargs = {k: torch.as_tensor(v) for k, v in image_inputs.items() if k not in ("rows", "cols")}
  kwargs.update(extra)
  with torch.no_grad():
    out = model.generate(input_ids=torch.as_tensor([prompt]), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0, **kwargs)
  return out[0, len(prompt):].tolist()


class LlavaInferTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.dir = pathlib.Path(cls._tmp.name) / "llava"
    cls.hf = save_tiny_llava(cls.dir)
    cls.model = mllm.load(cls.dir)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _photos(self, n=2):
    root = testutil.require_shared(*DEMO)
    return [str(root / f"{i + 1}.jpg") for i in range(n)]

  def _greedy(self, requests, n=8):
    prompts, image_inputs = mllm.prepare(self.model, requests)
    return mgen.generate(self.model.family, self.model.params, self.model.cfg, prompts,
                         image_inputs, gen.SamplingConfig(max_new_tokens=n), eos_ids=[-5])

  def test_greedy_matches_transformers_on_a_photo(self):
    photo, = self._photos(1)
    request = (f"{IMAGE}\nwhat is the cat ?", [photo])
    (prompt,), image_inputs = mllm.prepare(self.model, [request])
    self.assertEqual(prompt.count(self.model.cfg.image_token_id), 16)
    want = _hf_greedy(self.hf, prompt, image_inputs, n=10)
    self.assertEqual(self._greedy([request], 10), [want])
    # The chat path answers the same tokens, decoded (cut at EOS, as transformers would stop).
    eos = self.model.eos_ids
    cut = next((i for i, t in enumerate(want) if t in eos), len(want))
    answer = mllm.chat(self.model, request[0], request[1], gen.SamplingConfig(max_new_tokens=10))
    self.assertEqual(answer, self.model.tokenizer.decode(want[:cut], skip_special_tokens=True))

  def test_left_padded_batch_equals_each_alone(self):
    a, b = self._photos(2)
    requests = [(f"{IMAGE} who is he ?", [a]),
                ([{"role": "system", "content": "look closely ."},
                  {"role": "user", "content": f"the cat {IMAGE} sat on the mat and {IMAGE}"}],
                 [b, a]),
                ("what is the capital of france ?", [])]
    batch = self._greedy(requests)
    for request, row in zip(requests, batch):
      self.assertEqual(self._greedy([request]), [row])
    self.assertNotEqual(batch[0], batch[1])

  def test_user_mistakes_are_named(self):
    photo, = self._photos(1)
    with self.assertRaisesRegex(errors.ConfigError, r"2 <image> placeholder\(s\) but 1 image"):
      mllm.chat(self.model, f"{IMAGE} and {IMAGE}", [photo])
    with self.assertRaisesRegex(errors.ConfigError, r"request 1: .*0 <image> placeholder"):
      mllm.answer(self.model, [(IMAGE, [photo]), ("no image here", [photo])])
    with self.assertRaisesRegex(errors.ConfigError, r"image file /nonexistent/x\.jpg does not "):
      mllm.chat(self.model, IMAGE, ["/nonexistent/x.jpg"])
    bad = pathlib.Path(self.create_tempdir().full_path) / "bad.jpg"
    bad.write_text("not an image")
    with self.assertRaisesRegex(errors.ConfigError, rf"image file {bad} cannot be read"):
      mllm.chat(self.model, IMAGE, [str(bad)])
    # Expanded image tokens that do not match the features: refused before jit, not garbled.
    (prompt,), image_inputs = mllm.prepare(self.model, [(IMAGE, [photo])])
    prompt.remove(self.model.cfg.image_token_id)
    with self.assertRaisesRegex(errors.ConfigError, "15 image tokens .* 16 features"):
      mgen.generate(self.model.family, self.model.params, self.model.cfg, [prompt],
                    image_inputs, gen.SamplingConfig(max_new_tokens=2))

  def test_registry(self):
    self.assertTrue(mllm.is_multimodal(self.dir))
    text_dir = pathlib.Path(self.create_tempdir().full_path)
    (text_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for path in (text_dir, None, "/nonexistent", testutil.REPO_ROOT / "README.md"):
      self.assertFalse(mllm.is_multimodal(path))
    with self.assertRaisesRegex(errors.ConfigError, "not a multimodal model directory"):
      mllm.load(text_dir)
    # A family that cannot be imported is an error of its own; the others still load.
    with mock.patch.dict(mllm.FAMILIES, broken="swiftjax.mllm.no_such_family"):
      with self.assertRaisesRegex(errors.ConfigError, "family 'broken' is unavailable"):
        mllm.family("broken")
      self.assertIs(mllm.family("llava"), self.model.family)

  def test_trained_adapters_and_projector_are_applied(self):
    from swiftjax.lora import lora  # pylint: disable=g-import-not-at-top
    from swiftjax.mllm import train  # pylint: disable=g-import-not-at-top
    cfg = lora.LoraConfig(r=2, alpha=4, target_modules=("q_proj", "v_proj"))
    base = self.model.params
    _, adapters = lora.init(base["language_model"], jax.random.key(0), cfg)
    adapters = jax.tree.map(lambda x: x + 0.1, adapters)  # B starts at zero: make it count
    projector = jax.tree.map(lambda x: x + 1.0, base["projector"])
    workdir = pathlib.Path(self.create_tempdir().full_path)
    out = train.save(workdir, {"language_model": adapters, "projector": projector}, cfg,
                     self.model.cfg)
    tuned = mllm.load(self.dir, adapters=out)
    want = lora.merged(base["language_model"], adapters, cfg)
    got = tuned.params["language_model"]["layers"]
    for module in ("self_attn/q_proj", "self_attn/v_proj", "mlp/up_proj"):
      a, b = module.split("/")
      np.testing.assert_allclose(np.asarray(got[a][b]["kernel"]),
                                 np.asarray(want["layers"][a][b]["kernel"]), atol=1e-6)
    self.assertFalse(np.allclose(got["self_attn"]["q_proj"]["kernel"],
                                 base["language_model"]["layers"]["self_attn"]["q_proj"]
                                 ["kernel"]))
    for x, y in zip(jax.tree.leaves(tuned.params["projector"]), jax.tree.leaves(projector)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    photo, = self._photos(1)
    self.assertNotEqual(mllm.chat(tuned, IMAGE, [photo], gen.SamplingConfig(max_new_tokens=4)),
                        mllm.chat(self.model, IMAGE, [photo],
                                  gen.SamplingConfig(max_new_tokens=4)))

  def test_answer_file_resolves_images_beside_the_file(self):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    photo, = self._photos(1)
    folder = pathlib.Path(self.create_tempdir().full_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)).save(
        folder / "shapes.png")
    rows = [{"messages": [{"role": "user", "content": f"{IMAGE}what ?"},
                          {"role": "assistant", "content": "a cat"}], "images": [photo]},
            {"messages": [{"role": "user", "content": f"and {IMAGE}?"}],
             "images": ["shapes.png"]}]
    source = folder / "requests.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sampling = gen.SamplingConfig(max_new_tokens=6)
    self.assertEqual(mllm.answer_file(self.model, source, folder / "out.jsonl", sampling), 2)
    out = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    self.assertEqual([o["labels"] for o in out], ["a cat", None])
    # The same batch through `answer` (a batch equals its requests alone: tested above).
    self.assertEqual([o["response"] for o in out], mllm.answer(
        self.model, [(f"{IMAGE}what ?", [photo]), (f"and {IMAGE}?", [str(folder / "shapes.png")])],
        sampling))
    rows[1]["images"] = ["missing.png"]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with self.assertRaisesRegex(errors.ConfigError, r"requests\.jsonl:2: image file .*missing"):
      mllm.answer_file(self.model, source, folder / "out2.jsonl", sampling)
    self.assertFalse((folder / "out2.jsonl").exists())

  def test_launcher_answers_with_images(self):
    a, b = self._photos(2)
    prompt = f"{IMAGE} and {IMAGE} what ?"
    r = testutil.run_module("launch.infer", f"--model={self.dir}", f"--images={a},{b}",
                            f"--prompt={prompt}", "--max_new_tokens=6")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    want = mllm.chat(self.model, prompt, [a, b], gen.SamplingConfig(max_new_tokens=6))
    self.assertEqual(r.stdout.splitlines()[-1], want)

  def test_launcher_refuses_mistakes_in_one_line(self):
    photo, = self._photos(1)
    cases = [
        ([f"--images={photo}", "--prompt=<image> hi"], r"--images needs a multimodal model"),
        ([f"--model={self.dir}", "--images=/nonexistent/a.jpg", "--prompt=<image> hi"],
         r"image file /nonexistent/a\.jpg does not exist"),
        ([f"--model={self.dir}", f"--images={photo}", f"--images={photo}",
          "--prompt=<image> hi"], r"1 <image> placeholder\(s\) but 2 image\(s\)"),
    ]
    for args, pattern in cases:
      testutil.assert_one_line_error(self, testutil.run_module("launch.infer", *args), pattern)


class OtherFamiliesInferTest(absltest.TestCase):
  """Greedy generation of a left-padded batch equals each request alone and transformers'
  `generate`, for the families whose image inputs are not one fixed-size tensor per image.
  The tiny checkpoints are built by the families' own tests."""

  def _check(self, family_test: str, build, hf_inputs):
    try:
      q = __import__(f"tests.{family_test}", fromlist=["_"])
    except ImportError as e:
      self.skipTest(f"{family_test} is not available: {e}")
    root = testutil.require_shared(*DEMO)
    directory = pathlib.Path(self.create_tempdir().full_path) / "model"
    hf = build(q, directory)
    model = mllm.load(directory)
    requests = [(f"{IMAGE}who are they ?", [str(root / "1.jpg")]),
                (f"the cat {IMAGE} sat on {IMAGE} the mat", [str(root / "2.jpg"),
                                                             str(root / "3.jpg")])]
    sampling = gen.SamplingConfig(max_new_tokens=8)

    def ours(reqs):
      prompts, image_inputs = mllm.prepare(model, reqs)
      return mgen.generate(model.family, model.params, model.cfg, prompts, image_inputs,
                           sampling, eos_ids=[-5])

    batch = ours(requests)
    for request, row in zip(requests, batch):
      (prompt,), image_inputs = mllm.prepare(model, [request])
      self.assertEqual(ours([request]), [row])
      self.assertEqual(row, _hf_greedy(hf, prompt, **hf_inputs(model, prompt, image_inputs),
                                       n=8))
    self.assertNotEqual(batch[0], batch[1])

  def test_qwen2_vl(self):
    """M-RoPE: the prefill computes 3D positions from the ids and grids; decoding continues
    from the cache's `next_pos` (transformers' position + `rope_deltas`)."""
    import torch  # pylint: disable=g-import-not-at-top

    def build(q, directory):
      tok = q._tokenizer(directory)  # pylint: disable=protected-access
      hf = q._save_model(directory, tok, seed=1)  # pylint: disable=protected-access
      # Only the image processor: transformers 5's Qwen2VLProcessor needs torchvision to load,
      # so `mllm.load` falls back to the image processor and the tokenizer.
      processor = q._processor(tok)  # pylint: disable=protected-access
      processor.image_processor.save_pretrained(str(directory))
      return hf

    def hf_inputs(model, prompt, image_inputs):
      types = torch.as_tensor([[int(t == model.cfg.image_token_id) for t in prompt]])
      return dict(image_inputs=image_inputs, mm_token_type_ids=types)

    self._check("test_mllm_qwen2_vl", build, hf_inputs)

  def test_idefics3(self):
    """Image splitting: sub-images per image vary; the batch's inputs are concatenated."""

    def build(q, directory):
      tok = q._tokenizer(directory)  # pylint: disable=protected-access
      q._processor(tok).save_pretrained(str(directory))  # pylint: disable=protected-access
      return q._save_model(directory, tok)  # pylint: disable=protected-access

    def hf_inputs(model, prompt, image_inputs):
      del model, prompt
      return dict(image_inputs={k: image_inputs[k][None] for k in ("pixel_values",
                                                                   "pixel_attention_mask")})

    self._check("test_mllm_idefics3", build, hf_inputs)


if __name__ == "__main__":
  absltest.main()
