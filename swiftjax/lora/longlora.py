"""LongLoRA (Chen et al. 2024): long-context fine-tuning with shifted sparse attention (S2-Attn).

In training, attention is restricted to groups of `ratio * seq_len` tokens, with half of the
heads using groups shifted by half a group (`decoder.apply(s2_group_size=...)`); at inference
the model runs plain full attention, unchanged. LongLoRA trains LoRA adapters plus the
embedding and normalisation layers (`TRAINABLE_BASE`), which it finds necessary for long
context.
"""

from typing import Any

import jax

from swiftjax import errors
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

# Base parameters LongLoRA also trains, as a regex over paths (for `optim.split_trainable`).
TRAINABLE_BASE = r"embed_tokens/embedding|norm/scale|layers/.*layernorm/scale"


def group_size(seq_len: int, ratio: float = 0.25) -> int:
  """The S2-Attn group size for a training sequence length (the paper uses 1/4)."""
  g = int(seq_len * ratio)
  g -= g % 2
  if g < 2 or seq_len % g:
    raise errors.ConfigError(f"S2-Attn group {g} (ratio {ratio}) must be even, >= 2 and "
                             f"divide the sequence length {seq_len}")
  return g


def train_apply(params: Any, tokens: jax.Array, cfg: ModelConfig, *, ratio: float = 0.25,
                **kwargs) -> tuple[jax.Array, Any]:
  """`decoder.apply` with shifted sparse attention, for training steps."""
  return decoder.apply(params, tokens, cfg, s2_group_size=group_size(tokens.shape[1], ratio),
                       **kwargs)
