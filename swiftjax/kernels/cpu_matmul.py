"""Native CPU matmuls for decode-sized batches with bfloat16 or int8 weights (XLA FFI).

XLA:CPU computes `x @ widen(W)` for low-precision weights W by first writing a float32 copy of W
and then running a float32 dot on it, and its dot library (YNNPACK) takes no product with one
row. At batch 1 that makes a bf16 model barely faster than a float32 one (`packed_bf16`). The
kernels in `cpu_matmul.cc` read each weight once, widen it in registers and multiply it into
every row: y [M, N] = x [M, K] @ W for M <= MAX_ROWS, W stored output-major ([N, K], the
"transposed" layout that `packed_bf16.pack` uses on CPU) or input-major ([K, N]).

The shared library is compiled on first use with the system C++ compiler (`CXX`, else `c++`)
against the XLA FFI headers that ship with jaxlib, for this machine's instruction set, and
cached under `$SWIFTJAX_CACHE_DIR` (default `~/.cache/swiftjax`), keyed by the source, the
compiler flags, jaxlib's version and the CPU's feature flags. The kernels are used only where
they are faster than XLA's path (measured: AVX-512 machines, 1 to MAX_ROWS rows); on
any other machine, without a compiler, or with `SWIFTJAX_CPU_KERNELS=0`, `available()` is False
and callers keep the jnp path, which is also the reference the tests compare against.

The functions are differentiable in `x` and in int8's `scale` (the backward pass is the jnp
product with the transposed weights), not in the integer-stored weights.
"""

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

# Rows of x sent to the kernels (in groups, each group re-reading a chunk of weights from
# cache); more go to XLA's dots. SmolLM2-135M bf16 decode on a 2-core AVX-512 CPU, kernel vs
# XLA's dot on the same output-major bits: 4 rows 334 vs 200 tok/s, 8 rows 425 vs 320, 12 rows
# 465 vs 382, 16 rows 448 vs 450 (int8: see `swiftjax.int8`); prefill-length products (128
# rows) stay with XLA.
MAX_ROWS = 16
_SOURCE = pathlib.Path(__file__).with_name("cpu_matmul.cc")
# Products of at least this many multiply-adds (rows x weights) are split over XLA's intra-op
# threads; below it the wake-up of a pool thread costs more than it saves (measured at one row:
# 576 x 1536 bf16 matrices ran 10% slower split, the 49152 x 576 output head 1.5x faster).
_PARALLEL_WORK = 1 << 21
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
          f"-DPARALLEL_WORK={_PARALLEL_WORK}")
_TARGETS = {"bf16": "SwiftjaxBf16Matmul", "int8": "SwiftjaxInt8Matmul"}

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("flags"):
        return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("SWIFTJAX_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "swiftjax")
  return pathlib.Path(root) / "kernels"


def _build(compiler: str, cpu_flags: frozenset[str]) -> pathlib.Path:
  """Compiles the library unless the cache has it; returns its path (written atomically)."""
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), " ".join(_FLAGS).encode(),
               importlib.metadata.version("jaxlib").encode(),
               " ".join(sorted(cpu_flags)).encode(), platform.machine().encode()):
    key.update(part)
  out = _cache_dir() / f"cpu_matmul-{key.hexdigest()[:16]}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    cmd = [compiler, *_FLAGS, "-I", jax.ffi.include_dir(), str(_SOURCE), "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
      raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return out


_registered: set[str] = set()


@functools.lru_cache(maxsize=None)
def _load(compiler: str, cpu_flags: frozenset[str]) -> bool:
  """Builds (or finds) the library and registers its targets with XLA once per process."""
  try:
    lib = ctypes.cdll.LoadLibrary(str(_build(compiler, cpu_flags)))
    for name, symbol in _TARGETS.items():
      if name not in _registered:
        jax.ffi.register_ffi_target(f"swiftjax_{name}_matmul",
                                    jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _registered.add(name)
  except Exception as e:  # pylint: disable=broad-except
    log.warning("swiftjax CPU kernels unavailable (%s); using XLA's matmuls", e)
    return False
  return True


@functools.lru_cache(maxsize=None)
def _warn_no_compiler() -> None:  # once per process: `available` runs at every traced matmul
  log.warning("swiftjax CPU kernels: no C++ compiler found (set CXX); using XLA's matmuls")


@functools.lru_cache(maxsize=None)
def _compiler(cxx: str | None) -> str | None:
  return cxx or shutil.which("c++") or shutil.which("g++")


def available() -> bool:
  """Whether the kernels are built, registered with XLA and worth using on this machine."""
  if os.environ.get("SWIFTJAX_CPU_KERNELS", "1") == "0":
    return False
  flags = _cpu_flags()
  if "avx512f" not in flags:
    # The vector code compiles for AVX2 too, but measured there it lost to XLA's path.
    return False
  compiler = _compiler(os.environ.get("CXX"))
  if not compiler:
    _warn_no_compiler()
    return False
  return _load(compiler, flags)


def usable(rows: int) -> bool:
  """Whether a product with `rows` rows of activations should run on the kernels: they are
  available, the default backend is the CPU, and the rows fit. (Under a sharded program XLA's
  partitioner hands the kernel replicated operands: correct, tested, not fast.)"""
  return 1 <= rows <= MAX_ROWS and jax.default_backend() == "cpu" and available()


def _call(name: str, n: int, x, *weights, transposed: bool):
  out = jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32)
  return jax.ffi.ffi_call(f"swiftjax_{name}_matmul", out, vmap_method="sequential")(
      x, *weights, transposed=transposed)


