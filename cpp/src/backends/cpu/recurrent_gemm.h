// The recurrence's per-step products (h W_hh^T forward, d_gates W_hh backward, and an LSTM's
// W_hr) against a weight packed once per call: the BLAS would re-pack it on every step.
// Header-only: the recurrence kernels are its one user.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backends/cpu/kernel.h"

namespace gometal::recurrent_gemm {
namespace detail {

// Vectors of the widest width the build targets (the compiler's vector extension, so the
// same source is the portable path): 16 floats with AVX-512, else 8 (AVX2, NEON pairs).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRows = 8;  // 8 rows x 2 vectors = 16 accumulators of 32 registers
#else
constexpr int kLanes = 8;
constexpr int kRows = 6;  // 6 x 2 = 12 accumulators of 16 registers
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
constexpr int64_t kPanel = 2 * kLanes;  // columns per packed panel

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

inline int64_t panels(int64_t cols) { return (cols + kPanel - 1) / kPanel; }

// One operand pair of a product: A (rows of stride lda, k columns) and W's packed panels.
struct Source {
  const float* a = nullptr;
  int64_t lda = 0, k = 0;
  const float* packed = nullptr;
};

// Adds R rows of A times one panel of k rows to the accumulators.
template <int R>
inline void accumulate(const float* __restrict__ a, int64_t lda, int64_t k, const float* __restrict__ panel, Vec* lo,
                       Vec* hi) {
  for (int64_t kk = 0; kk < k; ++kk) {
    const Vec b0 = load(panel + kk * kPanel), b1 = load(panel + kk * kPanel + kLanes);
    for (int r = 0; r < R; ++r) {
      const float x = a[r * lda + kk];
      lo[r] += x * b0;
      hi[r] += x * b1;
    }
  }
}

// R rows of C over panel p: row r's two vectors stay in registers through both sources' k
// loops (the second's k is 0 when there is none).
template <int R>
inline void block(const Source& s1, const Source& s2, int64_t p, float* c, int64_t ldc, int64_t width) {
  Vec lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = Vec{};
  accumulate<R>(s1.a, s1.lda, s1.k, s1.packed + p * kPanel * s1.k, lo, hi);
  if (s2.k > 0) accumulate<R>(s2.a, s2.lda, s2.k, s2.packed + p * kPanel * s2.k, lo, hi);
  if (width == kPanel) {
    for (int r = 0; r < R; ++r) {
      store(c + r * ldc, lo[r]);
      store(c + r * ldc + kLanes, hi[r]);
    }
    return;
  }
  // The last panel of a width that is not a whole number of panels: its padding is dropped.
  float tmp[kPanel];
  for (int r = 0; r < R; ++r) {
    store(tmp, lo[r]);
    store(tmp + kLanes, hi[r]);
    std::memcpy(c + r * ldc, tmp, sizeof(float) * width);
  }
}

inline Source rows_from(const Source& s, int64_t r) { return {s.a + r * s.lda, s.lda, s.k, s.packed}; }

template <int R>
inline void rows_block(const Source& s1, const Source& s2, int64_t rows, int64_t p, float* c, int64_t ldc,
                       int64_t width) {
  if constexpr (R > 1) {
    if (rows < R) return rows_block<R - 1>(s1, s2, rows, p, c, ldc, width);
  }
  block<R>(s1, s2, p, c, ldc, width);
}

// Panels [p0, p1) of C (m rows) on the calling thread.
inline void multiply_panels(const Source& s1, const Source& s2, int64_t m, int64_t cols, float* c, int64_t ldc,
                            int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t col = p * kPanel, width = std::min(kPanel, cols - col);
    for (int64_t r = 0; r < m; r += kRows)
      rows_block<kRows>(rows_from(s1, r), rows_from(s2, r), std::min<int64_t>(kRows, m - r), p, c + r * ldc + col, ldc,
                        width);
  }
}

}  // namespace detail

using detail::Source;

// Floats a packed (k x cols) right-hand operand takes: cols rounded up to whole panels.
inline int64_t packed_floats(int64_t k, int64_t cols) { return detail::panels(cols) * detail::kPanel * k; }

namespace detail {

// Panels [p0, p1) of W^T packed, W row-major (cols x k). A block of 16 steps of k of a
// panel's rows is copied at a time: each row's 16 floats are read in one line and the block's
// writes stay in the L1 cache (twice as fast as a column at a time over the whole of k).
inline void pack_transposed_panels(const float* w, int64_t cols, int64_t k, float* packed, int64_t p0, int64_t p1) {
  constexpr int64_t kSteps = 16;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t col = p * kPanel, width = std::min(kPanel, cols - col);
    float* panel = packed + p * kPanel * k;
    if (width < kPanel) std::memset(panel, 0, sizeof(float) * kPanel * k);
    for (int64_t k0 = 0; k0 < k; k0 += kSteps) {
      const int64_t steps = std::min(kSteps, k - k0);
      for (int64_t j = 0; j < width; ++j) {
        const float* from = w + (col + j) * k + k0;
        float* to = panel + k0 * kPanel + j;
        for (int64_t kk = 0; kk < steps; ++kk) to[kk * kPanel] = from[kk];
      }
    }
  }
}

