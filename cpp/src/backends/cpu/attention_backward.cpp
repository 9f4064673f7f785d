// The backward pass of the fused attention: P = exp(S - lse) recomputed block by block, then
//   dP = (g v^T) * Z,  dS = P * (dP - delta),  dq = scale dS k,  dk = scale dS^T q,  dv = (P Z)^T g
// with Z the dropout factors. attention_grad (self-attention) runs one pass per head; apart,
// dq runs over blocks of queries and dk, dv over blocks of keys. Either way every output row
// has one writer and no thread needs a reduction.
#include <algorithm>
#include <tuple>
#include <utility>

#include "backends/cpu/attention.h"
#include "backends/cpu/attention_blocks.h"
#include "backends/cpu/gemm.h"

namespace gometal {
namespace {

using namespace attention_blocks;
constexpr int64_t kBq = kAttentionQueryBlock, kBk = kAttentionKeyBlock;

struct GradInputs {
  const float *q, *k, *v, *g, *lse, *delta, *mask;
  // transposed to (heads, D, T) in the shared workspace: k and v for dq, q and g for dk and dv
  const float *kt = nullptr, *vt = nullptr, *qt = nullptr, *gt = nullptr;
};

// Row `i` of head `head` of g: (N, H, T, D), or (N, T, H, D) read in place.
const float* g_rows(const AttentionGeometry& geo, const float* g, int64_t head, int64_t i) {
  if (!geo.g_time_major) return head_of(g, head, geo.tq, geo.d) + i * geo.d;
  return g + ((head / geo.h) * geo.tq + i) * geo.h * geo.d + (head % geo.h) * geo.d;
}

// For `rows` queries from i0 and `cols` keys from j0: p gets P (times Z when `weighted`, for
// dv), ds gets dS.
void recompute_block(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
                     int64_t i0, int64_t rows, int64_t j0, int64_t cols, bool weighted, float* p, float* ds,
                     float* z) {
  const int64_t d = geo.d;
  score_block(geo, head, i0, rows, j0, cols, in.q, in.kt, in.mask, p);
  const float* g = g_rows(geo, in.g, head, i0);
  block_product(geo, {g, geo.g_row(), 1, head_of(in.vt, head, d, geo.tk) + j0, geo.tk, ds, kBk, rows, cols, d, false},
                nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = head * geo.tq + i0 + r;
    const float lse = in.lse[row], delta = in.delta[row];
    float *pr = p + r * kBk, *dr = ds + r * kBk;
    if (geo.tiles && geo.dropout == 0.0f) {
      attention_tiles::probabilities_and_score_grads(*geo.tiles, pr, dr, lse, delta, cols);
      continue;
    }
    for (int64_t c = 0; c < cols; ++c) pr[c] = exp_nonpositive(pr[c] - lse);
    if (geo.dropout > 0.0f) {
      dropout_factors(ctx, geo, head, i0 + r, j0, cols, z);
      for (int64_t c = 0; c < cols; ++c) dr[c] = pr[c] * (dr[c] * z[c] - delta);
      if (weighted)
        for (int64_t c = 0; c < cols; ++c) pr[c] *= z[c];
    } else {
      for (int64_t c = 0; c < cols; ++c) dr[c] = pr[c] * (dr[c] - delta);
    }
  }
}

// The same block transposed, for dk and dv: pt[c * kBq + r] = P^T (times Z), dst = dS^T, for key
// j0 + c and query i0 + r. Products over the queries then read their operands untransposed,
// the BLAS's fast path for small products.
void recompute_block_transposed(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in,
                                int64_t head, int64_t i0, int64_t rows, int64_t j0, int64_t cols, float* pt,
                                float* dst, float* z) {
  const int64_t d = geo.d, b = head / geo.h, hh = head % geo.h;
  const float *k = head_of(in.k, head, geo.tk, d) + j0 * d, *v = head_of(in.v, head, geo.tk, d) + j0 * d;
  block_product(geo, {k, d, 1, head_of(in.qt, head, d, geo.tq) + i0, geo.tq, pt, kBq, cols, rows, d, false}, nullptr);
  block_product(geo, {v, d, 1, head_of(in.gt, head, d, geo.tq) + i0, geo.tq, dst, kBq, cols, rows, d, false}, nullptr);
  const float* lse = in.lse + head * geo.tq + i0;
  const float* delta = in.delta + head * geo.tq + i0;
  for (int64_t c = 0; c < cols; ++c) {
    float* pc = pt + c * kBq;
    // Causal: query i sees key j when i >= j, the rows from j - i0 on.
    const int64_t first = geo.causal ? std::clamp<int64_t>(j0 + c - i0, 0, rows) : 0;
    if (in.mask == nullptr) {
      for (int64_t r = first; r < rows; ++r) pc[r] = exp_nonpositive(pc[r] * geo.scale - lse[r]);
    } else {
      const int64_t* st = geo.mask_stride;
      const float* m = in.mask + b * st[0] + hh * st[1] + i0 * st[2] + (j0 + c) * st[3];
      for (int64_t r = first; r < rows; ++r) pc[r] = exp_nonpositive(pc[r] * geo.scale + m[r * st[2]] - lse[r]);
    }
    std::fill(pc, pc + first, 0.0f);
  }
  // Dropout: each query's factors are drawn along its keys (z: rows x kBk), applied down columns.
  const bool dropped = geo.dropout > 0.0f;
  if (dropped)
    for (int64_t r = 0; r < rows; ++r) {
      dropout_factors(ctx, geo, head, i0 + r, j0, cols, z + r * kBk);
      for (int64_t c = 0; c < cols; ++c) dst[c * kBq + r] *= z[r * kBk + c];
    }
  for (int64_t c = 0; c < cols; ++c) {
    float *pc = pt + c * kBq, *dc = dst + c * kBq;
    for (int64_t r = 0; r < rows; ++r) dc[r] = pc[r] * (dc[r] - delta[r]);
    if (dropped)
      for (int64_t r = 0; r < rows; ++r) pc[r] *= z[r * kBk + c];
  }
}

void grad_q_block(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
                  int64_t i0, float* dq, float* scratch) {
  const int64_t d = geo.d, rows = std::min(kBq, geo.tq - i0);
  float *p = scratch, *ds = p + kBq * kBk, *z = ds + kBq * kBk, *product = z + kBk;
  float* out = dq + (head * geo.tq + i0) * d;
  std::fill(out, out + rows * d, 0.0f);
  const int64_t keys = visible_keys(geo, i0, rows);
  for (int64_t j0 = 0; j0 < keys; j0 += kBk) {
    const int64_t cols = std::min(kBk, keys - j0);
    recompute_block(ctx, geo, in, head, i0, rows, j0, cols, false, p, ds, z);
    block_product(geo, {ds, kBk, 1, head_of(in.k, head, geo.tk, d) + j0 * d, d, out, d, rows, d, cols, true}, product);
  }
  for (int64_t i = 0; i < rows * d; ++i) out[i] *= geo.scale;
}

void grad_kv_block(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
                   int64_t j0, float* dkv, float* scratch) {
  const int64_t d = geo.d, cols = std::min(kBk, geo.tk - j0);
  float *p = scratch, *ds = p + kBq * kBk, *z = ds + kBq * kBk, *product = z + kBq * kBk;
  float* dk = dkv + (head * geo.tk + j0) * d;
  float* dv = dk + geo.heads() * geo.tk * d;
  std::fill(dk, dk + cols * d, 0.0f);
  std::fill(dv, dv + cols * d, 0.0f);
  // Causal: queries before j0 see none of these keys.
  for (int64_t i0 = geo.causal ? j0 / kBq * kBq : 0; i0 < geo.tq; i0 += kBq) {
    const int64_t rows = std::min(kBq, geo.tq - i0);
    recompute_block_transposed(ctx, geo, in, head, i0, rows, j0, cols, p, ds, z);
    const float *g = g_rows(geo, in.g, head, i0), *q = head_of(in.q, head, geo.tq, d) + i0 * d;
    block_product(geo, {p, kBq, 1, g, geo.g_row(), dv, d, cols, d, rows, true}, product);
    block_product(geo, {ds, kBq, 1, q, d, dk, d, cols, d, rows, true}, product);
  }
  for (int64_t i = 0; i < cols * d; ++i) dk[i] *= geo.scale;
}

// `rows` rows of d floats, `ld` apart, times `factor` (0: filled with zeros, whatever they held).
void scale_rows(float* x, int64_t rows, int64_t d, int64_t ld, float factor) {
  for (int64_t r = 0; r < rows; ++r, x += ld)
    if (factor == 0.0f) std::fill(x, x + d, 0.0f);
    else for (int64_t c = 0; c < d; ++c) x[c] *= factor;
}

// dq, dk and dv of one head in one pass: over blocks of keys, and for each over the queries that
// see them; the head's task is the only writer of its dq rows, so they accumulate in place.

void grad_head(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
               float* dqkv, float* scratch) {
  const int64_t d = geo.d, t = geo.tq, size = geo.heads() * t * d;
  float *p = scratch, *ds = p + kBq * kBk, *z = ds + kBq * kBk, *product = z + kBk;
  // Rows of dq, dk and dv `ld` apart: in their own (N, H, T, D) blocks, or interleaved (N, T, 3, H, D).
  const int64_t ld = geo.grad_time_major ? 3 * geo.h * d : d, part = geo.grad_time_major ? geo.h * d : size;
  float* dq = geo.grad_time_major ? dqkv + (head / geo.h) * t * ld + (head % geo.h) * d : dqkv + head * t * d;
  float *dk_head = dq + part, *dv_head = dk_head + part;
  scale_rows(dq, t, d, ld, 0.0f);
  for (int64_t j0 = 0; j0 < geo.tk; j0 += kBk) {
    const int64_t cols = std::min(kBk, geo.tk - j0);
    float *dk = dk_head + j0 * ld, *dv = dv_head + j0 * ld;
    const float* k = head_of(in.k, head, geo.tk, d) + j0 * d;
    scale_rows(dk, cols, d, ld, 0.0f);
    scale_rows(dv, cols, d, ld, 0.0f);
    for (int64_t i0 = geo.causal ? j0 / kBq * kBq : 0; i0 < t; i0 += kBq) {
      const int64_t rows = std::min(kBq, t - i0);
      // Causal: keys past the block's last query have P = dS = 0 there and add nothing.
      const int64_t seen = std::min(cols, visible_keys(geo, i0, rows) - j0);
      recompute_block(ctx, geo, in, head, i0, rows, j0, seen, true, p, ds, z);
      const float *g = g_rows(geo, in.g, head, i0), *q = head_of(in.q, head, t, d) + i0 * d;
      // P and dS read transposed (a_row 1): the products over the block's queries.
      block_product(geo, {p, 1, kBk, g, geo.g_row(), dv, ld, seen, d, rows, true}, product);
      block_product(geo, {ds, 1, kBk, q, d, dk, ld, seen, d, rows, true}, product);
      block_product(geo, {ds, kBk, 1, k, d, dq + i0 * ld, ld, rows, d, seen, true}, product);
    }
    scale_rows(dk, cols, d, ld, geo.scale);
  }
  scale_rows(dq, t, d, ld, geo.scale);
}

// delta[r] = rowsum(g[r] * out[r]) for `rows` rows of d floats (g's `g_row` apart), over
// sixteen partial sums so that the loop runs on full vectors.
void row_dots(const float* g, int64_t g_row, const float* out, int64_t rows, int64_t d, float* delta) {
  for (int64_t r = 0; r < rows; ++r, g += g_row, out += d) {
    float part[16] = {};
    int64_t c = 0;
    for (; c + 16 <= d; c += 16)
      for (int l = 0; l < 16; ++l) part[l] += g[c + l] * out[c + l];
    for (int l = 0; c + l < d; ++l) part[l] += g[c + l] * out[c + l];
    float sum = 0.0f;
    for (float x : part) sum += x;
    delta[r] = sum;
  }
}

template <class Block>
void over_blocks(const ExecContext& ctx, int64_t heads, int64_t length, int64_t block, Block&& run_block) {
  const int64_t blocks = (length + block - 1) / block, units = heads * blocks;
  const int tasks = balanced_tasks(*ctx.pool, units);
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    int64_t u0, u1;
    split_range(units, tasks, task, 1, &u0, &u1);
    for (int64_t u = u0; u < u1; ++u) run_block(u / blocks, (u % blocks) * block, ctx.thread_scratch(thread));
  });
}

