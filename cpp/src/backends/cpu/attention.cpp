#include "backends/cpu/attention.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <stdexcept>

#include "backends/cpu/attention_blocks.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/passes/fusion.h"
#include "runtime/rng.h"

namespace gometal {

namespace attention_blocks {

void score_block(const AttentionGeometry& geo, int64_t head, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                 const float* q, const float* kt, const float* mask, float* s) {
  constexpr int64_t ld = kAttentionKeyBlock;
  const float* queries = head_of(q, head, geo.tq, geo.d) + i0 * geo.d;
  block_product(geo, {queries, geo.d, 1, head_of(kt, head, geo.d, geo.tk) + j0, geo.tk, s, ld, rows, cols, geo.d, false},
                nullptr);
  const int64_t b = head / geo.h, hh = head % geo.h;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    const int64_t seen = visible_in_row(geo, i0 + r, j0, cols);  // the keys after them are hidden
    if (mask == nullptr) {
      for (int64_t c = 0; c < seen; ++c) row[c] *= geo.scale;
    } else {
      const int64_t* st = geo.mask_stride;
      const float* m = mask + b * st[0] + hh * st[1] + (i0 + r) * st[2] + j0 * st[3];
      if (st[3] == 1) {
        for (int64_t c = 0; c < seen; ++c) row[c] = row[c] * geo.scale + m[c];
      } else {
        for (int64_t c = 0; c < seen; ++c) row[c] = row[c] * geo.scale + m[c * st[3]];
      }
    }
    // -inf up to the padding the vector row passes read (kAttentionKeyBlock is a multiple of it).
    const int64_t padded = (cols + attention_tiles::kRowPadding - 1) / attention_tiles::kRowPadding *
                           attention_tiles::kRowPadding;
    std::fill(row + seen, row + padded, -INFINITY);
  }
}

namespace {

// An 8 x 8 block through registers: eight rows read and eight written eight floats at a time
// (the element-by-element loop gathered with a stride of d).
inline void transpose_8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  Vec8 r[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(src + i * src_stride);
  Vec8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * j + 1] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  // u[k] and u[k + 4] hold columns k and k + 4 of rows 0-3 and of rows 4-7.
  for (int k = 0; k < 4; ++k) {
    store8(dst + k * dst_stride, __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11));
    store8(dst + (k + 4) * dst_stride, __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15));
  }
}

}  // namespace

void transpose_heads(ThreadPool& pool, const float* x, int64_t heads, int64_t t, int64_t d, float* xt) {
  const int tasks = balanced_tasks(pool, heads);
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t h0, h1;
    split_range(heads, tasks, task, 1, &h0, &h1);
    const int64_t t8 = t / 8 * 8, d8 = d / 8 * 8;
    for (int64_t h = h0; h < h1; ++h) {
      const float* src = x + h * t * d;
      float* dst = xt + h * d * t;
      for (int64_t i = 0; i < t8; i += 8)
        for (int64_t c = 0; c < d8; c += 8) transpose_8x8(src + i * d + c, d, dst + c * t + i, t);
      // The edges that do not fill a block.
      for (int64_t i = 0; i < t; ++i)
        for (int64_t c = i < t8 ? d8 : 0; c < d; ++c) dst[c * t + i] = src[i * d + c];
    }
  });
}

void dropout_factors(const ExecContext& ctx, const AttentionGeometry& geo, int64_t head, int64_t i, int64_t j0,
                     int64_t cols, float* z) {
  philox_uniform(ctx.seed, geo.stream, ctx.rng_step, (head * geo.tq + i) * geo.tk + j0, cols, z);
  const float kept = 1.0f / (1.0f - geo.dropout);
  for (int64_t c = 0; c < cols; ++c) z[c] = z[c] >= geo.dropout ? kept : 0.0f;
}

}  // namespace attention_blocks

