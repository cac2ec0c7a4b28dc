"""Quantized exports in the GPTQ checkpoint layout (AutoGPTQ, GPTQModel, transformers + optimum,
vLLM), and the reader that turns such a directory back into our weight kinds.

    from swiftjax import export
    export.export("out/", quant_method="rtn", quant_options=dict(bits=4, group_size=128))
    cfg, params = quantized.read_gptq("out/")      # Int4Weight kernels, float everything else

Every quantized linear `model.layers.i.<module>` is stored as four tensors instead of `.weight`
(`in`, `out` are the features of the linear, `G` its number of groups, `p = 32 / bits`):

| tensor | dtype | shape | holds |
|---|---|---|---|
| `qweight` | int32 | `[in / p, out]` | codes; word r holds input rows `r p .. r p + p - 1`, row `r p + j` in bits `[j bits, (j + 1) bits)` |
| `qzeros` | int32 | `[G, out / p]` | zero points minus 1, packed the same way along the output axis |
| `scales` | float16 | `[G, out]` | group scales |
| `g_idx` | int32 | `[in]` | group of each input row: `row // group_size` (no act-order permutation) |

and a reader dequantizes `W[r, o] = scales[g, o] * (code[r, o] - (qzeros[g, o] + 1))`,
`g = g_idx[r]`. The "+ 1" is the historical offset of the original ("gptq", v1) format: AutoGPTQ
stored `zero - 1`; GPTQModel's "gptq_v2" stores `zero` itself, and converts on load. We write
v1, which every reader takes. A v1 file cannot hold a zero point of 0 at 4 bits (it would be
stored as -1, which wraps into the neighbouring nibbles), so before writing, the asymmetric int4
groups whose zero point is 0 (groups with no value below -scale/2: rare in trained weights) are
re-quantized from the float weights on a grid with zero point 1 (`scale = max / 14`).

Our kinds map onto this exactly:
  * `Int4Weight` (asymmetric, groups of `group_size` rows): codes and zeros as they are,
    `sym: false`. Scales are rounded to float16 before writing (`to_fp16_scales`), so the file
    stands for exactly the params `quantize` returns.
  * `Int8Weight` (symmetric per output channel, codes -127..127): codes + 128, zero point 128,
    one group (`group_size: -1`), `sym: true`.
Embeddings, norms, biases and the LM head stay float (written in the export's `dtype`).

`QUANT_METHODS["rtn"]` / `["gptq"]` are the functions `swiftjax.export.export` calls.
"""

import json
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import errors
from swiftjax import int4
from swiftjax import int8
from swiftjax import quantize as quant_lib
from swiftjax.export import hf
from swiftjax.models import decoder
from swiftjax.models import safetensors_loader
from swiftjax.models.config import ModelConfig

BITS = (4, 8)
CHECKPOINT_FORMAT = "gptq"
_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


# ---------------------------------------------------------------------------------------------
# Bit packing (int32 words, value j of a word in bits [j bits, (j + 1) bits)).


