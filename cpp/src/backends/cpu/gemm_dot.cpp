#include "backends/cpu/gemm_dot.h"

#include <algorithm>
#include <optional>

#include "backends/cpu/gemm_small.h"
#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

// 4 rows of A by 4 rows of B: 16 accumulators, 8 loads per 16 multiply-adds of 16 lanes.
constexpr int kTile = 4, kLanes = 16;
constexpr int64_t kMaxRows = 64, kMinDepth = 1024;
// Products smaller than this many multiply-adds stay on one thread.
constexpr int64_t kParallelMacs = 1 << 18;

#ifdef GOMETAL_SIMD_X86
GOMETAL_SIMD_INLINE float lane_sum(Vec16f v) {
  float sum = 0.0f;
#pragma GCC unroll 16
  for (int l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
}

// C's Rows x Cols block: each sum runs along K in vectors, then the last K % 16 steps one by one.
template <int Rows, int Cols>
GOMETAL_SIMD_INLINE void dot_tile(const float* a, const float* b, int64_t k, float* c, int64_t ldc) {
  Vec16f acc[Rows][Cols] = {};
  const int64_t whole = k / kLanes * kLanes;
  for (int64_t p = 0; p < whole; p += kLanes) {
    Vec16f av[Rows], bv[Cols];
#pragma GCC unroll 4
    for (int r = 0; r < Rows; ++r) av[r] = simd::load<Vec16f>(a + r * k + p);
#pragma GCC unroll 4
    for (int j = 0; j < Cols; ++j) bv[j] = simd::load<Vec16f>(b + j * k + p);
#pragma GCC unroll 4
    for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < Cols; ++j) acc[r][j] += av[r] * bv[j];
  }
  for (int r = 0; r < Rows; ++r)
    for (int j = 0; j < Cols; ++j) {
      float sum = lane_sum(acc[r][j]);
      for (int64_t p = whole; p < k; ++p) sum += a[r * k + p] * b[j * k + p];
      c[r * ldc + j] = sum;
    }
}

// dot_tile for run-time rows and columns of at most kTile each.
template <int Rows, int Cols>
GOMETAL_SIMD_INLINE void dispatch_tile(int rows, int cols, const float* a, const float* b, int64_t k, float* c,
                                       int64_t ldc) {
  if constexpr (Rows > 1) {
    if (rows < Rows) return dispatch_tile<Rows - 1, Cols>(rows, cols, a, b, k, c, ldc);
  }
  if constexpr (Cols > 1) {
    if (cols < Cols) return dispatch_tile<Rows, Cols - 1>(rows, cols, a, b, k, c, ldc);
  }
  dot_tile<Rows, Cols>(a, b, k, c, ldc);
}

// Columns [j0, j1) of C: each group of B's rows stays in the L2 cache while every group of A's
// rows goes past it.
__attribute__((target("avx512f,avx2,fma"))) void columns_avx512(int64_t m, int64_t k, const float* a,
                                                                 const float* b, float* c, int64_t ldc, int64_t j0,
                                                                 int64_t j1) {
  for (int64_t j = j0; j < j1; j += kTile) {
    const int cols = static_cast<int>(std::min<int64_t>(kTile, j1 - j));
    for (int64_t i = 0; i < m; i += kTile) {
      const int rows = static_cast<int>(std::min<int64_t>(kTile, m - i));
      dispatch_tile<kTile, kTile>(rows, cols, a + i * k, b + j * k, k, c + i * ldc + j, ldc);
    }
  }
}
#endif

}  // namespace

bool gemm_dot(ThreadPool& pool, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
#ifdef GOMETAL_SIMD_X86
  if (m <= kGemmSmallMaxRows || m > kMaxRows || k < kMinDepth || n < 1) return false;
  const std::optional<SimdPath> path = choose_simd_path("matmul", "GOMETAL_GEMM_DOT_KERNEL", "blas");
  if (path != SimdPath::Avx512) return false;
  // Columns split across the threads: each reads its own rows of B (the weights) and all of A.
  const int64_t groups = (n + kTile - 1) / kTile;
  const int parts = static_cast<int>(std::min<int64_t>(m * n * k < kParallelMacs ? 1 : pool.size(), groups));
  for_split_ranges(pool, n, parts, kTile, [&](int64_t lo, int64_t hi) { columns_avx512(m, k, a, b, c, n, lo, hi); });
  return true;
#else
  (void)pool, (void)m, (void)n, (void)k, (void)a, (void)b, (void)c;
  return false;
#endif
}

}  // namespace gometal
