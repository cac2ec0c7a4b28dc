"""Timing helpers shared by the benchmarks."""

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
  """Best wall time in seconds of `repeats` calls of `fn`, after one warm-up (compile) call."""
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)
