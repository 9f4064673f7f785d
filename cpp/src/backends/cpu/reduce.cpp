#include "backends/cpu/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace gometal {
namespace {

constexpr int64_t kParallelMin = 1 << 15;

float identity(ReduceKind k) {
  return k == ReduceKind::Max ? -std::numeric_limits<float>::infinity() : 0.0f;
}

// The sum of term(x[i]) over n contiguous values, in 32 partial sums: four independent
// vector chains hide the add latency.
template <class Term>
float lane_sum(const float* x, int64_t n, Term term) {
  constexpr int kLanes = 32;
  float acc[kLanes] = {};
  int64_t r = 0;
  for (; r + kLanes <= n; r += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += term(x[r + j]);
  for (; r < n; ++r) acc[0] += term(x[r]);
  float total = 0.0f;
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

float contiguous_sum(const float* x, int64_t n) {
  return lane_sum(x, n, [](float v) { return v; });
}

// The sum of term(x) over channel k of x (lead, kept, trail): row by row, in order.
template <class Term>
float channel_sum(const float* x, int64_t lead, int64_t kept, int64_t trail, int64_t k, Term term) {
  float acc = 0.0f;
  for (int64_t a = 0; a < lead; ++a) acc += lane_sum(x + (a * kept + k) * trail, trail, term);
  return acc;
}

// The larger of a and b, or NaN when either is: torch.amax and np.max propagate NaN.
inline float max_nan(float a, float b) { return (a < b || b != b) ? b : a; }

// Over independent lanes, without branches: one running maximum is a chain of dependent
// compares, and a compare-and-branch per element (NaN's test) mispredicts on every new
// maximum (the cross-entropy's maximum over each row of logits). A NaN anywhere gives NaN.
float contiguous_max(const float* x, int64_t n) {
  constexpr int kLanes = 16;
  constexpr float kLowest = -std::numeric_limits<float>::infinity();
  float lanes[kLanes];
  int32_t nan_seen[kLanes] = {};
  std::fill(lanes, lanes + kLanes, kLowest);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float v = x[i + l];
      lanes[l] = lanes[l] < v ? v : lanes[l];
      nan_seen[l] |= v != v;
    }
  float best = kLowest;
  int32_t nan = 0;
  for (; i < n; ++i) {
    best = best < x[i] ? x[i] : best;
    nan |= x[i] != x[i];
  }
  for (int l = 0; l < kLanes; ++l) {
    best = best < lanes[l] ? lanes[l] : best;
    nan |= nan_seen[l];
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : best;
}

// The first maximum's index, or the first NaN's (as torch.argmax and np.argmax): the maximum
// over lanes, then a scan that stops at the first element equal to it.
int64_t contiguous_argmax(const float* x, int64_t n) {
  if (n == 0) return 0;
  const float best = contiguous_max(x, n);
  int64_t i = 0;
  if (best != best) {
    while (x[i] == x[i]) ++i;
  } else {
    while (x[i] != best) ++i;
  }
  return i;
}

// Rows [o0, o1), columns [i0, i1) of an (outer, reduced, inner) reduction. Each output
// element is accumulated in a fixed order, whatever the split, so results are reproducible.
void reduce_block(ReduceKind kind, int64_t o0, int64_t o1, int64_t i0, int64_t i1, int64_t reduced,
                  int64_t inner, const float* x, float* y) {
  const float scale = kind == ReduceKind::Mean ? 1.0f / static_cast<float>(reduced) : 1.0f;
  const int64_t w = i1 - i0;
  for (int64_t o = o0; o < o1; ++o) {
    const float* xo = x + o * reduced * inner + i0;
    float* yo = y + o * inner + i0;
    if (kind == ReduceKind::Argmax && inner == 1) {
      yo[0] = static_cast<float>(contiguous_argmax(xo, reduced));
      continue;
    }
    if (kind == ReduceKind::Argmax) {
      for (int64_t i = 0; i < w; ++i) {
        float best = xo[i];
        int64_t arg = 0;
        // The first maximum, or the first NaN (as torch.argmax and np.argmax).
        for (int64_t r = 1; r < reduced; ++r)
          if (xo[r * inner + i] > best || (xo[r * inner + i] != xo[r * inner + i] && best == best)) {
            best = xo[r * inner + i];
            arg = r;
          }
        yo[i] = static_cast<float>(arg);
      }
      continue;
    }
    if (inner == 1) {
      yo[0] = kind == ReduceKind::Max ? contiguous_max(xo, reduced) : contiguous_sum(xo, reduced) * scale;
      continue;
    }
    std::copy(xo, xo + w, yo);
    for (int64_t r = 1; r < reduced; ++r) {
      const float* row = xo + r * inner;
      if (kind == ReduceKind::Max)
        for (int64_t i = 0; i < w; ++i) yo[i] = max_nan(yo[i], row[i]);
      else
        for (int64_t i = 0; i < w; ++i) yo[i] += row[i];
    }
    if (scale != 1.0f)
      for (int64_t i = 0; i < w; ++i) yo[i] *= scale;
  }
}

// Any axes: walk the input once, accumulating into the output index.
void reduce_general(ReduceKind kind, const ReduceGeometry& geo, const float* x, float* y) {
  const Shape& s = geo.in_shape;
  const size_t rank = s.size();
  std::vector<char> is_reduced(rank, 0);
  int64_t count = 1;
  for (int64_t a : geo.axes) {
    is_reduced[a] = 1;
    count *= s[a];
  }
  std::vector<int64_t> out_stride(rank, 0);
  int64_t st = 1, out_n = 1;
  for (size_t d = rank; d-- > 0;)
    if (!is_reduced[d]) {
      out_stride[d] = st;
      st *= s[d];
      out_n *= s[d];
    }
  std::fill(y, y + out_n, identity(kind));
  std::vector<int64_t> idx(rank, 0);
  const int64_t total = numel(s);
  int64_t out = 0;
  for (int64_t i = 0; i < total; ++i) {
    y[out] = kind == ReduceKind::Max ? max_nan(y[out], x[i]) : y[out] + x[i];
    for (size_t d = rank; d-- > 0;) {
      ++idx[d];
      out += out_stride[d];
      if (idx[d] < s[d]) break;
      out -= out_stride[d] * s[d];
      idx[d] = 0;
    }
  }
  if (kind == ReduceKind::Mean)
    for (int64_t i = 0; i < out_n; ++i) y[i] /= static_cast<float>(count);
}

}  // namespace

ReduceGeometry reduce_geometry(const Shape& in, const std::vector<int64_t>& axes) {
  ReduceGeometry geo;
  geo.in_shape = in;
  geo.axes = axes;
  // Size-1 dims can be counted on either side, so they never break contiguity.
  int64_t first = -1, last = -1;
  for (int64_t a : axes)
    if (in[a] != 1) {
      if (first < 0) first = a;
      last = a;
    }
  if (first < 0) {
    first = last = axes.empty() ? 0 : axes.front();
  }
  geo.contiguous = true;
  for (int64_t d = first; d <= last && !axes.empty(); ++d)
    if (in[d] != 1 && std::find(axes.begin(), axes.end(), d) == axes.end()) geo.contiguous = false;
  for (int64_t d = 0; d < static_cast<int64_t>(in.size()); ++d) {
    if (d < first) geo.outer *= in[d];
    else if (d > last) geo.inner *= in[d];
    else geo.reduced *= in[d];
  }
  if (axes.empty()) geo.contiguous = true;
  if (!geo.contiguous) {
    // Collapse dims into runs of reduced / kept (size-1 dims belong to either).
    std::vector<std::pair<bool, int64_t>> runs;
    for (int64_t d = 0; d < static_cast<int64_t>(in.size()); ++d) {
      if (in[d] == 1) continue;
      const bool reduced = std::find(axes.begin(), axes.end(), d) != axes.end();
      if (!runs.empty() && runs.back().first == reduced) runs.back().second *= in[d];
      else runs.emplace_back(reduced, in[d]);
    }
    if (runs.size() == 3 && runs[0].first && !runs[1].first && runs[2].first) {
      geo.sandwich = true;
      geo.lead = runs[0].second;
      geo.kept = runs[1].second;
      geo.trail = runs[2].second;
    }
  }
  return geo;
}

namespace {

// out[k] = reduce over a, b of x[a, k, b]; each output is summed by one thread in a fixed order.
void reduce_sandwich(ThreadPool& pool, ReduceKind kind, const ReduceGeometry& geo, const float* x, float* y) {
  const int64_t lead = geo.lead, kept = geo.kept, trail = geo.trail;
  const int tasks = lead * kept * trail < kParallelMin ? 1 : balanced_tasks(pool, kept);
  const float scale = kind == ReduceKind::Mean ? 1.0f / static_cast<float>(lead * trail) : 1.0f;
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t k0, k1;
    split_range(kept, tasks, task, 1, &k0, &k1);
    for (int64_t k = k0; k < k1; ++k) {
      if (kind != ReduceKind::Max) {
        y[k] = channel_sum(x, lead, kept, trail, k, [](float v) { return v; }) * scale;
        continue;
      }
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t a = 0; a < lead; ++a) best = max_nan(best, contiguous_max(x + (a * kept + k) * trail, trail));
      y[k] = best;
    }
  });
}

}  // namespace

