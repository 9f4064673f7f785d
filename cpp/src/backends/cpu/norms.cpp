#include "backends/cpu/norms.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

// Rows below this many floats in all run on one thread.
constexpr int64_t kParallelFloats = 1 << 14;
// Rows per partial sum of the affine gradient: few enough partials to add, enough blocks to share.
constexpr int64_t kAffineGradBlockRows = 32;

template <class RowFn>
void for_rows(ThreadPool& pool, const NormGeometry& geo, RowFn&& row) {
  const int tasks = geo.rows * geo.dim < kParallelFloats ? 1 : balanced_tasks(pool, geo.rows);
  if (tasks <= 1) {
    for (int64_t r = 0; r < geo.rows; ++r) row(r);
    return;
  }
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(geo.rows, tasks, task, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; ++r) row(r);
  });
}

// The row sums run in float32 on the compiler's vectors, one copy per instruction-set path
// (GOMETAL_NORM_KERNEL forces one): sums in double lanes, half as wide and ended by a chain of
// scalar adds, left a row of 128 latency-bound (forward 47 -> 27 us for 768 rows, one thread).
template <class Vec, int L>
GOMETAL_SIMD_INLINE float lane_total(Vec v) {
  typedef float Vec4f __attribute__((vector_size(16)));
  Vec4f q;
  if constexpr (L == 16) {
    const Vec8f h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  } else {
    q = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  }
  q += __builtin_shufflevector(q, q, 2, 3, 0, 1);
  q += __builtin_shufflevector(q, q, 1, 0, 3, 2);
  return q[0];
}

// Sums of x[c] - shift over c < n and, when kSquare, of its squares: two vector accumulators
// each, then a tree.
struct ShiftedSums {
  float sum, squares;
};

template <class Vec, int L, bool kSquare>
GOMETAL_SIMD_INLINE ShiftedSums shifted_sums(const float* x, int64_t n, float shift) {
  Vec s0 = {}, s1 = {}, q0 = {}, q1 = {};
  int64_t c = 0;
  for (; c + 2 * L <= n; c += 2 * L) {
    const Vec a = simd::load<Vec>(x + c) - shift, b = simd::load<Vec>(x + c + L) - shift;
    s0 += a;
    s1 += b;
    if constexpr (kSquare) {
      q0 += a * a;
      q1 += b * b;
    }
  }
  if (c + L <= n) {
    const Vec a = simd::load<Vec>(x + c) - shift;
    s0 += a;
    if constexpr (kSquare) q0 += a * a;
    c += L;
  }
  float sum = 0.0f, squares = 0.0f;
  for (; c < n; ++c) {
    const float d = x[c] - shift;
    sum += d;
    squares += d * d;
  }
  return {lane_total<Vec, L>(s0 + s1) + sum, kSquare ? lane_total<Vec, L>(q0 + q1) + squares : 0.0f};
}

// The row's mean (0 unless centring) and 1 / sqrt(variance or mean square + eps). The
// centred pass also sums x - mean, which corrects the mean and the variance for the first
// pass's rounding (the corrected two-pass algorithm): rows of large values with a small spread
// keep their precision.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void statistics_row(const float* x, int64_t dim, float eps, bool centre, float* mean,
                                        float* rstd) {
  const float n = static_cast<float>(dim);
  const float mu = centre ? shifted_sums<Vec, L, false>(x, dim, 0.0f).sum / n : 0.0f;
  const ShiftedSums centred = shifted_sums<Vec, L, true>(x, dim, mu);
  const float drift = centre ? centred.sum / n : 0.0f;
  *mean = mu + drift;
  *rstd = 1.0f / std::sqrt(std::max(centred.squares / n - drift * drift, 0.0f) + eps);
}

