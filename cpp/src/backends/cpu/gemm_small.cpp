#include "backends/cpu/gemm_small.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

using simd::accumulate_tile;
using simd::load;

// Below this many multiply-adds a product stays on one thread: waking the pool costs more.
constexpr int64_t kParallelMacs = 1 << 18;

struct Operands {
  const float* a;  // M x K, row stride k
  const float* b;  // K x N, row stride n (N x K, row stride k, when transposed)
  float* c;        // M x N, row stride n
  int64_t m, n, k;
};

// Rows x (NV vectors of L columns) of C from `panel` (K rows of stride ldp): one vector
// load per column group and one broadcast per row for each step of K.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void tile(const float* a, int64_t k, const float* panel, int64_t ldp, float* c,
                                    int64_t ldc, int64_t cols) {
  Vec acc[Rows][NV] = {};
  accumulate_tile<Vec, L, Rows, NV>(a, k, panel, ldp, acc);
  for (int r = 0; r < Rows; ++r) {
    float* out = c + r * ldc;
    if (cols == NV * L) {
      for (int j = 0; j < NV; ++j) __builtin_memcpy(out + j * L, &acc[r][j], sizeof(Vec));
    } else {
      float tmp[NV * L];
      __builtin_memcpy(tmp, acc[r], sizeof tmp);
      std::copy(tmp, tmp + cols, out);
    }
  }
}

// tile<..., rows, nv> for run-time rows <= Rows and nv <= NV.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void dispatch_tile(int rows, int nv, const float* a, int64_t k, const float* panel,
                                             int64_t ldp, float* c, int64_t ldc, int64_t cols) {
  if constexpr (Rows >= 1 && NV >= 1) {
    if (rows < Rows) return dispatch_tile<Vec, L, Rows - 1, NV>(rows, nv, a, k, panel, ldp, c, ldc, cols);
    if (nv < NV) return dispatch_tile<Vec, L, Rows, NV - 1>(rows, nv, a, k, panel, ldp, c, ldc, cols);
    tile<Vec, L, Rows, NV>(a, k, panel, ldp, c, ldc, cols);
  }
}

// Columns [n0, n1) of C, a panel of NV * L columns at a time against every block of rows: the
// panel stays in L2 while the rows go by. A last panel narrower than its vectors is copied,
// zero-padded, so that the tile's loads never read past B.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void columns(const Operands& o, int64_t n0, int64_t n1) {
  constexpr int64_t kWidth = NV * L;
  for (int64_t j0 = n0; j0 < n1; j0 += kWidth) {
    const int64_t cols = std::min<int64_t>(kWidth, n1 - j0);
    const int nv = static_cast<int>((cols + L - 1) / L);
    const float* panel = o.b + j0;
    int64_t ldp = o.n;
    std::vector<float> padded;
    if (cols % L != 0) {
      ldp = nv * L;
      padded.assign(o.k * ldp, 0.0f);
      for (int64_t p = 0; p < o.k; ++p) std::copy(panel + p * o.n, panel + p * o.n + cols, padded.data() + p * ldp);
      panel = padded.data();
    }
    for (int64_t i0 = 0; i0 < o.m; i0 += Rows) {
      const int rows = static_cast<int>(std::min<int64_t>(Rows, o.m - i0));
      dispatch_tile<Vec, L, Rows, NV>(rows, nv, o.a + i0 * o.k, o.k, panel, ldp, o.c + i0 * o.n + j0, o.n, cols);
    }
  }
}

typedef float Vec4f __attribute__((vector_size(16)));