namespace {

using namespace attention_blocks;
constexpr int64_t kBq = kAttentionQueryBlock, kBk = kAttentionKeyBlock;

// One block of query rows: running maximum m and sum l per row; the accumulated output is
// rescaled by exp(m_old - m_new) whenever a key block raises a row's maximum.
void forward_block(const ExecContext& ctx, const AttentionGeometry& geo, int64_t head, int64_t i0, const float* q,
                   const float* kt, const float* v, const float* mask, float* out, float* lse, float* scratch) {
  const int64_t d = geo.d, rows = std::min(kBq, geo.tq - i0);
  float *s = scratch, *acc = s + kBq * kBk, *m = acc + kBq * d, *l = m + kBq, *z = l + kBq, *product = z + kBk;
  std::fill(m, m + rows, -INFINITY);
  std::fill(l, l + rows, 0.0f);
  std::fill(acc, acc + rows * d, 0.0f);
  const int64_t keys = visible_keys(geo, i0, rows);
  for (int64_t j0 = 0; j0 < keys; j0 += kBk) {
    const int64_t cols = std::min(kBk, keys - j0);
    score_block(geo, head, i0, rows, j0, cols, q, kt, mask, s);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = s + r * kBk;
      const int64_t seen = visible_in_row(geo, i0 + r, j0, cols);
      const float top = geo.tiles ? attention_tiles::row_max(*geo.tiles, row, seen) : row_max(row, seen);
      const float new_m = std::max(m[r], top);
      if (new_m == -INFINITY) {  // every key so far is masked for this row
        std::fill(row, row + cols, 0.0f);
        continue;
      }
      const float alpha = exp_nonpositive(m[r] - new_m);
      const float sum =
          geo.tiles ? attention_tiles::exp_and_sum(*geo.tiles, row, new_m, seen) : exp_and_sum(row, new_m, seen);
      l[r] = l[r] * alpha + sum;
      std::fill(row + seen, row + cols, 0.0f);
      m[r] = new_m;
      if (out == nullptr) continue;
      if (alpha != 1.0f)
        for (float *a = acc + r * d, *e = a + d; a < e; ++a) *a *= alpha;
      if (geo.dropout > 0.0f) {
        dropout_factors(ctx, geo, head, i0 + r, j0, cols, z);
        for (int64_t c = 0; c < cols; ++c) row[c] *= z[c];
      }
    }
    if (out != nullptr) {
      const float* values = head_of(v, head, geo.tk, d) + j0 * d;
      block_product(geo, {s, kBk, 1, values, d, acc, d, rows, d, cols, true}, product);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = head * geo.tq + i0 + r;
    if (out != nullptr) {
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;  // a row with every key masked stays 0
      for (int64_t c = 0; c < d; ++c) out[row * geo.out_stride + c] = acc[r * d + c] * inv;
    }
    if (lse != nullptr) lse[row * geo.lse_stride] = std::max(m[r], -FLT_MAX) + std::log(std::max(l[r], FLT_MIN));
  }
}

struct AttentionKernel final : Kernel {
  OpKind op;
  AttentionGeometry geo;
  BufRef in[7];
  BufRef y;
  std::shared_ptr<std::vector<float>> saved_lse;  // a later attention_lse reads these
  int64_t scratch_floats() const override { return attention_scratch_floats(geo); }
  int64_t shared_floats() const override { return attention_shared_floats(geo); }
  void run(const ExecContext& ctx) const override {
    auto at = [&](int i) -> const float* { return in[i].region == Region::None ? nullptr : ctx.ptr(in[i]); };
    switch (op) {
      case OpKind::Attention: {
        float* out = ctx.ptr(y);
        float* lse = geo.lse_stride > 1 ? out + geo.d : saved_lse ? saved_lse->data() : nullptr;
        return attention_forward(ctx, geo, at(0), at(1), at(2), at(3), out, lse);
      }
      case OpKind::AttentionLse:
        if (saved_lse) return (void)std::copy(saved_lse->begin(), saved_lse->end(), ctx.ptr(y));
        return attention_forward(ctx, geo, at(0), at(1), nullptr, at(2), nullptr, ctx.ptr(y));
      case OpKind::AttentionGradQ:
        return attention_grad_q(ctx, geo, at(0), at(1), at(2), at(3), at(4), at(5), at(6), ctx.ptr(y));
      case OpKind::AttentionGradKV:
        return attention_grad_kv(ctx, geo, at(0), at(1), at(2), at(3), at(4), at(5), at(6), ctx.ptr(y));
      default: return attention_grad(ctx, geo, at(0), at(1), at(2), at(3), at(4), at(5), at(6), ctx.ptr(y));
    }
  }
};

}  // namespace

