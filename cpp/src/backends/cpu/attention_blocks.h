// What the attention kernels share: one block of scores, the dropout factors of a row, and
// an exp the compiler vectorizes (the softmax's exps dominate once D is small).
#pragma once

#include <cstdint>

#include "backends/cpu/attention.h"
#include "backends/cpu/attention_tiles.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/vec8.h"
#include "backends/cpu/vector_math.h"

namespace gometal::attention_blocks {

// exp(x) for x <= 0 (scores minus their row maximum) within 2 ulp; exactly 0 below the
// smallest normal result, so masked scores (-inf) give 0. Branch-free, so loops vectorize.
inline float exp_nonpositive(float x) {
  const float clamped = x < -87.0f ? -87.0f : x;
  const vector_math::ExpParts parts = vector_math::exp_parts(clamped);
  const float two_n = vector_math::bits_to_float((vector_math::exp_exponent(parts.shifted) + 127) << 23);
  return x < -87.0f ? 0.0f : parts.poly * two_n;
}

// The largest of x[0..n), eight lanes at a time (a float max loop does not vectorize alone).
inline float row_max(const float* x, int64_t n) {
  float top = -__builtin_inff();
  int64_t c = 0;
  if (n >= 8) {
    Vec8 lanes = load8(x);
    for (c = 8; c + 8 <= n; c += 8) {
      const Vec8 v = load8(x + c);
      lanes = lanes > v ? lanes : v;
    }
    for (int i = 0; i < 8; ++i) top = top > lanes[i] ? top : lanes[i];
  }
  for (; c < n; ++c) top = top > x[c] ? top : x[c];
  return top;
}

// x[c] = exp(x[c] - m) for c < n; returns their sum (eight partial sums, then the tail).
inline float exp_and_sum(float* x, float m, int64_t n) {
  for (int64_t c = 0; c < n; ++c) x[c] = exp_nonpositive(x[c] - m);
  Vec8 lanes = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) lanes += load8(x + c);
  float sum = 0.0f;
  for (int i = 0; i < 8; ++i) sum += lanes[i];
  for (; c < n; ++c) sum += x[c];
  return sum;
}

inline const float* head_of(const float* base, int64_t head, int64_t rows, int64_t d) {
  return base + head * rows * d;
}

// s[r * kAttentionKeyBlock + c] = scale q_i . k_j + mask, -inf where causal hides key j from
// query i = i0 + r (j > i), for `rows` queries from i0 and `cols` keys from j0 of `head`; kt
// holds the keys transposed, (heads, D, Tk).
void score_block(const AttentionGeometry& geo, int64_t head, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                 const float* q, const float* kt, const float* mask, float* s);

// x (heads, t, d) into xt (heads, d, t). The block products read their right operands
// transposed this way: the BLAS (OpenBLAS) takes its fast path for small products of
// untransposed operands only, and a block's product is small.
void transpose_heads(ThreadPool& pool, const float* x, int64_t heads, int64_t t, int64_t d, float* xt);

// z[c] = 1 / (1 - p) where the forward pass kept weight (i, j0 + c), 0 where it dropped it:
// the element index of a (N, H, Tq, Tk) draw, so every kernel redraws the same mask.
void dropout_factors(const ExecContext& ctx, const AttentionGeometry& geo, int64_t head, int64_t i, int64_t j0,
                     int64_t cols, float* z);

// y[i] += x[i] for i < n, after a product written into scratch: the BLAS takes its fast path for
// small matrices only when it overwrites its output (beta = 0), so the kernels never accumulate in it.
inline void add_into(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// One block product (attention_tiles::BlockProduct) on the geometry's register tiles, or on the
// BLAS: a stored transposed when a_depth is not 1; a product that accumulates goes through
// `product` (rows x cols floats of scratch).
inline void block_product(const AttentionGeometry& geo, const attention_tiles::BlockProduct& p, float* product) {
  if (geo.tiles) return attention_tiles::multiply(*geo.tiles, p);
  const bool ta = p.a_depth != 1;
  const int64_t lda = ta ? p.a_depth : p.a_row;
  if (!p.accumulate) return gemm_serial(ta, false, p.rows, p.cols, p.depth, p.a, lda, p.b, p.ldb, 0.0f, p.c, p.ldc);
  gemm_serial(ta, false, p.rows, p.cols, p.depth, p.a, lda, p.b, p.ldb, 0.0f, product, p.cols);
  for (int64_t r = 0; r < p.rows; ++r) add_into(p.c + r * p.ldc, product + r * p.cols, p.cols);
}

// How many of the `cols` keys from j0 query i sees: a prefix of them (all unless causal).
inline int64_t visible_in_row(const AttentionGeometry& geo, int64_t i, int64_t j0, int64_t cols) {
  if (!geo.causal) return cols;
  const int64_t seen = i + 1 - j0;
  return seen < 0 ? 0 : seen < cols ? seen : cols;
}

// How many keys query rows [i0, i0 + rows) can see at most (all Tk unless causal).
inline int64_t visible_keys(const AttentionGeometry& geo, int64_t i0, int64_t rows) {
  if (!geo.causal) return geo.tk;
  return i0 + rows < geo.tk ? i0 + rows : geo.tk;
}

}  // namespace gometal::attention_blocks