def _int_zero_cotangent(a):
  return np.zeros(np.shape(a), jax.dtypes.float0)


def _matrix(w: jax.Array, layer: jax.Array) -> jax.Array:
  """The 2-D matrix `layer` picks from a stacked `[L, R, C]` weight (a 2-D one as it is)."""
  return jax.lax.dynamic_index_in_dim(w, layer, keepdims=False) if w.ndim == 3 else w


def _out_dim(w: jax.Array, transposed: bool) -> int:
  return w.shape[-2] if transposed else w.shape[-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def bf16_matmul(x: jax.Array, bits: jax.Array, layer: jax.Array, transposed: bool) -> jax.Array:
  """x [M, K] float32 @ W -> [M, N] float32.

  Args:
    x: [M, K] float32, 1 <= M <= MAX_ROWS.
    bits: bf16 bit patterns (uint16) of W: [N, K] if `transposed` else [K, N], or a stack of
      such matrices [L, ...] (layer-stacked weights, read in place: no slice is copied).
    layer: int32 scalar, the matrix of a stacked `bits` to use (ignored for 2-D `bits`).
    transposed: the layout of `bits`, as above.
  """
  return _call("bf16", _out_dim(bits, transposed), x, bits,
               jnp.asarray(layer, jnp.int32), transposed=transposed)


def _bf16_fwd(x, bits, layer, transposed):
  return bf16_matmul(x, bits, layer, transposed), (bits, layer)


def _bf16_bwd(transposed, res, g):
  bits, layer = res
  from swiftjax import packed_bf16  # pylint: disable=g-import-not-at-top  (it imports this module)
  w = packed_bf16.widen(_matrix(bits, layer))
  dx = g @ w if transposed else g @ w.T
  return dx, _int_zero_cotangent(bits), _int_zero_cotangent(layer)


bf16_matmul.defvjp(_bf16_fwd, _bf16_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def int8_matmul(x: jax.Array, q: jax.Array, scale: jax.Array, layer: jax.Array,
                transposed: bool) -> jax.Array:
  """x [M, K] float32 @ (q * scale) -> [M, N] float32: `q` int8 [N, K] if `transposed` else
  [K, N] (or stacked [L, ...] with `layer` picking one), `scale` [N] (or [L, N]) float32 per
  output column.

  `swiftjax.int8` uses it for output-major weights (`int8.output_major`); input-major, the
  kernel measured slower than XLA's padded dot (SmolLM2 int8 batch 1: 57.9 vs 64 tok/s).
  """
  return _call("int8", _out_dim(q, transposed), x, q, scale, jnp.asarray(layer, jnp.int32),
               transposed=transposed)


def _int8_fwd(x, q, scale, layer, transposed):
  return int8_matmul(x, q, scale, layer, transposed), (x, q, scale, layer)


def _int8_bwd(transposed, res, g):
  x, q, scale, layer = res
  wq = _matrix(q, layer).astype(jnp.float32)
  wq = wq.T if transposed else wq                                     # [K, N]
  s = jax.lax.dynamic_index_in_dim(scale, layer, keepdims=False) if scale.ndim == 2 else scale
  dx = (g * s) @ wq.T
  ds = jnp.sum(g * (x @ wq), axis=0)
  if scale.ndim == 2:
    ds = jnp.zeros_like(scale).at[layer].set(ds)
  return dx, _int_zero_cotangent(q), ds, _int_zero_cotangent(layer)


int8_matmul.defvjp(_int8_fwd, _int8_bwd)
