"""LoRA family as pytree transforms: identity at init, merge/unmerge, training, sharding."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from swiftjax import errors
from swiftjax import linear
from swiftjax import models
from swiftjax import sharding
from swiftjax.lora import adapter
from swiftjax.lora import ia3
from swiftjax.lora import llama_pro
from swiftjax.lora import lora
from swiftjax.lora import neftune
from swiftjax.lora import prompt_tuning
from swiftjax.lora import vera
from swiftjax.lora import optim
from swiftjax.models import decoder

_CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=8)
_VARIANTS = (
    ("lora", dict()),
    ("rslora", dict(use_rslora=True)),
    ("dora", dict(use_dora=True)),
    ("pissa", dict(init_lora_weights="pissa")),
    ("olora", dict(init_lora_weights="olora")),
    ("gaussian_qv", dict(init_lora_weights="gaussian", target_modules=("q_proj", "v_proj"))),
)


def _randomize_b(adapters, seed=0):
  """Trained-looking adapters: B no longer zero."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(adapters)
  key = jax.random.key(seed)
  out = []
  for i, (path, x) in enumerate(leaves):
    name = str(path[-1])
    out.append(x + 0.05 * jax.random.normal(jax.random.fold_in(key, i), x.shape)
               if "lora_b" in name else x)
  return jax.tree_util.tree_unflatten(treedef, out)


class LoraTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.params = decoder.init(_CFG, jax.random.key(0))
    self.tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 10)))
    self.base, _ = decoder.apply(self.params, self.tokens, _CFG)

  @parameterized.named_parameters(*_VARIANTS)
  def test_identity_at_init(self, kw):
    cfg = lora.LoraConfig(r=4, alpha=8, **kw)
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    out, _ = decoder.apply(lora.apply(params, adapters, cfg), self.tokens, _CFG)
    np.testing.assert_allclose(np.asarray(out), np.asarray(self.base), atol=2e-5)

  @parameterized.named_parameters(*_VARIANTS)
  def test_merged_equals_unmerged_and_unmerge_inverts(self, kw):
    cfg = lora.LoraConfig(r=4, alpha=8, **kw)
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    adapters = _randomize_b(adapters)
    unmerged, _ = decoder.apply(lora.apply(params, adapters, cfg), self.tokens, _CFG)
    merged_params = lora.merged(params, adapters, cfg)
    merged, _ = decoder.apply(merged_params, self.tokens, _CFG)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(unmerged), atol=2e-5)
    self.assertGreater(float(jnp.abs(merged - self.base).max()), 1e-3)  # the update is real
    if cfg.use_dora:
      with self.assertRaisesRegex(errors.ConfigError, "DoRA merge cannot be undone"):
        lora.unmerge(merged_params, adapters, cfg)
    else:
      restored = lora.unmerge(merged_params, adapters, cfg)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), restored, params)

  def test_ia3_identity_at_init_and_exact_merge(self):
    cfg = ia3.IA3Config()
    params, adapters = ia3.init(self.params, jax.random.key(1), cfg)
    out, _ = decoder.apply(ia3.apply(params, adapters, cfg), self.tokens, _CFG)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(self.base))
    self.assertEqual(adapters["layers"]["mlp"]["down_proj"]["ia3_l"].shape, (2, 64))  # [L, in]
    self.assertEqual(adapters["layers"]["self_attn"]["k_proj"]["ia3_l"].shape, (2, 16))  # out
    adapters = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.key(3), x.shape),
                            adapters)
    scaled, _ = decoder.apply(ia3.apply(params, adapters, cfg), self.tokens, _CFG)
    merged, _ = decoder.apply(ia3.merged(params, adapters, cfg), self.tokens, _CFG)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(scaled), atol=2e-5)
    self.assertGreater(float(jnp.abs(scaled - self.base).max()), 1e-3)

  def test_prompt_tuning_trains_only_the_soft_prompt(self):
    cfg = prompt_tuning.PromptTuningConfig(num_virtual_tokens=4, init="text")
    _, adapters = prompt_tuning.init(self.params, jax.random.key(0), cfg, init_token_ids=[3, 4])
    np.testing.assert_array_equal(adapters["prompt_embeddings"][2],
                                  self.params["embed_tokens"]["embedding"][3])
    targets = jnp.roll(self.tokens, -1, axis=1)

    def loss_fn(a):
      embeds, mask = prompt_tuning.inputs(self.params, a, self.tokens)
      logits, _ = decoder.apply(self.params, None, _CFG, embeds=embeds, mask=mask)
      return optax.softmax_cross_entropy_with_integer_labels(logits[:, 4:], targets).mean()

    g = jax.grad(loss_fn)(adapters)
    self.assertGreater(float(jnp.abs(g["prompt_embeddings"]).max()), 0)
    with self.assertRaisesRegex(errors.ConfigError, "needs init_token_ids"):
      prompt_tuning.init(self.params, jax.random.key(0), cfg)

  def test_neftune_noise_scale(self):
    emb = decoder.embed(self.params, self.tokens)
    noisy = neftune.noisy_embeddings(emb, jax.random.key(0), alpha=5.0)
    bound = 5.0 / np.sqrt(emb.shape[1] * emb.shape[2])
    diff = np.abs(np.asarray(noisy - emb))
    self.assertLessEqual(diff.max(), bound * (1 + 1e-5))
    self.assertGreater(diff.max(), 0.9 * bound)  # uniform noise reaches near its bound

  def test_vera_identity_at_init_and_merge(self):
    cfg = vera.VeraConfig(r=8, target_modules=("q_proj", "v_proj", "up_proj"))
    params, adapters = vera.init(self.params, jax.random.key(1), cfg)
    out, _ = decoder.apply(vera.apply(params, adapters, cfg), self.tokens, _CFG)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(self.base))
    # Shared projections sized to the largest target: in 32, out 64 (up_proj).
    self.assertEqual(adapters["vera_A"].shape, (32, 8))
    self.assertEqual(adapters["vera_B"].shape, (8, 64))
    self.assertEqual(vera.trainable_count(adapters), 2 * ((8 + 32) + (8 + 16) + (8 + 64)))
    adapters = jax.tree.map(lambda x: x + 0.2, adapters)
    wrapped = vera.apply(params, adapters, cfg)
    got, _ = decoder.apply(wrapped, self.tokens, _CFG)
    dense = jax.tree.map(lambda w: linear.densify(w), wrapped, is_leaf=linear.is_weight_kind)
    merged, _ = decoder.apply(dense, self.tokens, _CFG)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(got), atol=2e-5)
    grads = jax.grad(lambda a: decoder.apply(vera.apply(params, a, cfg), self.tokens,
                                             _CFG)[0].sum())(adapters)
    self.assertEqual(float(jnp.abs(grads["vera_A"]).max()), 0.0)  # shared projections frozen

  def test_bottleneck_adapter_identity_and_training(self):
    cfg = adapter.AdapterConfig(dim=8)
    params, adapters = adapter.init(self.params, jax.random.key(1), cfg)
    self.assertEqual(lora.adapter_paths(adapters),
                     ["layers/mlp/down_proj", "layers/self_attn/o_proj"])
    out, _ = decoder.apply(adapter.apply(params, adapters, cfg), self.tokens, _CFG)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(self.base))
    g = jax.grad(lambda a: decoder.apply(adapter.apply(params, a, cfg), self.tokens,
                                         _CFG)[0].std())(adapters)
    self.assertGreater(float(jnp.abs(g["layers"]["mlp"]["down_proj"]["up"]).max()), 0)

  def test_llama_pro_expansion_is_identity_and_trains_only_new_blocks(self):
    params, cfg, new = llama_pro.expand(self.params, _CFG, num_new_blocks=2)
    self.assertEqual(cfg.num_layers, 4)
    np.testing.assert_array_equal(new, [False, True, False, True])
    out, _ = decoder.apply(params, self.tokens, cfg)
    np.testing.assert_allclose(np.asarray(out), np.asarray(self.base), atol=1e-5)
    opt = llama_pro.optimizer(optax.adam(1e-2), new)
    state = opt.init(params)
    targets = jnp.roll(self.tokens, -1, axis=1)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        decoder.apply(p, self.tokens, cfg)[0], targets).mean()
    updates, _ = opt.update(jax.grad(loss)(params), state, params)
    moved = jax.tree.map(lambda u: float(jnp.abs(u).max()), updates)
    self.assertEqual(moved["embed_tokens"]["embedding"], 0.0)
    # At the first step only the zeroed output projections of new blocks have gradients.
    down = np.abs(np.asarray(updates["layers"]["mlp"]["down_proj"]["kernel"])).max(axis=(1, 2))
    np.testing.assert_array_equal(down > 0, new)
    with self.assertRaisesRegex(errors.ConfigError, "must divide the 2 layers"):
      llama_pro.expand(self.params, _CFG, num_new_blocks=3)

  def test_trainable_count_and_summary(self):
    cfg = lora.LoraConfig(r=4, target_modules=("q_proj", "v_proj"))
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    # q: 32x32, v: 32x16 per layer; r=4: (32+32)*4 + (32+16)*4 = 448 per layer.
    self.assertEqual(lora.count_params(adapters), 2 * 448)
    total = lora.count_params(params) + 896
    self.assertEqual(lora.trainable_summary(params, adapters),
                     f"trainable params: 896 || all params: {total:,d} || "
                     f"trainable%: {100 * 896 / total:.4f}")

  def test_dropout_only_with_a_key(self):
    cfg = lora.LoraConfig(r=4, dropout=0.5)
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    adapters = _randomize_b(adapters)
    evaluate = lambda rng: decoder.apply(lora.apply(params, adapters, cfg, rng=rng),
                                         self.tokens, _CFG)[0]
    np.testing.assert_array_equal(evaluate(None), evaluate(None))
    self.assertGreater(float(jnp.abs(evaluate(jax.random.key(2)) - evaluate(None)).max()), 1e-4)

  @parameterized.named_parameters(("f32_2d", (5, 12), jnp.float32, 1e-5),
                                  ("f32_3d", (2, 3, 12), jnp.float32, 1e-5),
                                  ("bf16", (2, 3, 12), jnp.bfloat16, 2e-2))
  def test_low_rank_backward_equals_autodiff(self, x_shape, dtype, tol):
    # The hand-written VJP of `s (x A) B` against autodiff of the plain expression.
    kx, ka, kb, kg = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(kx, x_shape, dtype)
    a = jax.random.normal(ka, (12, 3), dtype)
    b = jax.random.normal(kb, (3, 7), dtype)
    g = jax.random.normal(kg, (*x_shape[:-1], 7), dtype)
    plain = lambda x, a, b: (x @ a) @ b * 2.5
    y, vjp = jax.vjp(lambda x, a, b: lora.low_rank(x, a, b, 2.5), x, a, b)
    y_ref, vjp_ref = jax.vjp(plain, x, a, b)
    for got, want in zip((y, *vjp(g)), (y_ref, *vjp_ref(g))):
      self.assertEqual(got.dtype, want.dtype)
      self.assertEqual(got.shape, want.shape)
      np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                 rtol=tol, atol=tol * float(jnp.abs(want).max()))

  def test_adapter_gradients_equal_the_merged_weights(self):
    # Gradients of the unmerged model (the custom low-rank backward inside the layer scan)
    # equal those of the merged one (W + s A B differentiated by plain autodiff).
    cfg = lora.LoraConfig(r=4, alpha=8)
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    adapters = _randomize_b(adapters)
    targets = jnp.roll(self.tokens, -1, axis=1)

    def loss(build):
      return lambda a: optax.softmax_cross_entropy_with_integer_labels(
          decoder.apply(build(params, a, cfg), self.tokens, _CFG)[0], targets).mean()

    got = jax.grad(loss(lora.apply))(adapters)
    want = jax.grad(loss(lora.merged))(adapters)
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * float(jnp.abs(w).max()) + 1e-9,
                                 err_msg=jax.tree_util.keystr(path))

  def test_regex_targets(self):
    cfg = lora.LoraConfig(r=2, target_modules=r"layers/mlp/(up|down)_proj/kernel")
    _, adapters = lora.init(self.params, jax.random.key(1), cfg)
    self.assertEqual(lora.adapter_paths(adapters), ["layers/mlp/down_proj", "layers/mlp/up_proj"])

  def test_bad_configs(self):
    with self.assertRaisesRegex(errors.ConfigError, r"matches no kernel; kernels are"):
      lora.init(self.params, jax.random.key(1), lora.LoraConfig(target_modules=".*/qq_proj/.*"))
    with self.assertRaisesRegex(errors.ConfigError,
                                r"rank r=20 exceeds min\(in, out\)=16 of layers/self_attn/k_proj"):
      lora.init(self.params, jax.random.key(1), lora.LoraConfig(r=20, target_modules=("k_proj",)))
    with self.assertRaisesRegex(errors.ConfigError, "init_lora_weights 'loftq'"):
      lora.LoraConfig(init_lora_weights="loftq")

  def test_training_moves_only_adapters(self):
    cfg = lora.LoraConfig(r=4, alpha=8)
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    targets = jnp.roll(self.tokens, -1, axis=1)

    def loss_fn(adapters):
      logits, _ = decoder.apply(lora.apply(params, adapters, cfg), self.tokens, _CFG)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    opt = optim.lora_plus(optax.adam, 1e-2, lr_ratio=4.0)
    state = opt.init(adapters)
    first = float(loss_fn(adapters))
    step = jax.jit(lambda a, s: (lambda l, g: (l, *opt.update(g, s, a)))(*jax.value_and_grad(
        loss_fn)(a)))
    for _ in range(20):
      loss, updates, state = step(adapters, state)
      adapters = optax.apply_updates(adapters, updates)
    self.assertLess(float(loss), first - 0.1)

  def test_general_path_trains_a_model_it_has_never_seen(self):
    # A two-layer MLP written here: only its params' paths matter to the tuner.
    rng = np.random.default_rng(0)
    user_params = {"encoder": {"kernel": jnp.asarray(rng.normal(size=(8, 16)) / 3)},
                   "head": {"kernel": jnp.asarray(rng.normal(size=(16, 1)) / 4)}}

    def apply_fn(p, x):
      return jnp.tanh(x @ p["encoder"]["kernel"]) @ p["head"]["kernel"]

    x = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
    y = jnp.sin(x[:, :1] * 2)
    cfg = lora.LoraConfig(r=2, alpha=4, target_modules=r"encoder/kernel")
    base, adapters = lora.init(user_params, jax.random.key(0), cfg)
    loss = lambda a: jnp.mean((apply_fn(lora.merged(base, a, cfg), x) - y) ** 2)
    opt = optax.adam(3e-2)
    state = opt.init(adapters)
    first = float(loss(adapters))
    for _ in range(100):
      g = jax.grad(loss)(adapters)
      upd, state = opt.update(g, state)
      adapters = optax.apply_updates(adapters, upd)
    self.assertLess(float(loss(adapters)), 0.7 * first)
    np.testing.assert_array_equal(base["encoder"]["kernel"], user_params["encoder"]["kernel"])

  def test_freeze_and_split(self):
    trainable, frozen = optim.split_trainable(self.params, r"layers/mlp/.*")
    self.assertIsNone(trainable["layers"]["self_attn"]["q_proj"]["kernel"])
    self.assertIsNone(frozen["layers"]["mlp"]["up_proj"]["kernel"])
    jax.tree.map(np.testing.assert_array_equal, optim.combine(trainable, frozen), self.params)
    opt = optim.freeze(optax.sgd(1.0), r"layers/self_attn/.*|embed_tokens/.*")
    grads = jax.tree.map(jnp.ones_like, self.params)
    updates, _ = opt.update(grads, opt.init(self.params), self.params)
    self.assertEqual(float(jnp.abs(updates["layers"]["self_attn"]["q_proj"]["kernel"]).max()), 0)
    self.assertEqual(float(updates["layers"]["mlp"]["up_proj"]["kernel"].min()), -1.0)

  @parameterized.named_parameters(("lora", False), ("dora", True))
  def test_sharded_adapters_match_unsharded(self, dora):
    cfg = lora.LoraConfig(r=4, alpha=8, use_dora=dora)
    params, adapters = lora.init(self.params, jax.random.key(1), cfg)
    adapters = _randomize_b(adapters)
    want, _ = decoder.apply(lora.apply(params, adapters, cfg), self.tokens, _CFG)
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    p_axes = decoder.param_axes(_CFG)
    s_params = sharding.shard(params, p_axes, mesh)
    s_adapters = sharding.shard(adapters, lora.adapter_axes(adapters, p_axes), mesh)
    b = s_adapters["layers"]["mlp"]["up_proj"]["lora_b"]
    self.assertEqual(b.sharding.spec[-1], "tensor")  # B follows the kernel's output axis
    got, _ = jax.jit(lambda p, a: decoder.apply(lora.apply(p, a, cfg), self.tokens, _CFG))(
        s_params, s_adapters)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


if __name__ == "__main__":
  absltest.main()
