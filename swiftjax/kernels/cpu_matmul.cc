// Weight-only low-precision matmuls for XLA:CPU, exposed through the XLA FFI.
//
// y[M, N] = x[M, K] @ W, with W stored as bfloat16 bit patterns (uint16) or as int8 with one
// float32 scale per output column, and x, y float32. Built for decode steps (M of 1 to 16, in
// groups of rows): each weight is read from memory once per chunk, widened to float32 in
// registers and multiplied into the rows, so a step reads the weights' own bytes instead of a
// widened float32 copy (what XLA's fusion + dot does). Columns (or, for the transposed layout,
// output rows) are split into chunks that the calling thread and XLA's intra-op thread pool take
// from a shared counter.
//
// Layouts: "kn" W[K, N] (row k holds the weights of input k for every output column);
// "nk" W[N, K] (row n holds output n's weights; the tied output head reads the embedding so).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 16-lane vectors (GCC/Clang vector extensions: one AVX-512 register, or two AVX2 ones).
typedef float F16x __attribute__((vector_size(64)));
typedef uint32_t U16x __attribute__((vector_size(64)));
typedef uint16_t H16x __attribute__((vector_size(32)));
typedef int8_t B16x __attribute__((vector_size(16)));
typedef int32_t I16x __attribute__((vector_size(64)));