int64_t attention_shared_floats(const AttentionGeometry& geo) {
  return 2 * geo.heads() * geo.d * std::max(geo.tq, geo.tk) + (geo.delta_from_out ? geo.heads() * geo.tq : 0);
}

int64_t attention_scratch_floats(const AttentionGeometry& geo) {
  // forward: scores, output rows, m, l, factors, a product; backward: P, dS, a block of
  // factors, a product
  return 3 * kBq * kBk + kBq * geo.d + 2 * kBq + kBk + kBk * geo.d;
}

void attention_forward(const ExecContext& ctx, const AttentionGeometry& geo, const float* q, const float* k,
                       const float* v, const float* mask, float* out, float* lse) {
  const int64_t blocks = (geo.tq + kBq - 1) / kBq, units = geo.heads() * blocks;
  float* kt = ctx.shared;
  transpose_heads(*ctx.pool, k, geo.heads(), geo.tk, geo.d, kt);
  const int tasks = balanced_tasks(*ctx.pool, units);
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    int64_t u0, u1;
    split_range(units, tasks, task, 1, &u0, &u1);
    for (int64_t u = u0; u < u1; ++u)
      forward_block(ctx, geo, u / blocks, (u % blocks) * kBq, q, kt, v, mask, out, lse, ctx.thread_scratch(thread));
  });
}

namespace {

// The forward output `out` when the plan merged delta = sum(g * out, axis 3) into this
// attention_grad's step (fuse_elementwise; the sum has no buffer), else -1.
int delta_source(const Graph& g, const Node& grad, const MemoryPlan& mem) {
  const int delta = grad.inputs[5];
  if (mem.ref[delta].region != Region::None) return -1;
  const Node& sum = g.node(delta);
  const Node& mul = g.node(sum.inputs[0]);
  if (sum.op != OpKind::Sum || mul.op != OpKind::Mul || mem.ref[sum.inputs[0]].region != Region::None)
    throw std::logic_error("[cpu] attention_grad: its delta has no buffer but is not a merged sum(g * out)");
  return mul.inputs[0] == grad.inputs[3] ? mul.inputs[1] : mul.inputs[0];
}

}  // namespace

