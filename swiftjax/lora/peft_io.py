"""Read and write LoRA-family adapters in PEFT's format.

A PEFT adapter directory holds `adapter_config.json` and `adapter_model.safetensors`, with
tensors named after the PyTorch module tree:
  base_model.model.<module>.lora_A.weight        [r, in]
  base_model.model.<module>.lora_B.weight        [out, r]
  base_model.model.<module>.lora_magnitude_vector [out]      (DoRA)
where <module> is e.g. `model.layers.3.self_attn.q_proj`. Ours are `[in, r]`, `[r, out]`,
stacked over layers, so saving transposes and unstacks, and loading does the reverse.
"""

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import numpy as np

from swiftjax import errors
from swiftjax.lora import ia3
from swiftjax.lora import lora
from swiftjax.lora import paths
from swiftjax.lora import prompt_tuning
from swiftjax.lora import vera
from swiftjax.models import decoder
from swiftjax.models.config import ModelConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def _module_table(model_cfg: ModelConfig) -> dict[tuple[str, int | None], str]:
  """(our module path, layer or None) -> Hugging Face module name."""
  table = {}
  for hf_name, (path, layer, _) in decoder.hf_tensor_names(model_cfg).items():
    if path[-1] == "kernel":
      table[("/".join(path[:-1]), layer)] = hf_name.rsplit(".", 1)[0]
  return table


def _as_plain_lora(adapters: Any, initial: Any, cfg: lora.LoraConfig) -> tuple[Any, Any]:
  """PiSSA/OLoRA adapters relative to the *original* base, as PEFT converts them on save:
  s(B A - B0 A0) is a plain LoRA of rank 2r with A' = [A, A0], B' = [B; -B0]."""
  out = {}
  for module in lora.adapter_paths(adapters):
    a, a0 = paths.get(adapters, module), paths.get(initial, module)
    paths.set_in(out, module, {
        "lora_a": np.concatenate([np.asarray(a["lora_a"]), np.asarray(a0["lora_a"])], -1),
        "lora_b": np.concatenate([np.asarray(a["lora_b"]), -np.asarray(a0["lora_b"])], -2)})
  return out, lora.LoraConfig(r=2 * cfg.r, alpha=2 * cfg.alpha if not cfg.use_rslora
                              else cfg.alpha * 2 ** 0.5, dropout=cfg.dropout,
                              target_modules=cfg.target_modules, use_rslora=cfg.use_rslora)


def save(directory: str | pathlib.Path, adapters: Any, cfg: lora.LoraConfig,
         model_cfg: ModelConfig, *, base_model_name_or_path: str | None = None,
         initial_adapters: Any = None) -> None:
  """Writes a PEFT adapter directory that `peft.PeftModel.from_pretrained` loads.

  Args:
    directory: created (or replaced) atomically: written to a temporary folder first.
    adapters: from `lora.init` (and training).
    cfg: the LoRA config.
    model_cfg: the model's config (for module names).
    base_model_name_or_path: recorded in `adapter_config.json`.
    initial_adapters: for PiSSA/OLoRA, the adapters as `init` returned them; the saved adapter
      is then a rank-2r LoRA relative to the original base model (PEFT's conversion).
  """
  if cfg.init_lora_weights in ("pissa", "olora"):
    if initial_adapters is None:
      raise errors.ConfigError(
          f"{cfg.init_lora_weights} adapters belong to a residualised base; pass "
          "initial_adapters= (as init returned them) to save them against the original model")
    if cfg.use_dora:
      raise errors.ConfigError(f"saving {cfg.init_lora_weights} with DoRA is not supported")
    adapters, cfg = _as_plain_lora(adapters, initial_adapters, cfg)
  table = _module_table(model_cfg)
  tensors: dict[str, np.ndarray] = {}
  names = set()
  for module in lora.adapter_paths(adapters):
    a = jax.tree.map(np.asarray, paths.get(adapters, module))
    stacked = a["lora_a"].ndim == 3
    layers = range(a["lora_a"].shape[0]) if stacked else [None]
    for layer in layers:
      hf = table.get((module, layer))
      if hf is None:
        raise errors.ConfigError(f"module {module} has no Hugging Face name in a "
                                 f"{model_cfg.model_type} model")
      names.add(hf.rsplit(".", 1)[-1])
      pick = (lambda x, layer=layer: x[layer]) if stacked else (lambda x: x)
      tensors[f"{_PREFIX}{hf}.lora_A.weight"] = np.ascontiguousarray(pick(a["lora_a"]).T)
      tensors[f"{_PREFIX}{hf}.lora_B.weight"] = np.ascontiguousarray(pick(a["lora_b"]).T)
      if "magnitude" in a:
        tensors[f"{_PREFIX}{hf}.lora_magnitude_vector"] = np.ascontiguousarray(
            pick(a["magnitude"]))
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.r, "lora_alpha": cfg.alpha,
      "lora_dropout": cfg.dropout, "target_modules": sorted(names), "use_rslora": cfg.use_rslora,
      "use_dora": cfg.use_dora, "bias": "none", "fan_in_fan_out": False,
      "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
      "base_model_name_or_path": base_model_name_or_path, "rank_pattern": {},
      "alpha_pattern": {}, "layers_to_transform": None,
  }
  _write(directory, config, tensors)