// 16 weights starting at p, widened to float32.
inline F16x Load16(const uint16_t* p) {
#if defined(__AVX512F__)
  return reinterpret_cast<F16x>(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
#else
  H16x h;
  std::memcpy(&h, p, sizeof(h));
  return reinterpret_cast<F16x>(__builtin_convertvector(h, U16x) << 16);  // bf16 = top half
#endif
}
inline F16x Load16(const int8_t* p) {
#if defined(__AVX512F__)
  return reinterpret_cast<F16x>(_mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
#elif defined(__AVX2__)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
  F16x out;
  std::memcpy(&out, &lo, sizeof(lo));
  std::memcpy(reinterpret_cast<char*>(&out) + sizeof(lo), &hi, sizeof(hi));
  return out;
#else
  // GCC lowers this conversion one lane at a time; the branches above are the fast paths.
  B16x b;
  std::memcpy(&b, p, sizeof(b));
  return __builtin_convertvector(__builtin_convertvector(b, I16x), F16x);
#endif
}
inline float Widen1(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline float Widen1(int8_t q) { return static_cast<float>(q); }
inline float Sum(F16x v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(reinterpret_cast<__m512>(v));
#else
  float s = 0.0f;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
#endif
}

constexpr int64_t kMaxRows = 64;
// Rows are processed in groups: every weight vector is widened once per group and multiplied
// into its rows, one accumulator each. "nk" takes eight rows per group for int8 and four for
// bf16, as measured (SmolLM2-135M decode, 2-core AVX-512 CPU, tok/s with groups of eight vs
// four: int8 batch 8 391-431 vs 368-391; bf16 batch 8 306-347 vs 440-451, batch 16 450-491 vs
// 514-541; groups of 16 were slower for int8 too, 430 vs 495 at batch 16); "kn" four (it keeps
// V vectors per row).
template <typename T>
constexpr int kNkGroup = std::is_same_v<T, int8_t> ? 8 : 4;
constexpr int kKnGroup = 4;
constexpr int64_t kColChunk = 256;     // "kn": output columns per task
constexpr int64_t kRowChunk = 256;     // "nk": output rows per task
// Products of fewer multiply-adds (M * K * N) than this run on the calling thread alone: waking a
// pool thread costs more than it saves there.
#ifndef PARALLEL_WORK
#define PARALLEL_WORK (1 << 21)
#endif
constexpr int64_t kParallelWork = PARALLEL_WORK;

// "kn", M rows: y[:, j0:j1] for W[K, N]. Blocks of V vectors (16 V columns) are accumulated in
// registers over all K; a ragged tail (< 16 columns) is done in scalar code.
template <typename T, int M>
void KnChunk(const float* x, const T* w, const float* scale, float* y, int64_t K, int64_t N,
             int64_t j0, int64_t j1) {
  constexpr int V = M == 1 ? 16 : M == 2 ? 8 : 4;  // M <= 4: at most 16 accumulators
  int64_t j = j0;
  for (; j + 16 * V <= j1; j += 16 * V) {
    F16x acc[M][V] = {};
    for (int64_t k = 0; k < K; ++k) {
      const T* row = w + k * N + j;
      F16x wv[V];
      for (int v = 0; v < V; ++v) wv[v] = Load16(row + 16 * v);
      for (int m = 0; m < M; ++m) {
        const float xv = x[m * K + k];
        for (int v = 0; v < V; ++v) acc[m][v] += xv * wv[v];
      }
    }
    for (int m = 0; m < M; ++m) {
      for (int v = 0; v < V; ++v) {
        F16x out = acc[m][v];
        if (scale != nullptr) {
          F16x s;
          std::memcpy(&s, scale + j + 16 * v, sizeof(s));
          out *= s;
        }
        std::memcpy(y + m * N + j + 16 * v, &out, sizeof(out));
      }
    }
  }
  for (; j < j1; ++j) {
    for (int m = 0; m < M; ++m) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += x[m * K + k] * Widen1(w[k * N + j]);
      y[m * N + j] = scale != nullptr ? s * scale[j] : s;
    }
  }
}

// "nk", M rows: y[:, n0:n1] for W[N, K]. Each 16-weight vector is loaded and widened once and
// multiplied into all M rows; with few rows the K loop is unrolled U times so that at least four
// independent sums hide the latency of the fused multiply-adds.
template <typename T, int M>
void NkChunk(const float* x, const T* w, const float* scale, float* y, int64_t K, int64_t N,
             int64_t n0, int64_t n1) {
  constexpr int U = M >= 4 ? 1 : 4 / M;
  const int64_t kv = K - K % (16 * U), k16 = K - K % 16;
  for (int64_t n = n0; n < n1; ++n) {
    const T* row = w + n * K;
    F16x acc[M][U] = {};
    int64_t k = 0;
    for (; k < kv; k += 16 * U) {
      for (int u = 0; u < U; ++u) {
        const F16x wv = Load16(row + k + 16 * u);
        for (int m = 0; m < M; ++m) {
          F16x xv;
          std::memcpy(&xv, x + m * K + k + 16 * u, sizeof(xv));
          acc[m][u] += xv * wv;
        }
      }
    }
    for (; k < k16; k += 16) {
      const F16x wv = Load16(row + k);
      for (int m = 0; m < M; ++m) {
        F16x xv;
        std::memcpy(&xv, x + m * K + k, sizeof(xv));
        acc[m][0] += xv * wv;
      }
    }
    for (int m = 0; m < M; ++m) {
      F16x total = acc[m][0];
      for (int u = 1; u < U; ++u) total += acc[m][u];
      float s = Sum(total);
      for (int64_t r = k; r < K; ++r) s += x[m * K + r] * Widen1(row[r]);
      y[m * N + n] = scale != nullptr ? s * scale[n] : s;
    }
  }
}

// Calls f(std::integral_constant<int, m>()) for 1 <= m <= Max (a kernel compiled per row count).
template <int Max, typename F>
void WithRows(int64_t m, F f) {
  if constexpr (Max > 1) {
    if (m < Max) return WithRows<Max - 1>(m, f);
  }
  f(std::integral_constant<int, Max>());
}

// Runs chunk(i) for i in [0, n) on the caller and the pool; returns when all are done.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, bool parallel, F chunk) {
  if (n <= 1) {
    for (int64_t i = 0; i < n; ++i) chunk(i);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, n, chunk]() {
    for (int64_t i = shared->next.fetch_add(1); i < n; i = shared->next.fetch_add(1)) {
      chunk(i);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = parallel ? std::min<int64_t>(pool.num_threads(), n - 1) : 0;
  for (int64_t t = 0; t < helpers; ++t) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  while (shared->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

template <typename T>
ffi::Error Run(ffi::ThreadPool pool, const float* x, const T* w, const float* scale, float* y,
               int64_t M, int64_t K, int64_t N, bool transposed) {
  if (M < 1 || M > kMaxRows) return ffi::Error::InvalidArgument("rows must lie in [1, 64]");
  const bool parallel = M * K * N >= kParallelWork;
  if (transposed) {
    const int64_t chunks = (N + kRowChunk - 1) / kRowChunk;
    ParallelFor(pool, chunks, parallel, [=](int64_t i) {
      // Rows in groups (one accumulator per row); the chunk's weights come from cache for the
      // groups after the first.
      for (int64_t m0 = 0; m0 < M; m0 += kNkGroup<T>) {
        WithRows<kNkGroup<T>>(std::min<int64_t>(kNkGroup<T>, M - m0), [&](auto rows) {
          NkChunk<T, rows.value>(x + m0 * K, w, scale, y + m0 * N, K, N, i * kRowChunk,
                                 std::min(N, (i + 1) * kRowChunk));
        });
      }
    });
  } else {
    const int64_t chunks = (N + kColChunk - 1) / kColChunk;
    ParallelFor(pool, chunks, parallel, [=](int64_t i) {
      for (int64_t m0 = 0; m0 < M; m0 += kKnGroup) {
        WithRows<kKnGroup>(std::min<int64_t>(kKnGroup, M - m0), [&](auto rows) {
          KnChunk<T, rows.value>(x + m0 * K, w, scale, y + m0 * N, K, N, i * kColChunk,
                                 std::min(N, (i + 1) * kColChunk));
        });
      }
    });
  }
  return ffi::Error::Success();
}

// The matrix that `layer` selects in a weight of rank 2 ([R, C]) or 3 ([L, R, C], stacked
// layers), or an error.
template <typename B>
ffi::ErrorOr<int64_t> LayerOffset(const B& w, const ffi::Buffer<ffi::S32>& layer,
                                  int64_t rows, int64_t cols) {
  const auto wd = w.dimensions();
  if (wd.size() != 2 && wd.size() != 3)
    return ffi::Unexpected(ffi::Error::InvalidArgument("the weight must be 2-D or 3-D"));
  if (wd[wd.size() - 2] != rows || wd[wd.size() - 1] != cols)
    return ffi::Unexpected(ffi::Error::InvalidArgument("weight shape does not match x and y"));
  if (layer.element_count() != 1)
    return ffi::Unexpected(ffi::Error::InvalidArgument("layer must be a scalar"));
  const int64_t l = layer.typed_data()[0];
  const int64_t count = wd.size() == 3 ? wd[0] : 1;
  if (l < 0 || l >= count)
    return ffi::Unexpected(ffi::Error::InvalidArgument("layer index out of range"));
  return l * rows * cols;
}

// x [M, K] f32; w [(L,) K, N] ("kn") or [(L,) N, K] ("nk") u16 bf16 bits; layer: s32 scalar
// picking the matrix of a stacked w; y [M, N] f32.
ffi::Error Bf16Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U16> w,
                    ffi::Buffer<ffi::S32> layer, ffi::ResultBuffer<ffi::F32> y,
                    bool transposed) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || yd.size() != 2 || xd[0] != yd[0])
    return ffi::Error::InvalidArgument("x and y must be [M, K] and [M, N]");
  const int64_t K = xd[1], N = yd[1];
  auto offset = transposed ? LayerOffset(w, layer, N, K) : LayerOffset(w, layer, K, N);
  if (offset.has_error()) return offset.error();
  return Run(pool, x.typed_data(),
             reinterpret_cast<const uint16_t*>(w.typed_data()) + offset.value(), nullptr,
             y->typed_data(), xd[0], K, N, transposed);
}

// x [M, K] f32; q [(L,) K, N] or [(L,) N, K] s8; scale [(L,) N] f32; layer as above.
ffi::Error Int8Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q,
                    ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::S32> layer,
                    ffi::ResultBuffer<ffi::F32> y, bool transposed) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || yd.size() != 2 || xd[0] != yd[0])
    return ffi::Error::InvalidArgument("x and y must be [M, K] and [M, N]");
  const int64_t K = xd[1], N = yd[1];
  auto offset = transposed ? LayerOffset(q, layer, N, K) : LayerOffset(q, layer, K, N);
  if (offset.has_error()) return offset.error();
  if (scale.element_count() != q.element_count() / K)
    return ffi::Error::InvalidArgument("scale must hold one value per output (per layer)");
  const int64_t l = offset.value() / (K * N);
  return Run(pool, x.typed_data(), q.typed_data() + offset.value(), scale.typed_data() + l * N,
             y->typed_data(), xd[0], K, N, transposed);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwiftjaxBf16Matmul, Bf16Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U16>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwiftjaxInt8Matmul, Int8Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transposed"));