// Two operands, each (heads, t, D), transposed into the shared workspace for the block products.
std::pair<const float*, const float*> transposed_pair(const ExecContext& ctx, const AttentionGeometry& geo,
                                                      const float* a, const float* b, int64_t t) {
  float *at = ctx.shared, *bt = at + geo.heads() * geo.d * t;
  transpose_heads(*ctx.pool, a, geo.heads(), t, geo.d, at);
  transpose_heads(*ctx.pool, b, geo.heads(), t, geo.d, bt);
  return {at, bt};
}

}  // namespace

void attention_grad(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                    const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                    float* dqkv) {
  GradInputs in{q, k, v, g, lse, delta, mask};
  std::tie(in.kt, in.vt) = transposed_pair(ctx, geo, k, v, geo.tk);
  // delta_from_out: `delta` holds the forward output; the rows' deltas go after kt and vt.
  const int64_t t = geo.tq, d = geo.d;
  float* deltas = geo.delta_from_out ? ctx.shared + 2 * geo.heads() * d * std::max(geo.tq, geo.tk) : nullptr;
  if (deltas) in.delta = deltas;
  const int tasks = balanced_tasks(*ctx.pool, geo.heads());
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    int64_t h0, h1;
    split_range(geo.heads(), tasks, task, 1, &h0, &h1);
    for (int64_t head = h0; head < h1; ++head) {
      if (deltas) row_dots(g_rows(geo, g, head, 0), geo.g_row(), delta + head * t * d, t, d, deltas + head * t);
      grad_head(ctx, geo, in, head, dqkv, ctx.thread_scratch(thread));
    }
  });
}

void attention_grad_q(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                      const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                      float* dq) {
  GradInputs in{q, k, v, g, lse, delta, mask};
  std::tie(in.kt, in.vt) = transposed_pair(ctx, geo, k, v, geo.tk);
  over_blocks(ctx, geo.heads(), geo.tq, kBq,
              [&](int64_t head, int64_t i0, float* scratch) { grad_q_block(ctx, geo, in, head, i0, dq, scratch); });
}

void attention_grad_kv(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                       const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                       float* dkv) {
  GradInputs in{q, k, v, g, lse, delta, mask};
  std::tie(in.qt, in.gt) = transposed_pair(ctx, geo, q, g, geo.tq);
  over_blocks(ctx, geo.heads(), geo.tk, kBk,
              [&](int64_t head, int64_t j0, float* scratch) { grad_kv_block(ctx, geo, in, head, j0, dkv, scratch); });
}

}  // namespace gometal