// One row of dL/dx. Both row sums (of gw and of gw (x - mean)) come from one pass; rstd
// multiplies the second once, after the sum.
template <class Vec, int L, bool kWeighted>
GOMETAL_SIMD_INLINE void backward_row(const float* __restrict x, const float* __restrict g,
                                      const float* __restrict weight, int64_t dim, bool centre, float mean,
                                      float rstd, float* __restrict dx) {
  Vec sum_gw = {}, sum_gw_centred = {};
  int64_t c = 0;
  for (; c + L <= dim; c += L) {
    const Vec gw = kWeighted ? simd::load<Vec>(g + c) * simd::load<Vec>(weight + c) : simd::load<Vec>(g + c);
    sum_gw += gw;
    sum_gw_centred += gw * (simd::load<Vec>(x + c) - mean);
  }
  float tail_gw = 0.0f, tail_gw_centred = 0.0f;
  for (int64_t i = c; i < dim; ++i) {
    const float gw = kWeighted ? g[i] * weight[i] : g[i];
    tail_gw += gw;
    tail_gw_centred += gw * (x[i] - mean);
  }
  const float inv_dim = 1.0f / static_cast<float>(dim);
  const float mean_gw = centre ? (lane_total<Vec, L>(sum_gw) + tail_gw) * inv_dim : 0.0f;
  const float mean_gw_xhat = (lane_total<Vec, L>(sum_gw_centred) + tail_gw_centred) * rstd * inv_dim;
  for (c = 0; c + L <= dim; c += L) {
    const Vec gw = kWeighted ? simd::load<Vec>(g + c) * simd::load<Vec>(weight + c) : simd::load<Vec>(g + c);
    const Vec xhat = (simd::load<Vec>(x + c) - mean) * rstd;
    const Vec d = rstd * (gw - mean_gw - xhat * mean_gw_xhat);
    __builtin_memcpy(dx + c, &d, sizeof d);
  }
  for (; c < dim; ++c) {
    const float gw = kWeighted ? g[c] * weight[c] : g[c];
    const float xhat = (x[c] - mean) * rstd;
    dx[c] = rstd * (gw - mean_gw - xhat * mean_gw_xhat);
  }
}

// Each path's entries, compiled for its instructions.
#define GOMETAL_NORM_PATH(suffix, Vec, L)                                                                 \
  void statistics_##suffix(const float* x, int64_t dim, float eps, bool centre, float* mean, float* rstd) { \
    statistics_row<Vec, L>(x, dim, eps, centre, mean, rstd);                                              \
  }                                                                                                       \
  void backward_##suffix(const float* x, const float* g, const float* weight, int64_t dim, bool centre,   \
                         float mean, float rstd, float* dx) {                                             \
    if (weight)                                                                                           \
      backward_row<Vec, L, true>(x, g, weight, dim, centre, mean, rstd, dx);                              \
    else                                                                                                  \
      backward_row<Vec, L, false>(x, g, nullptr, dim, centre, mean, rstd, dx);                            \
  }

GOMETAL_NORM_PATH(portable, Vec8f, 8)
#ifdef GOMETAL_SIMD_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
GOMETAL_NORM_PATH(avx2, Vec8f, 8)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
GOMETAL_NORM_PATH(avx512, Vec16f, 16)
#pragma GCC pop_options
#define GOMETAL_NORM_DISPATCH(path, name, ...)                \
  switch (path) {                                             \
    case SimdPath::Avx512: return name##_avx512(__VA_ARGS__); \
    case SimdPath::Avx2: return name##_avx2(__VA_ARGS__);     \
    default: return name##_portable(__VA_ARGS__);             \
  }
#else
#define GOMETAL_NORM_DISPATCH(path, name, ...) return name##_portable(__VA_ARGS__);
#endif
#undef GOMETAL_NORM_PATH

void row_statistics(const NormGeometry& geo, const float* x, float* mean, float* rstd) {
  GOMETAL_NORM_DISPATCH(geo.path, statistics, x, geo.dim, geo.eps, geo.centre, mean, rstd)
}

// Row r's statistics: read from `saved` (mean, 1 / std per row, as norm_forward keeps them)
// when given, else computed.
void statistics_of_row(const NormGeometry& geo, int64_t r, const float* x, const float* saved, float* mean,
                       float* rstd) {
  if (saved != nullptr) {
    *mean = saved[2 * r];
    *rstd = saved[2 * r + 1];
    return;
  }
  row_statistics(geo, x + r * geo.dim, mean, rstd);
}

// Row r's dx, from its statistics.
void backward_row_at(const NormGeometry& geo, int64_t r, const float* x, const float* g, const float* weight,
                     float mean, float rstd, float* dx) {
  const int64_t at = r * geo.dim;
  GOMETAL_NORM_DISPATCH(geo.path, backward, x + at, g + at, weight, geo.dim, geo.centre, mean, rstd, dx + at)
}

