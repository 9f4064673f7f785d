// Fused scaled dot-product attention on the CPU, blockwise with an online softmax (as flash
// attention): the forward pass keeps a running maximum and sum per query row, and the backward
// pass recomputes each block's probabilities from the saved log-sum-exp, so no (Tq, Tk)
// matrix is ever stored. Work is split over (N, H) and blocks of queries (or of keys).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "backends/cpu/kernel.h"
#include "backends/cpu/simd_paths.h"
#include "gometal/ir.h"

namespace gometal {

struct AttentionGeometry {
  int64_t n = 0, h = 0, tq = 0, tk = 0, d = 0;
  float scale = 1.0f;
  bool causal = false;
  float dropout = 0.0f;
  uint32_t stream = 0;           // the forward node's id: forward and backward draw one mask
  bool masked = false;
  int64_t out_stride = 0;  // between output rows: D, or D + 1 with the log-sum-exp packed after them
  int64_t lse_stride = 1;  // between log-sum-exps: 1, or D + 1 when packed in the output
  int64_t mask_stride[4] = {};  // per (N, H, Tq, Tk) dim; 0 where the mask broadcasts
  bool delta_from_out = false;  // attention_grad computes delta = rowsum(g * out) itself
  bool grad_time_major = false;  // attention_grad stores (N, T, 3, H, D), not (3, N, H, T, D)
  bool g_time_major = false;     // attention_grad reads g as (N, T, H, D), the output projection's layout

  int64_t g_row() const { return g_time_major ? h * d : d; }  // between rows of g
  std::optional<SimdPath> tiles = std::nullopt;  // the block products' register tiles; none: the BLAS

  int64_t heads() const { return n * h; }
};

// Rows of queries and of keys in one block: the scores of a block stay in a thread's cache.
inline constexpr int64_t kAttentionQueryBlock = 32;
inline constexpr int64_t kAttentionKeyBlock = 128;
static_assert(kAttentionKeyBlock % 16 == 0, "score rows are padded to 16 floats for the vector row passes");

// Floats of per-thread scratch every attention kernel needs, and of the workspace its threads
// share (operands transposed for the block products).
int64_t attention_scratch_floats(const AttentionGeometry& geo);
int64_t attention_shared_floats(const AttentionGeometry& geo);

// out (N, H, Tq, D) and/or lse (N, H, Tq), with the geometry's row strides; either may be null.
void attention_forward(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                       const float* v, const float* mask, float* out, float* lse);
// dq (N, H, Tq, D) from g = dL/dout, the saved lse and delta = rowsum(g * out).
void attention_grad_q(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                      const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                      float* dq);
// dk and dv stacked: (2, N, H, Tk, D).
void attention_grad_kv(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                       const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                       float* dkv);

// dq, dk and dv stacked, (3, N, H, T, D), in one pass per head (Tq = Tk). With
// geo.delta_from_out, `delta` is the forward output (N, H, T, D) instead, and each head's task
// computes its rows' rowsum(g * out) in the shared workspace: no pass of its own over g and out.
// With geo.grad_time_major the three are stored as (N, T, 3, H, D), the layout of the (N, T, 3 E)
// product that made q, k and v, where a transpose copied them; with geo.g_time_major g is read
// in place from (N, T, H, D), where a transpose copied it out of the (N, T, E) gradient.
void attention_grad(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                    const float* v, const float* g, const float* lse, const float* delta, const float* mask,
                    float* dqkv);

// The kernel of an attention, attention_lse or attention_grad* node.
std::unique_ptr<Kernel> make_attention_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes);

// An attention_lse that follows an attention of the same q, k, mask, causal flag and scale
// (the backward pass asks for the forward's log-sum-exps) need not recompute the scores: the
// forward kernel keeps them in a buffer of the plan, and the lse kernel copies them out.
struct SavedLse {
  std::vector<int> slot;  // per node id: its buffer in `buffers`, or -1
  std::vector<std::shared_ptr<std::vector<float>>> buffers;
};
// `step_of`: per node id, the index of the step that runs it (the plan's final order).
SavedLse plan_saved_lse(const Graph& g, const std::vector<int>& step_of, const std::vector<Shape>& shapes);
// The kernel of node `id` when it is one of a pair, else nullptr.
std::unique_ptr<Kernel> make_saved_lse_kernel(const Graph& g, int id, const SavedLse& saved, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes);

}  // namespace gometal