// Panels [p0, p1) of W packed, W row-major (k x cols): each panel row is one copy of a
// contiguous run of W's row.
inline void pack_panels(const float* w, int64_t k, int64_t cols, float* packed, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t col = p * kPanel, width = std::min(kPanel, cols - col);
    float* panel = packed + p * kPanel * k;
    if (width < kPanel) std::memset(panel, 0, sizeof(float) * kPanel * k);
    for (int64_t kk = 0; kk < k; ++kk) std::memcpy(panel + kk * kPanel, w + kk * cols + col, sizeof(float) * width);
  }
}

// Runs pack(p0, p1) over the panels of a (k x cols) operand, split over the pool's threads
// when it is large enough: every thread of the time loop waits on the whole pack.
template <class F>
inline void over_panels(ThreadPool& pool, int64_t k, int64_t cols, F&& pack) {
  constexpr int64_t kParallelFloats = 1 << 16;  // below this a task switch costs more than the copy
  const int64_t n_panels = panels(cols);
  const int tasks = cols * k < kParallelFloats ? 1 : static_cast<int>(std::min<int64_t>(pool.size(), n_panels));
  if (tasks <= 1) return pack(int64_t{0}, n_panels);
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(n_panels, tasks, task, 1, &lo, &hi);
    pack(lo, hi);
  });
}

}  // namespace detail

// Packs the product's right-hand operand W^T, W row-major (cols x k): for x W^T.
inline void pack_transposed(ThreadPool& pool, const float* w, int64_t cols, int64_t k, float* packed) {
  detail::over_panels(pool, k, cols, [&](int64_t p0, int64_t p1) {
    detail::pack_transposed_panels(w, cols, k, packed, p0, p1);
  });
}

// Packs the product's right-hand operand W, row-major (k x cols): for x W.
inline void pack(ThreadPool& pool, const float* w, int64_t k, int64_t cols, float* packed) {
  detail::over_panels(pool, k, cols, [&](int64_t p0, int64_t p1) { detail::pack_panels(w, k, cols, packed, p0, p1); });
}

// C (m x cols, row stride ldc) = A (m x k, row stride lda) times the packed operand, on the
// calling thread. Each row's sums run in one order whatever the rows around it: a row gives
// the same bits in a block of the batch as in the whole batch.
inline void multiply_here(const float* a, int64_t lda, int64_t m, int64_t k, const float* packed,
                          int64_t cols, float* c, int64_t ldc) {
  detail::multiply_panels({a, lda, k, packed}, {}, m, cols, c, ldc, 0, detail::panels(cols));
}

// C = A1 times packed1 plus A2 times packed2 (both m rows), as one product of [A1 A2] by the
// operands stacked: each C row's sums stay in registers across both, A1's terms first.
inline void multiply_pair_here(const Source& s1, const Source& s2, int64_t m, int64_t cols, float* c,
                               int64_t ldc) {
  detail::multiply_panels(s1, s2, m, cols, c, ldc, 0, detail::panels(cols));
}

// As multiply_pair_here (s2.k = 0: one operand alone), with the panels split over the pool's
// threads when the product is large enough to pay.
inline void multiply_pair(ThreadPool& pool, const Source& s1, const Source& s2, int64_t m, int64_t cols,
                          float* c, int64_t ldc) {
  constexpr int64_t kParallelMacs = 1 << 16;  // below this a task switch costs more than the work
  const int64_t n_panels = detail::panels(cols);
  const int tasks = static_cast<int>(
      m * cols * (s1.k + s2.k) < kParallelMacs ? 1 : std::min<int64_t>(pool.size(), n_panels));
  if (tasks <= 1) {
    detail::multiply_panels(s1, s2, m, cols, c, ldc, 0, n_panels);
    return;
  }
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(n_panels, tasks, task, 1, &lo, &hi);
    detail::multiply_panels(s1, s2, m, cols, c, ldc, lo, hi);
  });
}

// As multiply_here, with the panels split over the pool's threads when it pays.
inline void multiply(ThreadPool& pool, const float* a, int64_t lda, int64_t m, int64_t k, const float* packed, int64_t cols,
              float* c, int64_t ldc) {
  multiply_pair(pool, {a, lda, k, packed}, {}, m, cols, c, ldc);
}

}  // namespace gometal::recurrent_gemm
