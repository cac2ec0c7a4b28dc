"""Adaptive dispatch of sampling work: host or device, by each batch's predicted sampled-graph size.

Quiver's observation: a small request does too little work to pay for the accelerator's fixed
costs (kernel launches, transfers, the device queue), while a large one is many times faster
there. The dispatcher measures both samplers on the running machine over a grid of request sizes,
keeps both cost curves (seconds as a function of the request's PSGS: `serving/psgs.py`), and routes
each batch to the one whose curve is lower at that batch's PSGS. On a CPU-only machine the two
backends are the numba host sampler and the jitted JAX sampler on the CPU device, which have the
same shape of trade-off (dispatch overhead vs throughput).

Cost curves are piecewise-linear in log-log space over the calibration grid (sampling time grows
sublinearly at small sizes, where fixed costs dominate, and linearly at large ones), extrapolated
flat in slope beyond the grid ends. The calibration is a small JSON file so a server can reuse it.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

import numpy as np

from graphs.errors import GraphError

HOST = "host"
DEVICE = "device"


@dataclasses.dataclass
class Calibration:
  """Measured cost curves of both samplers.

  Attributes:
    psgs: [G] increasing predicted sizes (sampled edges) of the calibration requests.
    host_s: [G] median seconds the host sampler took at each size.
    device_s: [G] median seconds the device sampler took at each size.
    crossover: the smallest PSGS from which the device curve stays below the host curve
      (inf if it never does, 0 if it always does).
    machine: free text naming where it was measured.
  """
  psgs: list[float]
  host_s: list[float]
  device_s: list[float]
  crossover: float
  machine: str = ""

  def save(self, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(dataclasses.asdict(self), f, indent=1)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "Calibration":
    try:
      with open(path) as f:
        d = json.load(f)
      return cls(**d)
    except (OSError, ValueError, TypeError) as e:
      raise GraphError(f"{path}: not a dispatcher calibration file: {e}") from None


def _interp_loglog(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
  """Piecewise-linear interpolation of log y over log x, linear extrapolation past the ends."""
  lx, ly = np.log(np.maximum(xs, 1e-9)), np.log(np.maximum(ys, 1e-12))
  q = np.log(max(x, 1e-9))
  if q <= lx[0]:
    i = 0
  elif q >= lx[-1]:
    i = len(lx) - 2
  else:
    i = int(np.searchsorted(lx, q) - 1)
  if len(lx) == 1:
    return float(ys[0])
  slope = (ly[i + 1] - ly[i]) / max(lx[i + 1] - lx[i], 1e-12)
  return float(np.exp(ly[i] + slope * (q - lx[i])))


def crossover(psgs: Sequence[float], host_s: Sequence[float], device_s: Sequence[float]) -> float:
  """Smallest grid PSGS from which the device is faster at every larger grid point."""
  psgs, host_s, device_s = map(np.asarray, (psgs, host_s, device_s))
  device_wins = device_s < host_s
  if not device_wins[-1]:
    return float("inf")
  i = len(psgs) - 1
  while i > 0 and device_wins[i - 1]:
    i -= 1
  if i == 0:
    return 0.0
  # Between the last host win and the first device win: where the log-log lines cross.
  x0, x1 = np.log(psgs[i - 1]), np.log(psgs[i])
  d0 = np.log(host_s[i - 1]) - np.log(device_s[i - 1])
  d1 = np.log(host_s[i]) - np.log(device_s[i])
  t = d0 / (d0 - d1) if d0 != d1 else 0.5
  return float(np.exp(x0 + t * (x1 - x0)))


class Dispatcher:
  """Routes a batch to `HOST` or `DEVICE` by its PSGS, from a `Calibration` (or a fixed policy).

  Args:
    calibration: measured cost curves; required for `policy="adaptive"`.
    policy: "adaptive", "host" (always host) or "device" (always device).
    min_gain: adaptive sends a batch to the device only when its curve predicts at least this
      fraction less time than the host's. Calibration medians carry noise, and near the
      crossover the two backends cost the same, so a small margin keeps coin-flip batches on
      the host, which has no queue shared with other work.
  """

  def __init__(self, calibration: Calibration | None = None, policy: str = "adaptive",
               min_gain: float = 0.1):
    if policy not in ("adaptive", HOST, DEVICE):
      raise GraphError(f"dispatch policy must be adaptive, host or device, got {policy!r}")
    if policy == "adaptive" and calibration is None:
      raise GraphError("adaptive dispatch needs a calibration (Dispatcher.calibrate)")
    if not 0 <= min_gain < 1:
      raise GraphError(f"min_gain must be in [0, 1), got {min_gain}")
    self.calibration = calibration
    self.policy = policy
    self.min_gain = float(min_gain)
    self.counts = {HOST: 0, DEVICE: 0}

  def predicted_seconds(self, psgs: float) -> tuple[float, float]:
    """(host, device) predicted sampling seconds for a batch of this PSGS."""
    c = self.calibration
    xs = np.asarray(c.psgs, float)
    return (_interp_loglog(psgs, xs, np.asarray(c.host_s, float)),
            _interp_loglog(psgs, xs, np.asarray(c.device_s, float)))

  def route(self, psgs: float) -> str:
    """`HOST` or `DEVICE` for a batch whose predicted sampled-graph size is `psgs`."""
    if self.policy != "adaptive":
      choice = self.policy
    elif psgs < self.calibration.crossover:
      choice = HOST
    else:
      host_s, device_s = self.predicted_seconds(psgs)
      choice = DEVICE if device_s < (1.0 - self.min_gain) * host_s else HOST
    self.counts[choice] += 1
    return choice

  @staticmethod
  def calibrate(host_fn: Callable[[np.ndarray], object], device_fn: Callable[[np.ndarray], object],
                node_psgs: np.ndarray, batch_sizes: Sequence[int] = (1, 4, 16, 64, 256, 1024),
                repeats: int = 5, seed: int = 0, machine: str = "") -> Calibration:
    """Times both samplers on random seed batches of each size; returns the cost curves.

    Args:
      host_fn, device_fn: `fn(seeds [B] int32)` that samples and blocks until done.
      node_psgs: [N] per-node PSGS (`psgs.node_psgs`), to place each batch on the PSGS axis.
      batch_sizes: the grid (request sizes); each is warmed up once (compiles excluded).
      repeats: timed draws per size (the median is kept).
    """
    rng = np.random.default_rng(seed)
    n = node_psgs.shape[0]
    xs, hs, ds = [], [], []
    for b in batch_sizes:
      b = min(b, n)
      batches = [rng.choice(n, size=b, replace=False).astype(np.int32) for _ in range(repeats)]
      host_fn(batches[0])
      device_fn(batches[0])
      th, td = [], []
      for s in batches:
        t = time.perf_counter()
        host_fn(s)
        th.append(time.perf_counter() - t)
        t = time.perf_counter()
        device_fn(s)
        td.append(time.perf_counter() - t)
      xs.append(float(np.mean([node_psgs[s].sum() for s in batches])))
      hs.append(float(np.median(th)))
      ds.append(float(np.median(td)))
    order = np.argsort(xs)
    xs, hs, ds = (list(np.asarray(v)[order]) for v in (xs, hs, ds))
    return Calibration(psgs=xs, host_s=hs, device_s=ds, crossover=crossover(xs, hs, ds),
                       machine=machine)
