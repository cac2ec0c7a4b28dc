"""Configuration of a decoder-only transformer, read from Hugging Face `config.json` or GGUF."""

import dataclasses
from typing import Any

from swiftjax import errors

# Gradient-checkpointing policies of the layer scan (`ModelConfig.remat`).
REMAT_POLICIES = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of a Llama-family decoder (hashable, so it can be a static jit argument).

  Attributes:
    model_type: Hugging Face `model_type` (`llama`, ...).
    vocab_size: V, rows of the embedding table.
    hidden_size: D, the residual width.
    intermediate_size: F, the MLP width.
    num_layers: L.
    num_heads: H, query heads.
    num_kv_heads: K, key/value heads (H % K == 0; grouped-query attention when K < H).
    head_dim: per-head width (usually D // H).
    rope_theta: RoPE base frequency.
    rope_scaling: Hugging Face `rope_scaling` as a tuple of (key, value) pairs, or None.
    mrope_section: multimodal RoPE (Qwen2-VL): how many of the head_dim // 2 rotary
      frequencies follow the temporal, height and width position (positions `[3, B, T]`);
      None for plain RoPE.
    rms_norm_eps: epsilon of RMSNorm.
    tie_word_embeddings: the LM head reuses the embedding table.
    max_position_embeddings: longest context the model was trained for.
    bos_token_id, eos_token_ids: special tokens (several EOS ids are allowed, as in Llama 3).
    qkv_bias / o_bias / mlp_bias: biases on the q/k/v, output and MLP projections (Qwen2: qkv).
    qk_norm: RMSNorm over each query and key head before RoPE (Qwen3).
    layer_windows: per-layer sliding-window size, 0 for full attention (Mistral: all layers;
      Gemma 2: alternating local/global). A query attends to keys with `q - k < window`.
    norm_offset: RMSNorm multiplies by `norm_offset + w` (Gemma: 1.0), computed in float32.
    embed_scale: multiply embeddings by sqrt(D) (Gemma).
    activation: MLP gate activation, `silu` (SwiGLU) or `gelu_tanh` (GeGLU).
    attn_logit_softcap / final_logit_softcap: `c * tanh(x / c)` on attention scores / logits.
    query_pre_attn_scalar: attention scale is this ** -0.5 (default head_dim).
    sandwich_norms: extra norms after attention and around the MLP (Gemma 2).
    scan_unroll: layers per iteration of the layer scan (`jax.lax.scan(unroll=...)`); 1 keeps
      compile time flat in depth, num_layers unrolls fully (a runtime setting, not part of the
      checkpoint).
    remat: gradient checkpointing of each decoder layer under autodiff (`REMAT_POLICIES`):
      `none` keeps every intermediate for the backward pass; `full` keeps only each layer's
      input and recomputes the layer (`jax.checkpoint_policies.nothing_saveable`); `dots`
      keeps the weight matmuls' outputs and recomputes the rest (attention scores, norms,
      activations: `dots_with_no_batch_dims_saveable`, maxtext's `minimal`). A runtime
      setting like `scan_unroll`: the forward values and the loaded weights are the same.
  """
  model_type: str = "llama"
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int = 128
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  mrope_section: tuple[int, ...] | None = None
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 4096
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  layer_windows: tuple[int, ...] | None = None
  norm_offset: float = 0.0
  embed_scale: bool = False
  activation: str = "silu"
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  query_pre_attn_scalar: float | None = None
  sandwich_norms: bool = False
  scan_unroll: int = 1
  remat: str = "none"

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise errors.ConfigError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "head_dim"):
      if getattr(self, name) <= 0:
        raise errors.ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    if self.mrope_section is not None and sum(self.mrope_section) != self.head_dim // 2:
      raise errors.ConfigError(f"mrope_section {self.mrope_section} does not sum to head_dim // 2 "
                               f"= {self.head_dim // 2}")
    if self.layer_windows is not None and len(self.layer_windows) != self.num_layers:
      raise errors.ConfigError(f"layer_windows has {len(self.layer_windows)} entries for "
                               f"{self.num_layers} layers")
    if self.remat not in REMAT_POLICIES:
      raise errors.ConfigError(f"remat policy {self.remat!r} is not one of "
                               f"{', '.join(REMAT_POLICIES)}")
    if self.activation not in ("silu", "gelu_tanh"):
      raise errors.ConfigError(f"activation {self.activation!r} is not supported "
                               "(supported: silu, gelu_tanh)")

  @property
  def windows(self) -> tuple[int, ...]:
    """Per-layer sliding-window size (0 = full attention)."""
    return self.layer_windows or (0,) * self.num_layers

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    return dict(self.rope_scaling) if self.rope_scaling else None

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    """Builds a config from a Hugging Face `config.json` dictionary (any supported family)."""
    from swiftjax.models import families  # pylint: disable=g-import-not-at-top
    return families.config_from_hf(d)

  @classmethod
  def base_kwargs_from_hf_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
    """The fields every family reads the same way from `config.json`."""
    try:
      hidden = int(d["hidden_size"])
      heads = int(d["num_attention_heads"])
      eos = d.get("eos_token_id")
      eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
      # transformers >= 5 writes `rope_parameters` (with rope_theta inside); older versions
      # write `rope_theta` and `rope_scaling` at the top level. Both are read.
      rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
      rope_theta = float(rope.pop("rope_theta", d.get("rope_theta", 10000.0)))
      # Qwen2-VL's multimodal RoPE: plain frequencies, split over 3 position axes (older
      # configs say `type: mrope`, transformers >= 5 `rope_type: default`).
      mrope = rope.pop("mrope_section", None)
      if mrope is not None and rope.get("type") == "mrope":
        rope.pop("type")
      rope_scaling = None
      if rope and rope.get("rope_type", rope.get("type", "default")) != "default":
        rope_scaling = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                    for k, v in rope.items()))
      return dict(
          model_type=d.get("model_type", "llama"),
          vocab_size=int(d["vocab_size"]),
          hidden_size=hidden,
          intermediate_size=int(d["intermediate_size"]),
          num_layers=int(d["num_hidden_layers"]),
          num_heads=heads,
          num_kv_heads=int(d.get("num_key_value_heads") or heads),
          head_dim=int(d.get("head_dim") or hidden // heads),
          rope_theta=rope_theta,
          rope_scaling=rope_scaling,
          mrope_section=tuple(int(n) for n in mrope) if mrope is not None else None,
          rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
          tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
          max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
          bos_token_id=d.get("bos_token_id"),
          eos_token_ids=tuple(int(e) for e in eos_ids),
      )
    except KeyError as e:
      raise errors.ConfigError(f"config.json lacks required key {e.args[0]!r}") from None
