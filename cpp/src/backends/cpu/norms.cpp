#include "backends/cpu/norms.h"

#include <cmath>

namespace gometal {
namespace {

// Rows below this many floats in all run on one thread.
constexpr int64_t kParallelFloats = 1 << 14;

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

constexpr int kLanes = 8;

// Sum of f(c) for c < n in double, over eight independent partial sums: one running sum is
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

}  // namespace

void norm_forward(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* weight, const float* bias,
                  float* y) {
  for_rows(pool, geo, [&](int64_t r) {
    const float* xr = x + r * geo.dim;
    float* yr = y + r * geo.dim;
    float mean, rstd;
    row_statistics(geo, xr, &mean, &rstd);
    for (int64_t c = 0; c < geo.dim; ++c) {
      float v = (xr[c] - mean) * rstd;
      if (weight) v *= weight[c];
      if (bias) v += bias[c];
      yr[c] = v;
    }
  });
}

void norm_backward(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g, const float* weight,
                   float* dx) {
  for_rows(pool, geo, [&](int64_t r) {
    const float* xr = x + r * geo.dim;
    const float* gr = g + r * geo.dim;
    float* dr = dx + r * geo.dim;
    float mean, rstd;
    row_statistics(geo, xr, &mean, &rstd);
    auto gw_at = [&](int64_t c) {
      return weight ? static_cast<double>(gr[c]) * weight[c] : static_cast<double>(gr[c]);
    };
    const double sum_gw = geo.centre ? lane_sum(geo.dim, gw_at) : 0.0;
    const double sum_gw_xhat = lane_sum(geo.dim, [&](int64_t c) { return gw_at(c) * ((xr[c] - mean) * rstd); });
    const float inv_dim = 1.0f / static_cast<float>(geo.dim);
    const float mean_gw = geo.centre ? static_cast<float>(sum_gw) * inv_dim : 0.0f;
    const float mean_gw_xhat = static_cast<float>(sum_gw_xhat) * inv_dim;
    for (int64_t c = 0; c < geo.dim; ++c) {
      const float gw = weight ? gr[c] * weight[c] : gr[c];
      const float xhat = (xr[c] - mean) * rstd;
      dr[c] = rstd * (gw - mean_gw - xhat * mean_gw_xhat);
    }
  });
}

}  // namespace gometal
