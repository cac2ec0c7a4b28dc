"""The shared vision encoder stack against transformers' CLIP encoder, and its switches."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax.mllm import inputs
from swiftjax.mllm import vit
from swiftjax.models import decoder


def _from_state_dict(cfg: vit.VitConfig, state: dict, prefix: str) -> dict:
  """Our params from a torch encoder's state dict through the Hugging Face name table."""
  stacked = {}
  for name, (path, layer, transpose) in vit.hf_tensor_names(cfg, prefix).items():
    w = state[name].detach().numpy()
    stacked.setdefault(path, [None] * cfg.num_layers)[layer] = w.T if transpose else w
  return decoder.nest({p: jnp.asarray(np.stack(ws)) for p, ws in stacked.items()})


class VitTest(absltest.TestCase):

  def test_matches_transformers_clip_encoder_at_every_depth(self):
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import CLIPVisionConfig  # pylint: disable=g-import-not-at-top
    from transformers.models.clip import modeling_clip  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    hf_cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4)
    hf_cfg._attn_implementation = "eager"  # pylint: disable=protected-access
    enc = modeling_clip.CLIPEncoder(hf_cfg).eval()
    for p in enc.parameters():
      torch.nn.init.normal_(p, std=0.2)
    cfg = vit.VitConfig(32, 64, 3, 4, layer_norm_eps=hf_cfg.layer_norm_eps)
    params = _from_state_dict(cfg, {f"enc.{k}": v for k, v in enc.state_dict().items()},
                              "enc.layers")
    x = np.random.RandomState(0).randn(2, 7, 32).astype(np.float32)
    for depth in (1, 3):
      enc_d = modeling_clip.CLIPEncoder(hf_cfg).eval()
      enc_d.load_state_dict(enc.state_dict())
      enc_d.layers = enc_d.layers[:depth]
      with torch.no_grad():
        want = enc_d(inputs_embeds=torch.tensor(x))[0].numpy()
      got = np.asarray(vit.encode(params, jnp.asarray(x), cfg, num_layers=depth))
      np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())

  def test_fused_qkv_and_segments(self):
    cfg = vit.VitConfig(16, 32, 2, 2)
    params = vit.init(cfg, jax.random.key(0))
    fused_cfg = vit.VitConfig(16, 32, 2, 2, fused_qkv=True)
    fused = dict(params)
    a = dict(params["self_attn"])
    fused["self_attn"] = {"o_proj": a["o_proj"], "qkv": {
        "kernel": jnp.concatenate([a[n]["kernel"] for n in ("q_proj", "k_proj", "v_proj")], -1),
        "bias": jnp.concatenate([a[n]["bias"] for n in ("q_proj", "k_proj", "v_proj")], -1)}}
    x = jax.random.normal(jax.random.key(1), (1, 6, 16))
    np.testing.assert_allclose(vit.encode(fused, x, fused_cfg), vit.encode(params, x, cfg),
                               atol=1e-6)
    # Two images packed in one sequence: each sees only itself.
    seg = jnp.array([[1, 1, 1, 2, 2, 2]])
    packed = vit.encode(params, x, cfg, segment_ids=seg)
    alone = [vit.encode(params, x[:, s], cfg) for s in (slice(0, 3), slice(3, 6))]
    np.testing.assert_allclose(packed, jnp.concatenate(alone, axis=1), atol=1e-6)

  def test_merge_image_features_in_order(self):
    ids = jnp.array([[5, 9, 9, 6], [9, 7, 8, 9]])
    embeds = jnp.zeros((2, 4, 3))
    feats = jnp.arange(12.0).reshape(4, 3) + 1
    got = inputs.merge_image_features(embeds, ids, 9, feats)
    np.testing.assert_array_equal(got[0, 1], feats[0])
    np.testing.assert_array_equal(got[0, 2], feats[1])
    np.testing.assert_array_equal(got[1, 0], feats[2])
    np.testing.assert_array_equal(got[1, 3], feats[3])
    np.testing.assert_array_equal(got[1, 1], 0)
    with self.assertRaisesRegex(Exception, "3 image tokens.* 2 features"):
      inputs.check_feature_count(np.array([[9, 9, 9]]), 9, 2, where="sample 4")


if __name__ == "__main__":
  absltest.main()