def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
  """Codes `[n, m]` (0 .. 2^bits - 1) -> int32 `[n * bits / 32, m]`, packed along axis 0."""
  p = 32 // bits
  n, m = codes.shape
  c = codes.astype(np.uint32).reshape(n // p, p, m)
  words = np.zeros((n // p, m), np.uint32)
  for j in range(p):
    words |= c[:, j, :] << np.uint32(bits * j)
  return words.view(np.int32)


def unpack_rows(words: np.ndarray, bits: int) -> np.ndarray:
  """Inverse of `pack_rows`: int32 `[n / p, m]` -> codes `[n, m]` uint32."""
  w = np.ascontiguousarray(words).view(np.uint32)
  mask = np.uint32((1 << bits) - 1)
  parts = [(w >> np.uint32(bits * j)) & mask for j in range(32 // bits)]
  return np.stack(parts, axis=1).reshape(-1, w.shape[1])


def pack_cols(codes: np.ndarray, bits: int) -> np.ndarray:
  """Codes `[n, m]` -> int32 `[n, m * bits / 32]`, packed along axis 1."""
  return pack_rows(codes.T, bits).T.copy()


def unpack_cols(words: np.ndarray, bits: int) -> np.ndarray:
  return unpack_rows(np.ascontiguousarray(words.T), bits).T


# ---------------------------------------------------------------------------------------------
# Our kinds <-> GPTQ tensors.


def _check_shape(name: str, n_in: int, n_out: int, bits: int) -> None:
  p = 32 // bits
  if n_in % p or n_out % p:
    raise errors.ConfigError(f"{name}: a {n_in} -> {n_out} linear cannot be stored in the GPTQ "
                             f"layout at {bits} bits (both sizes must be multiples of {p})")


def gptq_tensors(leaf: Any, layer: int | None) -> tuple[dict[str, np.ndarray], int, int, bool]:
  """`({qweight, qzeros, scales, g_idx}, bits, group_size, sym)` of one `Int4Weight` or
  `Int8Weight` kernel (`layer` indexes a layer-stacked leaf; None for an unstacked one)."""
  pick = (lambda a: np.asarray(a)) if layer is None else (lambda a: np.asarray(a[layer]))
  if isinstance(leaf, int4.Int4Weight):
    packed = pick(leaf.packed)
    codes = np.concatenate([packed & 0xF, packed >> 4], axis=0)  # [in, out], split halves
    zero = pick(leaf.zero).astype(np.int64)
    if np.any(zero < 1) or np.any(zero > 16):
      raise errors.ConfigError("int4 zero points must be 1..16 for the GPTQ v1 layout "
                               "(quantize with `fit_v1_zeros` first)")
    scale, bits, group_size, sym = pick(leaf.scale), 4, leaf.group_size, False
  elif isinstance(leaf, int8.Int8Weight):
    codes = pick(leaf.q).astype(np.int64) + 128
    if leaf.transposed:  # output-major codes (`int8.output_major`) -> GPTQ's [in, out]
      codes = codes.T
    scale = pick(leaf.scale)[None, :]
    zero = np.full(scale.shape, 128, np.int64)
    bits, group_size, sym = 8, -1, True
  else:
    raise TypeError(f"not a quantized weight kind: {type(leaf).__name__}")
  n_in, n_out = codes.shape
  g = n_in if group_size == -1 else group_size
  stored = (zero - 1).astype(np.uint32)  # the v1 offset; 16 - 1 fits in a nibble, 0 - 1 does not
  tensors = {"qweight": pack_rows(codes, bits), "qzeros": pack_cols(stored, bits),
             "scales": scale.astype(np.float16),
             "g_idx": (np.arange(n_in) // g).astype(np.int32)}
  return tensors, bits, group_size, sym


def _write(leaf: Any, layer: int | None, hf_name: str, transpose: bool) -> dict[str, np.ndarray]:
  """`hf.register_kind_writer` hook: `<module>.qweight`, `.qzeros`, `.scales`, `.g_idx`."""
  if not transpose or not hf_name.endswith(".weight"):
    raise errors.ConfigError(f"{hf_name}: only linear kernels can be stored quantized")
  n_in, n_out = leaf.shape[-2:]
  _check_shape(hf_name, n_in, n_out, 4 if isinstance(leaf, int4.Int4Weight) else 8)
  prefix = hf_name[:-len("weight")]
  tensors, *_ = gptq_tensors(leaf, layer)
  return {prefix + k: v for k, v in tensors.items()}


hf.register_kind_writer(int4.Int4Weight, _write)
hf.register_kind_writer(int8.Int8Weight, _write)


def dequantize_gptq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray,
                    g_idx: np.ndarray, bits: int) -> np.ndarray:
  """`W [in, out]` float32 from GPTQ v1 tensors (the formula of the module doc)."""
  codes = unpack_rows(qweight, bits).astype(np.float32)
  zeros = unpack_cols(qzeros, bits).astype(np.float32) + 1
  return (scales.astype(np.float32)[g_idx] * (codes - zeros[g_idx])).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Quantization for export.


def to_fp16_scales(params: Any) -> Any:
  """Quantized kinds with their scales rounded to float16 (what the file stores), clamped to
  float16's range (a scale that would round to 0 or inf becomes the nearest finite nonzero)."""
  tiny, big = float(np.finfo(np.float16).smallest_subnormal), float(np.finfo(np.float16).max)

  def one(x):
    if isinstance(x, (int4.Int4Weight, int8.Int8Weight)):
      s = jnp.clip(x.scale, tiny, big).astype(jnp.float16).astype(jnp.float32)
      return x.replace(scale=s)
    return x
  return jax.tree.map(one, params, is_leaf=quant_lib.is_quantized)


def fit_v1_zeros(qparams: Any, params: Any) -> tuple[Any, int]:
  """Re-quantizes, from the float `params`, the int4 groups of `qparams` whose zero point is 0
  (not storable in the v1 layout) on the grid `scale = max / 14`, zero point 1.

  Returns:
    `(qparams, number of groups changed)`.
  """
  changed = 0

  def one(q, w):
    nonlocal changed
    if not isinstance(q, int4.Int4Weight) or not bool(jnp.any(q.zero == 0)):
      return q
    w = jnp.asarray(w, jnp.float32)
    n_in = w.shape[-2]
    codes = int4.unpack(q.packed).astype(jnp.float32)
    bad = q.zero == 0                                                   # [..., G, out]
    changed += int(jnp.sum(bad))
    g = q.group_size
    _, hi = _group_min_max(w, g)
    new_scale = jnp.where(hi > 0, hi / (int4.MAXQ - 1), 1.0)
    scale = jnp.where(bad, new_scale, q.scale)
    zero = jnp.where(bad, 1, q.zero.astype(jnp.float32))
    rows = int4.expand_groups(bad, g, n_in)
    new_codes = int4.quantize_codes(w, int4.expand_groups(scale, g, n_in),
                                    int4.expand_groups(zero, g, n_in))
    return int4.from_codes(jnp.where(rows, new_codes, codes), scale, zero, g, q.dtype)
  out = jax.tree.map(one, qparams, params, is_leaf=quant_lib.is_quantized)
  return out, changed


def _group_min_max(w: jax.Array, group_size: int) -> tuple[jax.Array, jax.Array]:
  """Per-group min and max `[..., G, out]` of `w [..., in, out]` (a short last group is fine)."""
  n_in = w.shape[-2]
  g = int4.num_groups(n_in, group_size)
  pad = g * group_size - n_in
  if pad:
    w = jnp.concatenate([w, jnp.repeat(w[..., -1:, :], pad, axis=-2)], axis=-2)
  w = w.reshape(*w.shape[:-2], g, group_size, w.shape[-1])
  return jnp.min(w, axis=-2), jnp.max(w, axis=-2)


def check_options(method: str, bits: int = 4, group_size: int = 128) -> None:
  """Refuses bit widths and group sizes the layout cannot hold (before the model is read)."""
  if method not in quant_lib.METHODS:
    raise errors.ConfigError(f"quant_method {method!r} is not supported "
                             f"(supported: {', '.join(quant_lib.METHODS)})")
  if bits not in BITS:
    raise errors.ConfigError(f"quant_bits must be 4 or 8 for a GPTQ export, got {bits}")
  if bits == 4 and group_size < 1:
    raise errors.ConfigError(f"quant_group_size must be >= 1, got {group_size}")


def read_texts(path: str | pathlib.Path) -> list[str]:
  """Calibration texts from a `.json` list or `.jsonl` file of records: `text`, or the
  alpaca fields `instruction`/`input`/`output` joined, or every string value joined."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.ConfigError(f"calibration dataset {path} does not exist")
  raw = path.read_text(encoding="utf-8")
  try:
    if path.suffix == ".jsonl":
      records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    else:
      records = json.loads(raw)
  except json.JSONDecodeError as e:
    raise errors.ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
  if not isinstance(records, list):
    raise errors.ConfigError(f"{path}: expected a list of records")
  texts = []
  for r in records:
    if isinstance(r, str):
      texts.append(r)
    elif isinstance(r, dict):
      if isinstance(r.get("text"), str):
        texts.append(r["text"])
        continue
      keys = [k for k in ("instruction", "input", "output") if isinstance(r.get(k), str)]
      keys = keys or [k for k, v in r.items() if isinstance(v, str)]
      texts.append("\n".join(r[k] for k in keys if r[k]))
  texts = [t for t in texts if t.strip()]
  if not texts:
    raise errors.ConfigError(f"{path}: no text found in its records")
  return texts


def _target_shapes(cfg: ModelConfig, bits: int) -> None:
  table = decoder.hf_tensor_names(cfg)
  shapes = decoder.param_shapes(cfg)
  for name, (path, _, transpose) in table.items():
    if path[0] == "layers" and path[-1] == "kernel" and transpose:
      leaf = shapes
      for k in path:
        leaf = leaf[k]
      _check_shape(name, *leaf.shape[-2:], bits)


def quantization_config(bits: int, group_size: int) -> dict[str, Any]:
  """The `config.json` `quantization_config` of a GPTQ v1 export (contiguous groups, float
  LM head)."""
  return {"quant_method": "gptq", "bits": bits, "group_size": group_size if bits == 4 else -1,
          "desc_act": False, "sym": bits == 8, "lm_head": False,
          "checkpoint_format": CHECKPOINT_FORMAT}


def quantize_for_export(cfg: ModelConfig, params: Any, tokenizer: Any = None, *,
                        method: str = "rtn", bits: int = 4, group_size: int = 128,
                        calibration_texts: Sequence[str] | None = None,
                        calibration_samples: int = 16, calibration_seq_len: int = 256
                        ) -> tuple[Any, dict[str, Any]]:
  """Quantizes the layer kernels as `swiftjax.quantize.quantize_model` does, then makes the
  result storable exactly in the GPTQ v1 layout (float16 scales, int4 zero points >= 1).

  Args:
    cfg, params: the float model.
    tokenizer: encodes the calibration texts (GPTQ only).
    method: `rtn` or `gptq`.
    bits: 4 (asymmetric, groups of `group_size` input rows) or 8 (symmetric, per channel).
    calibration_texts: GPTQ's calibration corpus (see `read_texts`).
    calibration_samples, calibration_seq_len: rows x tokens cut from it.

  Returns:
    `(params with Int4Weight/Int8Weight kernels, quantization_config)`.

  Raises:
    ConfigError: bad options, GPTQ without texts or tokenizer, or a kernel whose sizes the
      layout cannot hold.
  """
  check_options(method, bits, group_size)
  _target_shapes(cfg, bits)
  calibration = None
  if method == "gptq":
    if not calibration_texts:
      raise errors.ConfigError("quant_method gptq needs calibration texts "
                               "(--calibration_dataset)")
    if tokenizer is None:
      raise errors.ConfigError("quant_method gptq needs the model's tokenizer to encode the "
                               "calibration texts, and the model has none")
    calibration = quant_lib.calibration_tokens(tokenizer, calibration_texts,
                                               num_samples=calibration_samples,
                                               seq_len=calibration_seq_len)
  qparams = quant_lib.quantize_model(params, cfg, method, bits, group_size, calibration)
  if bits == 4:
    qparams, _ = fit_v1_zeros(qparams, params)
  qparams = to_fp16_scales(qparams)
  return qparams, quantization_config(bits, group_size)


def _method(name: str):
  def fn(cfg: ModelConfig, params: Any, tokenizer: Any, **options) -> tuple[Any, dict]:
    return quantize_for_export(cfg, params, tokenizer, method=name, **options)
  fn.__name__ = f"quantize_{name}"
  return fn


QUANT_METHODS = {name: _method(name) for name in quant_lib.METHODS}


# ---------------------------------------------------------------------------------------------
# Reading a GPTQ directory.


def read_gptq(directory: str | pathlib.Path) -> tuple[ModelConfig, Any]:
  """Reads a GPTQ v1 Hugging Face directory into `(cfg, params)` with `Int4Weight` (4 bits) or
  `Int8Weight` (8 bits, symmetric per channel) kernels and float32 everything else.

  Raises:
    CheckpointError: not a GPTQ directory, a layout we cannot hold (act-order `g_idx`, other
      bit widths, grouped or asymmetric 8 bits), missing tensors.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  cfg = safetensors_loader.read_config(directory)
  config_path = directory / "config.json"
  qc = json.loads(config_path.read_text()).get("quantization_config") or {}
  if qc.get("quant_method") != "gptq":
    raise errors.CheckpointError(f"{config_path}: quantization_config.quant_method is "
                                 f"{qc.get('quant_method')!r}, not 'gptq'")
  if qc.get("checkpoint_format", "gptq") != "gptq":
    raise errors.CheckpointError(f"{config_path}: checkpoint_format "
                                 f"{qc.get('checkpoint_format')!r} is not supported (only 'gptq')")
  bits = int(qc.get("bits", 0))
  if bits not in BITS:
    raise errors.CheckpointError(f"{config_path}: bits {bits} is not supported (4 or 8)")
  group_size = int(qc.get("group_size", -1))
  files = safetensors_loader.tensor_files(directory)
  handles: dict[pathlib.Path, Any] = {}

  def get(name: str) -> np.ndarray:
    f = files[name]
    if f not in handles:
      handles[f] = safe_open(str(f), framework="numpy")
    return np.asarray(handles[f].get_tensor(name))

  by_path: dict[tuple[str, ...], list] = {}
  for name, (path, layer, transpose) in decoder.hf_tensor_names(cfg).items():
    by_path.setdefault(path, []).append((name, layer, transpose))
  flat = {}
  for path, entries in by_path.items():
    parts = []
    for name, layer, transpose in entries:
      prefix = name[:-len("weight")] if name.endswith(".weight") else None
      if name in files:
        w = get(name).astype(np.float32)
        parts.append(w.T if transpose else w)
      elif prefix and prefix + "qweight" in files:
        missing = [prefix + s for s in _SUFFIXES if prefix + s not in files]
        if missing:
          raise errors.CheckpointError(f"{directory}: checkpoint lacks tensor {missing[0]!r}")
        parts.append(_to_kind({s: get(prefix + s) for s in _SUFFIXES}, bits, group_size,
                              f"{directory}: {prefix}"))
      else:
        raise errors.CheckpointError(f"{directory}: checkpoint lacks tensor {name!r}")
    kinds = {type(p) for p in parts}
    if len(kinds) > 1:
      raise errors.CheckpointError(f"{directory}: {'/'.join(path)} is quantized in some layers "
                                   "and not in others")
    if entries[0][1] is None:
      flat[path] = jax.tree.map(jnp.asarray, parts[0])
    elif isinstance(parts[0], np.ndarray):
      flat[path] = jnp.asarray(np.stack(parts))
    else:
      flat[path] = jax.tree.map(lambda *xs: jnp.stack(xs), *parts)
  handles.clear()
  return cfg, decoder.nest(flat)


def _to_kind(t: dict[str, np.ndarray], bits: int, group_size: int, where: str) -> Any:
  """One linear's GPTQ tensors -> `Int4Weight` / `Int8Weight` (numpy leaves)."""
  codes = unpack_rows(t["qweight"], bits)                    # [in, out]
  zeros = unpack_cols(t["qzeros"], bits).astype(np.int64) + 1  # [G, out]
  scales = t["scales"].astype(np.float32)
  n_in, n_out = codes.shape
  g = n_in if group_size == -1 else group_size
  if not np.array_equal(t["g_idx"], np.arange(n_in) // g):
    raise errors.CheckpointError(f"{where}g_idx is not row // {g} (act-order checkpoints "
                                 "cannot be read as contiguous groups)")
  n_groups = int4.num_groups(n_in, g)
  if scales.shape != (n_groups, n_out) or zeros.shape != (n_groups, n_out):
    raise errors.CheckpointError(f"{where}scales {scales.shape} / qzeros {zeros.shape} do not fit "
                                 f"{n_groups} groups of {n_out} outputs")
  if bits == 4:
    return int4.Int4Weight(np.asarray(int4.pack(codes)), scales, zeros.astype(np.uint8), g,
                           jnp.float32)
  if n_groups != 1 or np.any(zeros != 128):
    raise errors.CheckpointError(f"{where}8-bit weights must be symmetric with one group "
                                 "(zero point 128) to load as Int8Weight")
  return int8.Int8Weight((codes.astype(np.int64) - 128).astype(np.int8), scales[0], jnp.float32)