def save_ia3(directory: str | pathlib.Path, adapters: Any, cfg: ia3.IA3Config,
             model_cfg: ModelConfig, *, base_model_name_or_path: str | None = None) -> None:
  """Writes IA3 adapters as a PEFT directory (`ia3_l` is `[out, 1]`, or `[1, in]` for
  feed-forward modules)."""
  table = _module_table(model_cfg)
  tensors = {}
  names = set()
  for module in sorted({p.rsplit("/", 1)[0] for p in paths.flatten(adapters)}):
    vec = np.asarray(paths.get(adapters, module)["ia3_l"])
    ff = module.rsplit("/", 1)[-1] in cfg.feedforward_modules
    for layer in (range(vec.shape[0]) if vec.ndim == 2 else [None]):
      v = vec[layer] if layer is not None else vec
      hf = table[(module, layer)]
      names.add(hf.rsplit(".", 1)[-1])
      tensors[f"{_PREFIX}{hf}.ia3_l"] = v[None, :] if ff else v[:, None]
  config = {"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": sorted(names),
            "feedforward_modules": sorted(set(cfg.feedforward_modules) & names),
            "fan_in_fan_out": False, "init_ia3_weights": True, "inference_mode": True,
            "modules_to_save": None, "base_model_name_or_path": base_model_name_or_path}
  _write(directory, config, tensors)


