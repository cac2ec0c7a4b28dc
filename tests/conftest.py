"""Test setup shared by every test file.

Sharding code runs on 8 fake CPU devices, so XLA_FLAGS must be set before JAX initialises.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No hub at test time: everything is read from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# absltest helpers (create_tempdir, ...) read absl flags; under pytest nobody parses them.
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
  """On a crash (SIGSEGV, ...) dump only the crashing thread's stack.

  pytest's handler dumps every thread, and CI keeps only the tail of the log: a crash in a test
  with many threads (the GNN server tests) hid the one stack that mattered. The crashing
  thread's stack names the test when it is the main thread, the stage when it is a worker.
  """
  import faulthandler  # pylint: disable=g-import-not-at-top
  try:
    from _pytest.faulthandler import fault_handler_stderr_fd_key  # pylint: disable=g-import-not-at-top
  except ImportError:  # another pytest: keep its handler
    return
  fd = config.stash.get(fault_handler_stderr_fd_key, None)
  if fd is not None and faulthandler.is_enabled():
    faulthandler.enable(file=fd, all_threads=False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
  """Drops jax's compiled executables after each test module.

  Every XLA:CPU executable keeps a few memory mappings of its code; jax caches them for the life of
  the process, so one process running the whole suite passed Linux's 65,530 mappings per process
  (`vm.max_map_count`) near its end and the next compile died with a segmentation fault when its
  mmap failed (CI, twice). Clearing the caches between modules keeps the count near one module's.
  """
  yield
  import gc  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.clear_caches()
  gc.collect()
