"""What every launcher shares: user errors become one line on stderr, not a traceback."""

import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from graphs.errors import GraphError
from swiftjax import errors


def define_mesh_flags() -> tuple[flags.FlagHolder, ...]:
  """`--mesh_data`, `--mesh_fsdp`, `--mesh_tensor`: the device mesh (-1: all remaining devices).

  With all three at their default (1, -1, 1) and one device, no mesh is used.
  """
  return (flags.DEFINE_integer("mesh_data", 1, "Data-parallel mesh axis size."),
          flags.DEFINE_integer("mesh_fsdp", -1, "FSDP mesh axis size (-1: the rest)."),
          flags.DEFINE_integer("mesh_tensor", 1, "Tensor-parallel mesh axis size."))


def define_unstack_flag(default: bool) -> flags.FlagHolder:
  """`--unstack_layers`: give each layer's weights buffers of their own for generation."""
  return flags.DEFINE_bool(
      "unstack_layers", default,
      "Run the layers unrolled over per-layer weight buffers (swiftjax.models.decoder."
      "unstack_layers) instead of scanning stacked ones: faster decode steps (SmolLM2 on 2 CPU "
      "cores: batch 1 1.5x), slower compiles (about 4 s instead of 1 s per shape), so it pays "
      "off for long generation or serving, not for one short answer.")


def mesh_from_flags(holders: tuple[flags.FlagHolder, ...]):
  """The mesh the flags ask for, or None for a single device with default flags."""
  import jax  # pylint: disable=g-import-not-at-top
  from swiftjax import sharding  # pylint: disable=g-import-not-at-top
  data, fsdp, tensor = (h.value for h in holders)
  if jax.device_count() == 1 and (data, fsdp, tensor) == (1, -1, 1):
    return None
  return sharding.make_mesh(data=data, fsdp=fsdp, tensor=tensor)


_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host jobs; the "
    "coordinator comes from --coordinator_address / --num_processes / --process_id, else from "
    "the cluster environment: SLURM, TPU pods, or JAX_COORDINATOR_ADDRESS with "
    "JAX_NUM_PROCESSES and JAX_PROCESS_ID).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "--distributed: host:port of process 0's coordinator "
    "(default: detected as jax detects it).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--distributed: how many processes the job has (default: detected).",
    lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--distributed: this process's index, 0 to --num_processes - 1 "
    "(default: detected).", lower_bound=0)


def _initialize_distributed() -> None:
  """`jax.distributed.initialize()` when --distributed is given, with the coordinator, process
  count and index from the flags, else the environment, else jax's cluster detection."""
  holders = ((_COORDINATOR, "coordinator_address"), (_NUM_PROCESSES, "num_processes"),
             (_PROCESS_ID, "process_id"))
  if not _DISTRIBUTED.value:
    given = [f"--{h.name}" for h, _ in holders if h.value is not None]
    if given:
      raise errors.ConfigError(f"{', '.join(given)}: only used with --distributed")
    return
  import jax  # pylint: disable=g-import-not-at-top
  # jax reads JAX_COORDINATOR_ADDRESS itself but not the process count and index (it detects
  # them only on SLURM, TPU pods, ...): pass those on when they are set.
  kwargs = {}
  for env, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    if os.environ.get(env):
      try:
        kwargs[arg] = int(os.environ[env])
      except ValueError:
        raise errors.SwiftJaxError(f"{env}={os.environ[env]!r} is not an integer") from None
  kwargs.update({arg: h.value for h, arg in holders if h.value is not None})
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    raise errors.SwiftJaxError(f"--distributed: cannot initialize: {e}") from None


_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`absl.app.run(main)`, printing `SwiftJaxError`s and `GraphError`s as `error: ...` and exiting
  with status 2."""

  def wrapped(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      print(f"error: unexpected positional arguments {argv[1:]}; flags are --name=value",
            file=sys.stderr)
      sys.exit(2)
    if not flags.FLAGS["verbosity"].present:
      # JAX logs its backend probing (no TPU here) at INFO; show warnings and errors unless the
      # user asks for more with --verbosity=0.
      logging.set_verbosity(logging.WARNING)
    try:
      _initialize_distributed()
      main(argv)
    except (errors.SwiftJaxError, GraphError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  try:
    app.run(wrapped)
  except SystemExit as e:
    # absl exits with status 1 after printing requested help; asking for help is not a failure.
    if e.code == 1 and any(a in _HELP_FLAGS for a in sys.argv[1:]):
      sys.exit(0)
    raise