def _write(directory: str | pathlib.Path, config: dict, tensors: dict) -> None:
  """Writes config + tensors into a temporary folder, then renames it into place."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  try:
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
              str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    if directory.exists():
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _read(directory: pathlib.Path, peft_type: str | None = None
          ) -> tuple[dict, dict, pathlib.Path]:
  """`(config, tensors, weights path)` of a PEFT directory, checking `peft_type` if given."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
  for f in (config_path, weights_path):
    if not f.is_file():
      raise errors.CheckpointError(f"{directory} is not a PEFT adapter directory: {f.name} "
                                   "is missing")
  try:
    c = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise errors.CheckpointError(f"{config_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
  if peft_type is not None and c.get("peft_type") != peft_type:
    raise errors.ConfigError(f"{config_path}: peft_type {c.get('peft_type')!r}, expected "
                             f"{peft_type}")
  try:
    tensors = load_file(str(weights_path))
  except Exception as e:  # safetensors raises its own error types on damaged files.
    raise errors.CheckpointError(f"{weights_path}: not a readable safetensors file: {e}") from None
  return c, tensors, weights_path


def _locate(name: str, suffixes, inverse, model_cfg, weights_path):
  """(module path, layer, field) of a PEFT tensor name."""
  stem = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
  for suffix, field in suffixes:
    if stem.endswith(suffix):
      hf_module = stem[: -len(suffix)]
      break
  else:
    raise errors.CheckpointError(f"{weights_path}: tensor {name!r} is not an adapter tensor "
                                 "this loader knows")
  if hf_module not in inverse:
    raise errors.CheckpointError(
        f"{weights_path}: tensor {name!r} targets module {hf_module!r}, which a "
        f"{model_cfg.model_type} model with {model_cfg.num_layers} layers does not have "
        "(adapter saved for another architecture?)")
  return (*inverse[hf_module], field)


def _stack(per_module, model_cfg, weights_path) -> dict:
  """{module: {layer: {field: array}}} -> {module: {field: stacked array}}."""
  out = {}
  for module, by_layer in per_module.items():
    if None in by_layer:
      out[module] = by_layer[None]
      continue
    missing = sorted(set(range(model_cfg.num_layers)) - set(by_layer))
    if missing:
      raise errors.CheckpointError(f"{weights_path}: {module} has adapters for some layers "
                                   f"but not layers {missing} (layers_to_transform is not "
                                   "supported)")
    out[module] = {f: np.stack([by_layer[i][f] for i in range(model_cfg.num_layers)])
                   for f in by_layer[0]}
  return out


def load_ia3(directory: str | pathlib.Path, model_cfg: ModelConfig,
             params: Any = None) -> tuple[ia3.IA3Config, Any]:
  """Reads a PEFT IA3 adapter directory into `(IA3Config, adapters)`."""
  directory = pathlib.Path(directory)
  c, tensors, weights_path = _read(directory, "IA3")
  inverse = {hf: key for key, hf in _module_table(model_cfg).items()}
  per_module: dict = {}
  for name, value in tensors.items():
    module, layer, field = _locate(name, ((".ia3_l", "ia3_l"),), inverse, model_cfg,
                                   weights_path)
    per_module.setdefault(module, {}).setdefault(layer, {})[field] = value.reshape(-1)
  ff = tuple(c.get("feedforward_modules") or ())
  adapters: dict = {}
  for module, entry in _stack(per_module, model_cfg, weights_path).items():
    if params is not None:
      *lead, d_in, d_out = paths.get(params, module + "/kernel").shape
      want = (*lead, d_in if module.rsplit("/", 1)[-1] in ff else d_out)
      if tuple(entry["ia3_l"].shape) != want:
        raise errors.CheckpointError(f"{weights_path}: {module} ia3_l has shape "
                                     f"{tuple(entry['ia3_l'].shape)}, expected {want}")
    paths.set_in(adapters, module, {"ia3_l": jax.numpy.asarray(entry["ia3_l"], "float32")})
  names = tuple(sorted({m.rsplit("/", 1)[-1] for m in per_module}))
  return ia3.IA3Config(target_modules=names, feedforward_modules=ff), adapters


def load(directory: str | pathlib.Path, model_cfg: ModelConfig,
         params: Any = None) -> tuple[lora.LoraConfig, Any]:
  """Reads a PEFT LoRA/rsLoRA/DoRA adapter directory into `(LoraConfig, adapters)`.

  Args:
    directory: holds `adapter_config.json` and `adapter_model.safetensors`.
    model_cfg: config of the model the adapters will be applied to.
    params: if given, adapter shapes are checked against these base kernels.

  Raises:
    CheckpointError: missing files, a tensor for a module this model does not have (an adapter
      saved for another architecture), missing layers, or a shape mismatch.
    ConfigError: a PEFT type or option this loader does not handle.
  """
  directory = pathlib.Path(directory)
  c, tensors, weights_path = _read(directory)
  config_path = directory / CONFIG_FILE
  if c.get("peft_type") != "LORA":
    raise errors.ConfigError(f"{config_path}: peft_type {c.get('peft_type')!r} is not "
                             "supported by this loader (supported: LORA; IA3 via load_ia3)")
  for key in ("rank_pattern", "alpha_pattern"):
    if c.get(key):
      raise errors.ConfigError(f"{config_path}: per-module {key} is not supported")
  inverse = {hf: key for key, hf in _module_table(model_cfg).items()}
  suffixes = ((".lora_A.weight", "lora_a"), (".lora_B.weight", "lora_b"),
              (".lora_magnitude_vector", "magnitude"),
              (".lora_magnitude_vector.weight", "magnitude"))
  per_module: dict = {}
  for name, value in tensors.items():
    module, layer, field = _locate(name, suffixes, inverse, model_cfg, weights_path)
    per_module.setdefault(module, {}).setdefault(layer, {})[field] = (
        value if field == "magnitude" else value.T)

  adapters: dict = {}
  for module, entry in _stack(per_module, model_cfg, weights_path).items():
    if params is not None:
      kernel = paths.get(params, module + "/kernel")
      *lead, d_in, d_out = kernel.shape
      r = entry["lora_a"].shape[-1]
      for field, want in (("lora_a", (*lead, d_in, r)), ("lora_b", (*lead, r, d_out)),
                          ("magnitude", (*lead, d_out))):
        if field in entry and tuple(entry[field].shape) != tuple(want):
          raise errors.CheckpointError(
              f"{weights_path}: {module} {field} has shape {tuple(entry[field].shape)}, "
              f"expected {tuple(want)}")
    paths.set_in(adapters, module, {k: jax.numpy.asarray(v, jax.numpy.float32)
                                    for k, v in entry.items()})
  names = tuple(sorted({m.rsplit("/", 1)[-1] for m in per_module}))
  cfg = lora.LoraConfig(r=int(c["r"]), alpha=float(c.get("lora_alpha", 8)),
                        dropout=float(c.get("lora_dropout", 0.0)), target_modules=names,
                        use_rslora=bool(c.get("use_rslora", False)),
                        use_dora=bool(c.get("use_dora", False)))
  return cfg, adapters


def save_prompt_tuning(directory: str | pathlib.Path, adapters: Any,
                       cfg: prompt_tuning.PromptTuningConfig, model_cfg: ModelConfig, *,
                       base_model_name_or_path: str | None = None) -> None:
  """Writes a soft prompt as a PEFT PROMPT_TUNING directory."""
  soft = np.asarray(adapters["prompt_embeddings"])
  config = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM",
            "num_virtual_tokens": int(soft.shape[0]), "token_dim": model_cfg.hidden_size,
            "num_transformer_submodules": 1, "num_attention_heads": model_cfg.num_heads,
            "num_layers": model_cfg.num_layers, "prompt_tuning_init": "RANDOM",
            "inference_mode": True, "base_model_name_or_path": base_model_name_or_path}
  del cfg
  _write(directory, config, {"prompt_embeddings": soft})


