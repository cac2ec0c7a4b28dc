"""Sharded == unsharded on 8 fake CPU devices, for the meshes pods actually use."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from swiftjax import errors
from swiftjax import models
from swiftjax import sharding
from swiftjax.models import decoder

_CFG = models.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                          num_heads=8, num_kv_heads=4, head_dim=8)


class ShardingTest(parameterized.TestCase):

  def test_eight_devices(self):
    self.assertEqual(jax.device_count(), 8, "conftest.py should give 8 CPU devices")

  def test_logical_to_spec(self):
    mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
    self.assertEqual(sharding.logical_to_spec(("embed", "mlp"), (64, 128), mesh),
                     P("fsdp", "tensor"))
    # A dimension the mesh axis does not divide is replicated, not an error.
    self.assertEqual(sharding.logical_to_spec(("embed", "mlp"), (64, 6), mesh), P("fsdp", None))
    # A mesh axis is used once per array.
    self.assertEqual(sharding.logical_to_spec(("mlp", "vocab"), (128, 256), mesh),
                     P("tensor", None))
    self.assertEqual(sharding.logical_to_spec(("layers", "norm"), (2, 64), mesh), P(None, None))

  def test_bad_mesh(self):
    with self.assertRaisesRegex(errors.ConfigError, "needs 6 devices, found 8"):
      sharding.make_mesh(data=2, fsdp=3, tensor=1)

  @parameterized.named_parameters(("tensor8", 1, 1, 8), ("data2_fsdp4", 2, 4, 1),
                                  ("fsdp2_tensor4", 1, 2, 4))
  def test_sharded_forward_and_decode_match(self, data, fsdp, tensor):
    params = decoder.init(_CFG, jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 16)))
    want, _ = decoder.apply(params, tokens, _CFG)
    cache = decoder.init_cache(_CFG, 8, 32)
    _, cache = decoder.apply(params, tokens, _CFG, cache=cache)
    want_step, _ = decoder.apply(params, tokens[:, :1], _CFG, cache=cache)

    mesh = sharding.make_mesh(data, fsdp, tensor)
    sharded = sharding.shard(params, decoder.param_axes(_CFG), mesh)
    if tensor > 1:
      spec = sharded["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec
      self.assertEqual(spec[2], "tensor")
    batch = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
    step = jax.jit(decoder.apply, static_argnums=2)
    got, _ = step(sharded, jax.device_put(tokens, batch), _CFG)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    c = decoder.init_cache(_CFG, 8, 32)
    _, c = step(sharded, jax.device_put(tokens, batch), _CFG, cache=c)
    got_step, _ = step(sharded, jax.device_put(tokens[:, :1], batch), _CFG, cache=c)
    np.testing.assert_allclose(np.asarray(got_step), np.asarray(want_step), atol=1e-5)



class ShardedLoadTest(parameterized.TestCase):

  def test_load_straight_into_mesh_matches_unsharded(self):
    import pathlib  # pylint: disable=g-import-not-at-top
    from tests import testutil  # pylint: disable=g-import-not-at-top
    tmp = pathlib.Path(self.create_tempdir().full_path)
    # hidden 64 / intermediate 128 / 8 heads divide evenly on fsdp=2 x tensor=4.
    testutil.save_tiny_model(tmp, "qwen2", num_attention_heads=8, num_key_value_heads=4,
                             intermediate_size=128, max_shard_size="20KB")
    self.assertTrue((tmp / "model.safetensors.index.json").is_file())
    cfg, plain = models.from_pretrained(tmp)
    mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
    cfg2, sharded = models.from_pretrained(tmp, mesh=mesh, dtype="bfloat16")
    self.assertEqual(cfg, cfg2)
    kernel = sharded["layers"]["mlp"]["gate_proj"]["kernel"]
    self.assertEqual(kernel.dtype, jnp.bfloat16)
    self.assertEqual(kernel.sharding.spec, P(None, "fsdp", "tensor"))
    # Each device holds 1/8 of the kernel, not a replica.
    self.assertEqual(kernel.addressable_shards[0].data.shape, (2, 32, 32))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 12)))
    want, _ = decoder.apply(plain, tokens, cfg, compute_dtype=jnp.float32)
    got, _ = jax.jit(decoder.apply, static_argnums=2, static_argnames="compute_dtype")(
        sharded, tokens, cfg, compute_dtype=jnp.float32)
    # bf16 weights: close, not equal.
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=0.05)


class ShardedGenerateTest(absltest.TestCase):

  def test_generate_on_a_mesh_matches_one_device(self):
    from swiftjax import generate as gen  # pylint: disable=g-import-not-at-top
    params = decoder.init(_CFG, jax.random.key(3))
    prompts = [list(range(5, 5 + n)) for n in (3, 7, 4, 9, 2, 6, 5, 8)]
    s = gen.SamplingConfig(max_new_tokens=6)
    want = gen.generate(params, _CFG, prompts, s, eos_ids=[-5])
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    sharded = sharding.shard(params, decoder.param_axes(_CFG), mesh)
    got = gen.generate(sharded, _CFG, prompts, s, eos_ids=[-5], mesh=mesh)
    self.assertEqual(got, want)
    # Unstacked layers keep each kernel's sharding, minus the layer axis.
    flat = decoder.unstack_layers(sharded)
    self.assertEqual(flat["layers"][1]["mlp"]["up_proj"]["kernel"].sharding.spec,
                     P("fsdp", "tensor"))
    self.assertEqual(gen.generate(flat, _CFG, prompts, s, eos_ids=[-5], mesh=mesh), want)


if __name__ == "__main__":
  absltest.main()
