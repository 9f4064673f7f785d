// The backward pass of the fused attention: P = exp(S - lse) recomputed block by block, then
//   dP = (g v^T) * Z,  dS = P * (dP - delta),  dq = scale dS k,  dk = scale dS^T q,  dv = (P Z)^T g
// with Z the dropout factors. dq runs over blocks of queries and dk, dv over blocks of keys,
// so every output row has one writer and no thread needs a reduction.
#include <algorithm>

#include "backends/cpu/attention.h"
#include "backends/cpu/attention_blocks.h"
#include "backends/cpu/gemm.h"

namespace gometal {
namespace {

using namespace attention_blocks;
constexpr int64_t kBq = kAttentionQueryBlock, kBk = kAttentionKeyBlock;

struct GradInputs {
  const float *q, *k, *v, *g, *lse, *delta, *mask;
};

// For `rows` queries from i0 and `cols` keys from j0: p gets P (times Z when `weighted`,
// for dv), ds gets dS.
void recompute_block(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
                     int64_t i0, int64_t rows, int64_t j0, int64_t cols, bool weighted, float* p, float* ds,
                     float* z) {
  const int64_t d = geo.d;
  score_block(geo, head, i0, rows, j0, cols, in.q, in.k, in.mask, p);
  gemm_serial(false, true, rows, cols, d, head_of(in.g, head, geo.tq, d) + i0 * d, d,
              head_of(in.v, head, geo.tk, d) + j0 * d, d, 0.0f, ds, kBk);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = head * geo.tq + i0 + r;
    const float lse = in.lse[row], delta = in.delta[row];
    float *pr = p + r * kBk, *dr = ds + r * kBk;
    for (int64_t c = 0; c < cols; ++c) pr[c] = exp_nonpositive(pr[c] - lse);
    if (geo.dropout > 0.0f) {
      dropout_factors(ctx, geo, head, i0 + r, j0, cols, z);
      for (int64_t c = 0; c < cols; ++c) {
        dr[c] = pr[c] * (dr[c] * z[c] - delta);
        if (weighted) pr[c] *= z[c];
      }
    } else {
      for (int64_t c = 0; c < cols; ++c) dr[c] = pr[c] * (dr[c] - delta);
    }
  }
}

void grad_q_block(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
                  int64_t i0, float* dq, float* scratch) {
  const int64_t d = geo.d, rows = std::min(kBq, geo.tq - i0);
  float *p = scratch, *ds = p + kBq * kBk, *z = ds + kBq * kBk;
  float* out = dq + (head * geo.tq + i0) * d;
  std::fill(out, out + rows * d, 0.0f);
  const int64_t keys = visible_keys(geo, i0, rows);
  for (int64_t j0 = 0; j0 < keys; j0 += kBk) {
    const int64_t cols = std::min(kBk, keys - j0);
    recompute_block(ctx, geo, in, head, i0, rows, j0, cols, false, p, ds, z);
    gemm_serial(false, false, rows, d, cols, ds, kBk, head_of(in.k, head, geo.tk, d) + j0 * d, d, 1.0f, out, d);
  }
  for (int64_t i = 0; i < rows * d; ++i) out[i] *= geo.scale;
}

void grad_kv_block(const ExecContext& ctx, const AttentionGeometry& geo, const GradInputs& in, int64_t head,
                   int64_t j0, float* dkv, float* scratch) {
  const int64_t d = geo.d, cols = std::min(kBk, geo.tk - j0);
  float *p = scratch, *ds = p + kBq * kBk, *z = ds + kBq * kBk;
  float* dk = dkv + (head * geo.tk + j0) * d;
  float* dv = dk + geo.heads() * geo.tk * d;
  std::fill(dk, dk + cols * d, 0.0f);
  std::fill(dv, dv + cols * d, 0.0f);
  // Causal: queries before j0 see none of these keys.
  for (int64_t i0 = geo.causal ? j0 / kBq * kBq : 0; i0 < geo.tq; i0 += kBq) {
    const int64_t rows = std::min(kBq, geo.tq - i0);
    recompute_block(ctx, geo, in, head, i0, rows, j0, cols, true, p, ds, z);
    gemm_serial(true, false, cols, d, rows, p, kBk, head_of(in.g, head, geo.tq, d) + i0 * d, d, 1.0f, dv, d);
    gemm_serial(true, false, cols, d, rows, ds, kBk, head_of(in.q, head, geo.tq, d) + i0 * d, d, 1.0f, dk, d);
  }
  for (int64_t i = 0; i < cols * d; ++i) dk[i] *= geo.scale;
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

}  // namespace

void attention_grad_q(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                      const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                      float* dq) {
  const GradInputs in{q, k, v, g, lse, delta, mask};
  over_blocks(ctx, geo.heads(), geo.tq, kBq,
              [&](int64_t head, int64_t i0, float* scratch) { grad_q_block(ctx, geo, in, head, i0, dq, scratch); });
}

void attention_grad_kv(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                       const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                       float* dkv) {
  const GradInputs in{q, k, v, g, lse, delta, mask};
  over_blocks(ctx, geo.heads(), geo.tk, kBk,
              [&](int64_t head, int64_t j0, float* scratch) { grad_kv_block(ctx, geo, in, head, j0, dkv, scratch); });
}

}  // namespace gometal