def load_prompt_tuning(directory: str | pathlib.Path, model_cfg: ModelConfig
                       ) -> tuple[prompt_tuning.PromptTuningConfig, Any]:
  """Reads a PEFT PROMPT_TUNING directory into `(PromptTuningConfig, adapters)`."""
  directory = pathlib.Path(directory)
  c, tensors, weights_path = _read(directory, "PROMPT_TUNING")
  if "prompt_embeddings" not in tensors:
    raise errors.CheckpointError(f"{weights_path} lacks tensor 'prompt_embeddings'")
  soft = tensors["prompt_embeddings"]
  if soft.ndim != 2 or soft.shape[1] != model_cfg.hidden_size:
    raise errors.CheckpointError(f"{weights_path}: prompt_embeddings has shape {soft.shape}, "
                                 f"expected (n, {model_cfg.hidden_size})")
  return (prompt_tuning.PromptTuningConfig(num_virtual_tokens=int(soft.shape[0])),
          {"prompt_embeddings": jax.numpy.asarray(soft, jax.numpy.float32)})


def save_vera(directory: str | pathlib.Path, adapters: Any, cfg: vera.VeraConfig,
              model_cfg: ModelConfig, *, base_model_name_or_path: str | None = None) -> None:
  """Writes VeRA adapters (with the shared projections) as a PEFT VERA directory."""
  table = _module_table(model_cfg)
  tensors = {"base_model.vera_A": np.asarray(adapters["vera_A"]).T,
             "base_model.vera_B": np.asarray(adapters["vera_B"]).T}
  names = set()
  for module in vera._modules(adapters):  # pylint: disable=protected-access
    vec = jax.tree.map(np.asarray, paths.get(adapters, module))
    stacked = vec["lambda_b"].ndim == 2
    for layer in (range(vec["lambda_b"].shape[0]) if stacked else [None]):
      hf = table[(module, layer)]
      names.add(hf.rsplit(".", 1)[-1])
      for field in ("lambda_d", "lambda_b"):
        tensors[f"{_PREFIX}{hf}.vera_{field}"] = vec[field][layer] if stacked else vec[field]
  config = {"peft_type": "VERA", "task_type": "CAUSAL_LM", "r": cfg.r,
            "target_modules": sorted(names), "d_initial": cfg.d_initial,
            "save_projection": True, "projection_prng_key": 0, "vera_dropout": 0.0,
            "fan_in_fan_out": False, "bias": "none", "inference_mode": True,
            "modules_to_save": None, "base_model_name_or_path": base_model_name_or_path}
  _write(directory, config, tensors)


def load_vera(directory: str | pathlib.Path, model_cfg: ModelConfig
              ) -> tuple[vera.VeraConfig, Any]:
  """Reads a PEFT VERA directory saved with its projections (`save_projection=True`)."""
  directory = pathlib.Path(directory)
  c, tensors, weights_path = _read(directory, "VERA")
  missing = [k for k in ("base_model.vera_A", "base_model.vera_B") if k not in tensors]
  if missing:
    raise errors.CheckpointError(f"{weights_path} lacks {missing}: the adapter was saved with "
                                 "save_projection=False, whose projections come from PyTorch's "
                                 "RNG and cannot be rebuilt here")
  inverse = {hf: key for key, hf in _module_table(model_cfg).items()}
  per_module: dict = {}
  for name, value in tensors.items():
    if name in ("base_model.vera_A", "base_model.vera_B"):
      continue
    module, layer, field = _locate(
        name, ((".vera_lambda_d", "lambda_d"), (".vera_lambda_b", "lambda_b")), inverse,
        model_cfg, weights_path)
    per_module.setdefault(module, {}).setdefault(layer, {})[field] = value
  adapters: dict = {"vera_A": jax.numpy.asarray(tensors["base_model.vera_A"].T),
                    "vera_B": jax.numpy.asarray(tensors["base_model.vera_B"].T)}
  for module, entry in _stack(per_module, model_cfg, weights_path).items():
    paths.set_in(adapters, module, {k: jax.numpy.asarray(v, jax.numpy.float32)
                                    for k, v in entry.items()})
  names = tuple(sorted({m.rsplit("/", 1)[-1] for m in per_module}))
  return vera.VeraConfig(r=int(c["r"]), target_modules=names,
                         d_initial=float(c.get("d_initial", 0.1))), adapters