std::unique_ptr<Kernel> make_attention_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  auto kernel = std::make_unique<AttentionKernel>();
  kernel->op = n.op;
  kernel->y = mem.ref[id];
  const Shape &qs = shapes[n.inputs[0]], &ks = shapes[n.inputs[1]];
  AttentionGeometry& geo = kernel->geo;
  geo = {qs[0], qs[1], qs[2], ks[2], qs[3]};
  geo.scale = n.attrs.scale > 0.0f ? n.attrs.scale : 1.0f / std::sqrt(static_cast<float>(geo.d));
  geo.causal = n.attrs.causal;
  geo.dropout = n.attrs.dropout;
  geo.tiles = attention_tiles::choose_path();
  const bool packed = n.op == OpKind::Attention && n.attrs.with_lse;
  geo.out_stride = packed ? geo.d + 1 : geo.d;
  geo.lse_stride = packed ? geo.d + 1 : 1;
  geo.stream = static_cast<uint32_t>(n.op == OpKind::Attention || n.attrs.stream < 0 ? id : n.attrs.stream);
  // Inputs by role: attention (q, k, v, mask), lse (q, k, mask), the gradients (q, k, v, g,
  // lse, delta, mask); the mask is the last optional one.
  const size_t mask_at = n.op == OpKind::Attention ? 3 : n.op == OpKind::AttentionLse ? 2 : 6;
  for (size_t i = 0; i < n.inputs.size(); ++i) kernel->in[i] = mem.ref[n.inputs[i]];
  const int out = n.op == OpKind::AttentionGrad ? delta_source(g, n, mem) : -1;
  if (out >= 0) {
    geo.delta_from_out = true;
    kernel->in[5] = mem.ref[out];
  }
  if (n.op == OpKind::AttentionGrad && kernel->in[3].region == Region::None) {
    // The merged transpose of g into heads: read g from the (N, T, E) gradient in place.
    if (!time_major_attention_cotangent(g, id, shapes))
      throw std::logic_error("[cpu] attention_grad: g has no buffer, and no merged transpose to read it through");
    geo.g_time_major = true;
    kernel->in[3] = mem.ref[g.node(n.inputs[3]).inputs[0]];
  }
  if (n.op == OpKind::AttentionGrad && kernel->y.region == Region::None) {
    // The merged transpose back to (N, T, 3, H, D) is the step's value (fuse_elementwise).
    int transpose = -1;
    for (int i = 0; i < g.size() && transpose < 0; ++i)
      if (!shapes[i].empty() && time_major_attention_grad(g, id, i, shapes)) transpose = i;
    if (transpose < 0 || mem.ref[transpose].region == Region::None)
      throw std::logic_error("[cpu] attention_grad: no buffer, and no merged transpose to store into");
    geo.grad_time_major = true;
    kernel->y = mem.ref[transpose];
  }
  if (n.inputs.size() > mask_at) {
    geo.masked = true;
    const Shape& ms = shapes[n.inputs[mask_at]];
    const Shape scores = {geo.n, geo.h, geo.tq, geo.tk};
    int64_t stride = 1;
    for (size_t i = 0; i < 4; ++i) {
      const size_t dim = 3 - i;
      const int64_t size = i < ms.size() ? ms[ms.size() - 1 - i] : 1;
      geo.mask_stride[dim] = size == 1 && scores[dim] != 1 ? 0 : stride;
      stride *= size;
    }
  }
  return kernel;
}

namespace {

// The inputs an attention and an attention_lse share: q, k and the optional mask.
bool same_scores(const Node& attention, const Node& lse) {
  const auto& a = attention.inputs;
  const auto& l = lse.inputs;
  const bool a_masked = a.size() > 3, l_masked = l.size() > 2;
  return a[0] == l[0] && a[1] == l[1] && a_masked == l_masked && (!a_masked || a[3] == l[2]) &&
         attention.attrs.causal == lse.attrs.causal && attention.attrs.scale == lse.attrs.scale &&
         !attention.attrs.with_lse;
}

}  // namespace

SavedLse plan_saved_lse(const Graph& g, const std::vector<int>& step_of, const std::vector<Shape>& shapes) {
  SavedLse saved;
  saved.slot.assign(g.size(), -1);
  for (int l = 0; l < g.size(); ++l) {
    const Node& lse = g.node(l);
    if (lse.op != OpKind::AttentionLse || step_of[l] < 0) continue;
    for (int a = 0; a < g.size(); ++a) {
      const Node& attention = g.node(a);
      if (attention.op != OpKind::Attention || step_of[a] < 0 || step_of[a] >= step_of[l] || saved.slot[a] >= 0 ||
          !same_scores(attention, lse))
        continue;
      saved.slot[a] = saved.slot[l] = static_cast<int>(saved.buffers.size());
      saved.buffers.push_back(std::make_shared<std::vector<float>>(static_cast<size_t>(numel(shapes[l]))));
      break;
    }
  }
  return saved;
}

std::unique_ptr<Kernel> make_saved_lse_kernel(const Graph& g, int id, const SavedLse& saved, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes) {
  if (saved.slot[id] < 0) return nullptr;
  auto kernel = make_attention_kernel(g, id, mem, shapes);
  static_cast<AttentionKernel&>(*kernel).saved_lse = saved.buffers[static_cast<size_t>(saved.slot[id])];
  return kernel;
}

}  // namespace gometal