void reduce(ThreadPool& pool, ReduceKind kind, const ReduceGeometry& geo, const float* x, float* y) {
  if (geo.sandwich && kind != ReduceKind::Argmax) {
    reduce_sandwich(pool, kind, geo, x, y);
    return;
  }
  if (!geo.contiguous) {
    reduce_general(kind, geo, x, y);
    return;
  }
  const int64_t outer = geo.outer, reduced = geo.reduced, inner = geo.inner;
  const int64_t work = outer * reduced * inner;
  const int threads = pool.size();
  if (threads == 1 || work < kParallelMin) {
    reduce_block(kind, 0, outer, 0, inner, reduced, inner, x, y);
    return;
  }
  if (outer >= threads) {
    pool.parallel_for(threads, [&](int part, int) {
      int64_t o0, o1;
      split_range(outer, threads, part, 1, &o0, &o1);
      reduce_block(kind, o0, o1, 0, inner, reduced, inner, x, y);
    });
    return;
  }
  // Few rows: split the inner dimension instead.
  pool.parallel_for(threads, [&](int part, int) {
    int64_t i0, i1;
    split_range(inner, threads, part, 16, &i0, &i1);
    if (i0 < i1) reduce_block(kind, 0, outer, i0, i1, reduced, inner, x, y);
  });
}

