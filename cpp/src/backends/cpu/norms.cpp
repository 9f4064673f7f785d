#include "backends/cpu/norms.h"

#include <algorithm>
#include <cmath>

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

// Sixteen partial sums: four vectors of doubles, enough to hide the adds' latency (eight
// left the gradient's row sums latency-bound: 124 -> 89 us for 768 rows of 128).
constexpr int kLanes = 16;

// Sum of f(c) for c < n in double, over kLanes independent partial sums: one running sum is
// a chain of dependent adds that neither pipelines nor vectorizes.
template <class Term>
double lane_sum(int64_t n, Term&& term) {
  double lanes[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += term(c + l);
  for (; c < n; ++c) lanes[0] += term(c);
  double sum = 0.0;
  for (double lane : lanes) sum += lane;
  return sum;
}

// The row's mean (0 unless centring) and 1 / sqrt(variance or mean square + eps), both
// accumulated in double: a row of large values with a small spread keeps its precision.
void row_statistics(const NormGeometry& geo, const float* x, float* mean, float* rstd) {
  const double sum = geo.centre ? lane_sum(geo.dim, [&](int64_t c) { return static_cast<double>(x[c]); }) : 0.0;
  const double mu = sum / static_cast<double>(geo.dim);
  const double spread = lane_sum(geo.dim, [&](int64_t c) {
    const double d = x[c] - mu;
    return d * d;
  });
  *mean = static_cast<float>(mu);
  *rstd = static_cast<float>(1.0 / std::sqrt(spread / static_cast<double>(geo.dim) + geo.eps));
}

// One row of dL/dx. Both row sums (of gw and of gw (x - mean)) come from one pass, in double
// over independent lanes; rstd multiplies the second once, after the sum.
template <bool kWeighted>
void backward_row(const NormGeometry& geo, const float* __restrict x, const float* __restrict g,
                  const float* __restrict weight, float mean, float rstd, float* __restrict dx) {
  double sum_gw[kLanes] = {}, sum_gw_centred[kLanes] = {};
  const int64_t dim = geo.dim;
  int64_t c = 0;
  for (; c + kLanes <= dim; c += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float gw = kWeighted ? g[c + l] * weight[c + l] : g[c + l];
      sum_gw[l] += gw;
      sum_gw_centred[l] += static_cast<double>(gw) * (x[c + l] - mean);
    }
  for (; c < dim; ++c) {
    const float gw = kWeighted ? g[c] * weight[c] : g[c];
    sum_gw[0] += gw;
    sum_gw_centred[0] += static_cast<double>(gw) * (x[c] - mean);
  }
  double total_gw = 0.0, total_gw_centred = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    total_gw += sum_gw[l];
    total_gw_centred += sum_gw_centred[l];
  }
  const float inv_dim = 1.0f / static_cast<float>(dim);
  const float mean_gw = geo.centre ? static_cast<float>(total_gw) * inv_dim : 0.0f;
  const float mean_gw_xhat = static_cast<float>(total_gw_centred * rstd) * inv_dim;
  for (int64_t i = 0; i < dim; ++i) {
    const float gw = kWeighted ? g[i] * weight[i] : g[i];
    const float xhat = (x[i] - mean) * rstd;
    dx[i] = rstd * (gw - mean_gw - xhat * mean_gw_xhat);
  }
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
  if (weight)
    backward_row<true>(geo, x + at, g + at, weight, mean, rstd, dx + at);
  else
    backward_row<false>(geo, x + at, g + at, nullptr, mean, rstd, dx + at);
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
