"""Bad checkpoints give errors that name the file, the tensor and the shapes."""

import json
import pathlib

from absl.testing import absltest
from safetensors.numpy import load_file, save_file

from swiftjax import errors
from swiftjax import models
from tests import testutil


class CheckpointErrorsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = pathlib.Path(self.create_tempdir().full_path)
    testutil.save_tiny_llama(self.dir)
    self.weights = self.dir / "model.safetensors"

  def test_missing_path(self):
    with self.assertRaisesRegex(errors.CheckpointError, r"/no/such/model does not exist"):
      models.from_pretrained("/no/such/model")

  def test_missing_config(self):
    (self.dir / "config.json").unlink()
    with self.assertRaisesRegex(errors.CheckpointError, r"has no config\.json"):
      models.from_pretrained(self.dir)

  def test_bad_json_names_the_line(self):
    (self.dir / "config.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    with self.assertRaisesRegex(errors.CheckpointError, r"config\.json: invalid JSON at line 3"):
      models.from_pretrained(self.dir)

  def test_unsupported_model_type_lists_supported(self):
    cfg = json.loads((self.dir / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (self.dir / "config.json").write_text(json.dumps(cfg))
    with self.assertRaisesRegex(errors.ConfigError,
                                r"model_type 'gpt_neox' is not supported \(supported: llama"):
      models.from_pretrained(self.dir)

  def test_missing_tensor_is_named(self):
    tensors = load_file(str(self.weights))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(self.weights))
    with self.assertRaisesRegex(errors.CheckpointError,
                                r"lacks tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
      models.from_pretrained(self.dir)

  def test_shape_mismatch_gives_both_shapes(self):
    tensors = load_file(str(self.weights))
    tensors["model.layers.0.self_attn.q_proj.weight"] = tensors[
        "model.layers.0.self_attn.q_proj.weight"][:32]
    save_file(tensors, str(self.weights))
    with self.assertRaisesRegex(
        errors.CheckpointError,
        r"model\.layers\.0\.self_attn\.q_proj\.weight has shape \(64, 32\), expected \(64, 64\)"):
      models.from_pretrained(self.dir)

  def test_truncated_safetensors(self):
    data = self.weights.read_bytes()
    self.weights.write_bytes(data[: len(data) // 2])
    with self.assertRaisesRegex(errors.CheckpointError, r"model\.safetensors"):
      models.from_pretrained(self.dir)

  def test_wrong_dtype_request(self):
    with self.assertRaisesRegex(errors.ConfigError, r"dtype 'int8' is not supported"):
      models.from_pretrained(self.dir, dtype="int8")


if __name__ == "__main__":
  absltest.main()