void channel_moments(ThreadPool& pool, int64_t lead, int64_t channels, int64_t trail, const float* x, float* y) {
  const float count = static_cast<float>(lead * trail);
  float* mean = y;
  float* var = y + channels;
  const int tasks = lead * channels * trail < kParallelMin ? 1 : balanced_tasks(pool, channels);
  // Two passes per channel (mean, then squared deviations from it) rather than sum and sum of
  // squares, which cancel badly when the mean is large; each channel is one thread's, summed
  // in a fixed order.
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t c0, c1;
    split_range(channels, tasks, task, 1, &c0, &c1);
    if (trail == 1) {
      // (batch, features): walk rows, the channels of a row side by side.
      std::fill(mean + c0, mean + c1, 0.0f);
      std::fill(var + c0, var + c1, 0.0f);
      for (int64_t a = 0; a < lead; ++a)
        for (int64_t c = c0; c < c1; ++c) mean[c] += x[a * channels + c];
      for (int64_t c = c0; c < c1; ++c) mean[c] /= count;
      for (int64_t a = 0; a < lead; ++a)
        for (int64_t c = c0; c < c1; ++c) {
          const float d = x[a * channels + c] - mean[c];
          var[c] += d * d;
        }
      for (int64_t c = c0; c < c1; ++c) var[c] /= count;
      return;
    }
    for (int64_t c = c0; c < c1; ++c) {
      const float m = channel_sum(x, lead, channels, trail, c, [](float v) { return v; }) / count;
      const float deviation = channel_sum(x, lead, channels, trail, c, [m](float v) {
        const float d = v - m;
        return d * d;
      });
      mean[c] = m;
      var[c] = deviation / count;
    }
  });
}

void reduce_samples(ReduceKind kind, const ReduceGeometry& geo, const float* x, float* y, int64_t n0, int64_t n1) {
  // Rows of the (outer, reduced, inner) view: each image holds outer / batch of them. inner
  // is 1 unless every reduced axis has size 1 (a (N, 1, C) sum over axis 1 keeps all C).
  const int64_t rows_per_sample = geo.outer / geo.in_shape[0];
  reduce_block(kind, n0 * rows_per_sample, n1 * rows_per_sample, 0, geo.inner, geo.reduced, geo.inner, x, y);
}

}  // namespace gometal