GOMETAL_SIMD_INLINE float lane_sum(Vec4f v) {
  const Vec4f h = v + __builtin_shufflevector(v, v, 2, 3, 0, 1);
  return h[0] + h[1];
}
GOMETAL_SIMD_INLINE float lane_sum(Vec8f v) {
  return lane_sum(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
}
GOMETAL_SIMD_INLINE float lane_sum(Vec16f v) {
  return lane_sum(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}

// C = A B^T with B stored N x K (a dense layer's weight, as torch's Linear): Rows x Cols dot
// products, each a vector of partial sums along K that is summed across lanes at the end.
template <class Vec, int L, int Rows, int Cols>
GOMETAL_SIMD_INLINE void dot_tile(const float* a, const float* b, int64_t k, float* c, int64_t ldc) {
  Vec acc[Rows][Cols] = {};
  const int64_t whole = k / L * L;
  for (int64_t p = 0; p < whole; p += L) {
    Vec bv[Cols];
#pragma GCC unroll 8
    for (int j = 0; j < Cols; ++j) bv[j] = load<Vec>(b + j * k + p);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const Vec av = load<Vec>(a + r * k + p);
#pragma GCC unroll 8
      for (int j = 0; j < Cols; ++j) acc[r][j] += av * bv[j];
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int j = 0; j < Cols; ++j) {
      float sum = lane_sum(acc[r][j]);
      for (int64_t p = whole; p < k; ++p) sum += a[r * k + p] * b[j * k + p];
      c[r * ldc + j] = sum;
    }
}

template <class Vec, int L, int Rows, int Cols>
GOMETAL_SIMD_INLINE void dispatch_dot_tile(int rows, int cols, const float* a, const float* b, int64_t k,
                                                 float* c, int64_t ldc) {
  if constexpr (Rows >= 1 && Cols >= 1) {
    if (rows < Rows) return dispatch_dot_tile<Vec, L, Rows - 1, Cols>(rows, cols, a, b, k, c, ldc);
    if (cols < Cols) return dispatch_dot_tile<Vec, L, Rows, Cols - 1>(rows, cols, a, b, k, c, ldc);
    dot_tile<Vec, L, Rows, Cols>(a, b, k, c, ldc);
  }
}

// Columns [n0, n1) of C = A B^T, Cols rows of B at a time (they stay in L1) against every
// block of rows of A.
template <class Vec, int L, int Rows, int Cols>
GOMETAL_SIMD_INLINE void dot_columns(const Operands& o, int64_t n0, int64_t n1) {
  for (int64_t j0 = n0; j0 < n1; j0 += Cols) {
    const int cols = static_cast<int>(std::min<int64_t>(Cols, n1 - j0));
    for (int64_t i0 = 0; i0 < o.m; i0 += Rows) {
      const int rows = static_cast<int>(std::min<int64_t>(Rows, o.m - i0));
      dispatch_dot_tile<Vec, L, Rows, Cols>(rows, cols, o.a + i0 * o.k, o.b + j0 * o.k, o.k, o.c + i0 * o.n + j0,
                                            o.n);
    }
  }
}

// Register budgets: AVX-512 6 x 4 accumulators + 4 loads of 32 registers; AVX2 4 x 3 + 3 + 1 of 16.
constexpr int64_t kAvx512Width = 64, kAvx2Width = 24, kPortableWidth = 16;

// The dot-product tiles: AVX-512 4 x 4 accumulators + 4 + 1 loads; AVX2 and portable 2 x 4 + 4 + 1.
constexpr int64_t kDotCols = 4;

void columns_portable(const Operands& o, bool tb, int64_t n0, int64_t n1) {
  if (tb) return dot_columns<Vec8f, 8, 2, kDotCols>(o, n0, n1);
  columns<Vec8f, 8, 4, 2>(o, n0, n1);
}

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void columns_avx2(const Operands& o, bool tb, int64_t n0, int64_t n1) {
  if (tb) return dot_columns<Vec8f, 8, 2, kDotCols>(o, n0, n1);
  columns<Vec8f, 8, 4, 3>(o, n0, n1);
}
__attribute__((target("avx512f,avx2,fma"))) void columns_avx512(const Operands& o, bool tb, int64_t n0,
                                                                 int64_t n1) {
  if (tb) return dot_columns<Vec16f, 16, 4, kDotCols>(o, n0, n1);
  columns<Vec16f, 16, 6, 4>(o, n0, n1);
}
#endif

void columns(GemmSmallPath path, const Operands& o, bool tb, int64_t n0, int64_t n1) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case GemmSmallPath::Avx512: return columns_avx512(o, tb, n0, n1);
    case GemmSmallPath::Avx2: return columns_avx2(o, tb, n0, n1);
#endif
    default: return columns_portable(o, tb, n0, n1);
  }
}

int64_t panel_width(GemmSmallPath path, bool tb) {
  if (tb) return kDotCols;
  return path == GemmSmallPath::Avx512 ? kAvx512Width : path == GemmSmallPath::Avx2 ? kAvx2Width : kPortableWidth;
}

}  // namespace

GemmSmallPath choose_gemm_small_path() {
  const std::optional<SimdPath> path = choose_simd_path("matmul", "GOMETAL_GEMM_SMALL_KERNEL", "blas");
  if (!path) return GemmSmallPath::Blas;
  switch (*path) {
    case SimdPath::Avx512: return GemmSmallPath::Avx512;
    case SimdPath::Avx2: return GemmSmallPath::Avx2;
    default: return GemmSmallPath::Portable;
  }
}

bool gemm_small(ThreadPool& pool, bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                const float* a, const float* b, float* c) {
  if (transpose_a || m < 1 || m > kGemmSmallMaxRows || n < 1 || k < 1) return false;
  // One row against a transposed B is the BLAS's matrix-vector product, as fast as the dot tiles.
  if (transpose_b && m == 1) return false;
  const GemmSmallPath path = choose_gemm_small_path();
  if (path == GemmSmallPath::Blas) return false;
  const Operands o{a, b, c, m, n, k};
  const int64_t width = panel_width(path, transpose_b);
  const int parts = static_cast<int>(
      std::min<int64_t>(pool.size(), m * n * k < kParallelMacs ? 1 : (n + width - 1) / width));
  if (parts <= 1) {
    columns(path, o, transpose_b, 0, n);
    return true;
  }
  pool.parallel_for(parts, [&](int part, int) {
    int64_t lo, hi;
    split_range(n, parts, part, width, &lo, &hi);
    if (lo < hi) columns(path, o, transpose_b, lo, std::min(hi, n));
  });
  return true;
}

}  // namespace gometal