// Row r's terms of the affine gradient, added to the block's partial sums.
void add_affine_row(const NormGeometry& geo, const float* __restrict xr, const float* __restrict gr, float mean,
                    float rstd, float* __restrict sum_g_xhat, float* __restrict sum_g) {
  for (int64_t c = 0; c < geo.dim; ++c) {
    sum_g_xhat[c] += gr[c] * ((xr[c] - mean) * rstd);
    sum_g[c] += gr[c];
  }
}

// Runs block_sums(b) for every block of kAffineGradBlockRows rows, then adds the blocks'
// (2, dim) partials in block order into out: the result does not depend on the threads.
template <class BlockSums>
void over_affine_blocks(ThreadPool& pool, const NormGeometry& geo, const float* partials, float* out,
                        BlockSums&& block_sums) {
  const int64_t dim = geo.dim, blocks = norm_affine_grad_blocks(geo);
  const int tasks = geo.rows * geo.dim < kParallelFloats ? 1 : balanced_tasks(pool, blocks);
  if (tasks <= 1) {
    for (int64_t b = 0; b < blocks; ++b) block_sums(b);
  } else {
    pool.parallel_for(tasks, [&](int task, int) {
      int64_t lo, hi;
      split_range(blocks, tasks, task, 1, &lo, &hi);
      for (int64_t b = lo; b < hi; ++b) block_sums(b);
    });
  }
  std::copy(partials, partials + 2 * dim, out);
  for (int64_t b = 1; b < blocks; ++b)
    for (int64_t c = 0; c < 2 * dim; ++c) out[c] += partials[b * 2 * dim + c];
}

}  // namespace

SimdPath choose_norm_path() { return *choose_simd_path("layer_norm", "GOMETAL_NORM_KERNEL"); }

int64_t norm_affine_grad_blocks(const NormGeometry& geo) {
  return (geo.rows + kAffineGradBlockRows - 1) / kAffineGradBlockRows;
}

void norm_affine_grad(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g, float* partials,
                      float* out, const float* saved) {
  norm_backward_and_affine_grad(pool, geo, x, g, nullptr, nullptr, partials, out, saved);
}

void norm_backward_and_affine_grad(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g,
                                   const float* weight, float* dx, float* partials, float* out, const float* saved) {
  const int64_t dim = geo.dim;
  over_affine_blocks(pool, geo, partials, out, [&](int64_t block) {
    float* sum_g_xhat = partials + block * 2 * dim;
    std::fill(sum_g_xhat, sum_g_xhat + 2 * dim, 0.0f);
    const int64_t end = std::min(geo.rows, (block + 1) * kAffineGradBlockRows);
    for (int64_t r = block * kAffineGradBlockRows; r < end; ++r) {
      float mean, rstd;
      statistics_of_row(geo, r, x, saved, &mean, &rstd);
      if (dx != nullptr) backward_row_at(geo, r, x, g, weight, mean, rstd, dx);
      add_affine_row(geo, x + r * dim, g + r * dim, mean, rstd, sum_g_xhat, sum_g_xhat + dim);
    }
  });
}

void norm_forward(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* weight, const float* bias,
                  float* y, float* kept) {
  for_rows(pool, geo, [&](int64_t r) {
    const float* xr = x + r * geo.dim;
    float* yr = y + r * geo.dim;
    float mean, rstd;
    row_statistics(geo, xr, &mean, &rstd);
    if (kept != nullptr) {
      kept[2 * r] = mean;
      kept[2 * r + 1] = rstd;
    }
    for (int64_t c = 0; c < geo.dim; ++c) {
      float v = (xr[c] - mean) * rstd;
      if (weight) v *= weight[c];
      if (bias) v += bias[c];
      yr[c] = v;
    }
  });
}

void norm_backward(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g, const float* weight,
                   float* dx, const float* saved) {
  for_rows(pool, geo, [&](int64_t r) {
    float mean, rstd;
    statistics_of_row(geo, r, x, saved, &mean, &rstd);
    backward_row_at(geo, r, x, g, weight, mean, rstd, dx);
  });
}

}  // namespace gometal
