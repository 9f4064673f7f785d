#include "backends/cpu/gemm_transposed_a.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

// 6 rows x 4 vectors of 16 columns: 24 accumulators, 4 loads of B and 6 broadcasts of A per step.
constexpr int kRows = 6, kVectors = 4, kLanes = 16, kPanel = kVectors * kLanes;
constexpr int64_t kMinRows = 25, kMinDepth = 256;
// Deeper products run in chunks of this many steps of K (B's chunk stays in the L2 cache) when
// N is at most kMaxChunkedColumns: K = 4096, N = 128 (block 1024's weight gradients) ran
// 9-21 % faster than the BLAS with cold caches; N = 512 in chunks of 256 only as fast.
constexpr int64_t kMaxDepth = 1024, kMaxChunkedColumns = 128;
// The largest M measured (cold caches, K = 768: M = 65 to 640 all 6-32 % faster than the BLAS).
constexpr int64_t kMaxRows = 640;
// A's rows lie M floats apart, too far for the hardware's prefetch to keep up once M is 512
// (2 KB: 4 % slower than the BLAS without this, 12 % faster with it); 16 steps of K ahead.
constexpr int64_t kPrefetchSteps = 16;
// Products smaller than this many multiply-adds stay on one thread.
constexpr int64_t kParallelMacs = 1 << 18;
// B up to this size stays in the L2 cache while every block of rows goes past all its columns,
// so A is read from memory once; a larger B is walked one panel of 64 columns at a time
// instead (A of 512 columns, read once per panel, ran 15 % slower than with the rows outside).
constexpr int64_t kRowsOutsideMaxBytes = 512 << 10;

#ifdef GOMETAL_SIMD_X86
template <int Rows>
GOMETAL_SIMD_INLINE void tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c,
                              int64_t ldc, bool accumulate) {
  Vec16f acc[Rows][kVectors] = {};
  for (int64_t p = 0; p < k; ++p) {
    if (p + kPrefetchSteps < k) __builtin_prefetch(a + (p + kPrefetchSteps) * lda);
    Vec16f bv[kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) bv[j] = simd::load<Vec16f>(b + p * ldb + j * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const Vec16f s = simd::broadcast<Vec16f, kLanes>(a + p * lda + r);
#pragma GCC unroll 4
      for (int j = 0; j < kVectors; ++j) acc[r][j] += s * bv[j];
    }
  }
  for (int r = 0; r < Rows; ++r) {
    if (accumulate)
      for (int j = 0; j < kVectors; ++j) acc[r][j] += simd::load<Vec16f>(c + r * ldc + j * kLanes);
    std::memcpy(c + r * ldc, acc[r], sizeof acc[r]);
  }
}

// tile<rows> for run-time rows <= Rows.
template <int Rows>
GOMETAL_SIMD_INLINE void dispatch_tile(int rows, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k,
                                       float* c, int64_t ldc, bool accumulate) {
  if constexpr (Rows > 1) {
    if (rows < Rows) return dispatch_tile<Rows - 1>(rows, a, lda, b, ldb, k, c, ldc, accumulate);
  }
  tile<Rows>(a, lda, b, ldb, k, c, ldc, accumulate);
}

// Rows [i0, i1) of C (plus C when `accumulate`) from k steps of A and B, in blocks of
// near-equal height (8 rows: 4 + 4, not 6 + 2).
GOMETAL_SIMD_INLINE void rows_of_chunk(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                                       int64_t i0, int64_t i1, bool accumulate) {
  const int64_t span = i1 - i0, blocks = (span + kRows - 1) / kRows;
  auto block_rows = [&](int64_t blk, int64_t row) {
    return static_cast<int>((span - (row - i0) + (blocks - blk) - 1) / (blocks - blk));
  };
  if (k * n * static_cast<int64_t>(sizeof(float)) <= kRowsOutsideMaxBytes) {
    for (int64_t blk = 0, row = i0; blk < blocks; ++blk) {
      const int rows = block_rows(blk, row);
      for (int64_t j0 = 0; j0 < n; j0 += kPanel)
        dispatch_tile<kRows>(rows, a + row, m, b + j0, n, k, c + row * n + j0, n, accumulate);
      row += rows;
    }
    return;
  }
  for (int64_t j0 = 0; j0 < n; j0 += kPanel)
    for (int64_t blk = 0, row = i0; blk < blocks; ++blk) {
      const int rows = block_rows(blk, row);
      dispatch_tile<kRows>(rows, a + row, m, b + j0, n, k, c + row * n + j0, n, accumulate);
      row += rows;
    }
}

// Rows [i0, i1) of C over K in chunks of at most kMaxDepth steps, each added to the last.
__attribute__((target("avx512f,avx2,fma"))) void rows_avx512(int64_t m, int64_t n, int64_t k, const float* a,
                                                              const float* b, float* c, int64_t i0, int64_t i1) {
  for (int64_t p0 = 0; p0 < k; p0 += kMaxDepth)
    rows_of_chunk(m, n, std::min(kMaxDepth, k - p0), a + p0 * m, b + p0 * n, c, i0, i1, p0 > 0);
}

// Each thread sums the product over its own share of K (the batch rows it wrote in the steps
// before: the pool keeps a thread on the same end of each region), into C or a partial of
// the calling thread's scratch; then the partials are added to C by rows. Only C's size
// crosses between the threads, where splitting C's rows had each read every row of A and B:
// with the two vCPUs on different dies that was most of a weight gradient's time.
void sum_over_depth_parts(ThreadPool& pool, int parts, int64_t m, int64_t n, int64_t k, const float* a,
                          const float* b, float* c) {
  thread_local std::vector<float> partials;  // grows to the largest product, then is reused
  const size_t size = static_cast<size_t>(m * n);
  if (partials.size() < size * static_cast<size_t>(parts - 1)) partials.resize(size * static_cast<size_t>(parts - 1));
  float* scratch = partials.data();
  pool.parallel_for(parts, [&](int part, int) {
    int64_t lo, hi;
    split_range(k, parts, part, 1, &lo, &hi);
    // Never empty: the caller gives each part at least kMinDepth steps.
    float* out = part == 0 ? c : scratch + static_cast<size_t>(part - 1) * size;
    rows_avx512(m, n, hi - lo, a + lo * m, b + lo * n, out, 0, m);
  });
  for_split_ranges(pool, m, parts, 1, [&](int64_t lo, int64_t hi) {
    for (int p = 1; p < parts; ++p) {
      const float* partial = scratch + static_cast<size_t>(p - 1) * size;
      for (int64_t i = lo * n; i < hi * n; ++i) c[i] += partial[i];
    }
  });
}
#endif

}  // namespace

bool gemm_transposed_a(ThreadPool& pool, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
#ifdef GOMETAL_SIMD_X86
  if (m < kMinRows || m > kMaxRows || n < kPanel || n % kPanel != 0 || k < kMinDepth) return false;
  if (k > kMaxDepth && n > kMaxChunkedColumns) return false;
  const std::optional<SimdPath> path = choose_simd_path("matmul", "GOMETAL_GEMM_TRANSPOSED_A_KERNEL", "blas");
  if (path != SimdPath::Avx512) return false;
  const int threads = m * n * k < kParallelMacs ? 1 : pool.size();
  if (threads > 1 && k / threads >= kMinDepth) {
    sum_over_depth_parts(pool, threads, m, n, k, a, b, c);
    return true;
  }
  // Rows split across the threads: each reads all of B (its own L2 copy) and its own columns of A.
  const int64_t blocks = (m + kRows - 1) / kRows;
  const int parts = static_cast<int>(std::min<int64_t>(threads, blocks));
  for_split_ranges(pool, m, parts, kRows, [&](int64_t lo, int64_t hi) { rows_avx512(m, n, k, a, b, c, lo, hi); });
  return true;
#else
  (void)pool, (void)m, (void)n, (void)k, (void)a, (void)b, (void)c;
  return false;
#endif
}

}  // namespace gometal
