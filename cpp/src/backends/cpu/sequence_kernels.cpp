#include "backends/cpu/sequence_kernels.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cpu/batched_gemm.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/indexing.h"
#include "backends/cpu/norms.h"
#include "backends/cpu/passes/summed_products.h"

namespace gometal {
namespace {

// Column sums below this many floats run on one thread.
constexpr int64_t kParallelSumFloats = 1 << 15;

struct BatchedMatMulKernel final : Kernel {
  BufRef a, b, c;
  BatchedGemm geo;
  int64_t lda = 0;  // A's row stride when A is a slice read in place (its rows fold into one product)
  void run(const ExecContext& ctx) const override {
    if (lda == 0) return batched_gemm(*ctx.pool, geo, ctx.ptr(a), ctx.ptr(b), ctx.ptr(c));
    const int64_t rows = static_cast<int64_t>(geo.a_offset.size()) * geo.m;
    gemm_strided(*ctx.pool, false, geo.tb, rows, geo.n, geo.k, ctx.ptr(a), lda, ctx.ptr(b), geo.tb ? geo.k : geo.n,
                 ctx.ptr(c));
  }
};

// Checks the indices on the calling thread first: a bad index raises before anything is read.
struct GatherKernel final : Kernel {
  BufRef table, indices, y;
  Shape index_shape;
  int64_t rows = 0, dim = 0;
  void run(const ExecContext& ctx) const override {
    const int32_t* idx = ctx.iptr(indices);
    check_indices(idx, index_shape, rows, "gather");
    gather_rows(*ctx.pool, ctx.ptr(table), dim, idx, numel(index_shape), ctx.ptr(y));
  }
};

struct ScatterAddKernel final : Kernel {
  BufRef updates, indices, y;
  Shape index_shape;
  int64_t rows = 0, dim = 0, ld = 0;  // ld: the updates' row stride
  void run(const ExecContext& ctx) const override {
    const int32_t* idx = ctx.iptr(indices);
    check_indices(idx, index_shape, rows, "scatter_add");
    scatter_add_rows(*ctx.pool, ctx.ptr(updates), dim, ld, idx, numel(index_shape), rows, ctx.ptr(y));
  }
};

// out (width,) = the sums of the columns of a (rows x width) matrix whose rows lie ld floats
// apart, row by row in order (the bits of the reduce kernel's sum over the leading axes).
struct StridedColumnSumKernel final : Kernel {
  BufRef x, y;
  int64_t rows = 0, width = 0, ld = 0;
  void run(const ExecContext& ctx) const override {
    const float* src = ctx.ptr(x);
    float* out = ctx.ptr(y);
    const auto columns = [&](int64_t c0, int64_t c1) {
      if (rows == 0) return std::fill(out + c0, out + c1, 0.0f);
      std::copy(src + c0, src + c1, out + c0);
      for (int64_t r = 1; r < rows; ++r) {
        const float* row = src + r * ld;
        for (int64_t c = c0; c < c1; ++c) out[c] += row[c];
      }
    };
    // Blocks of 128 columns: each row's part is 8 cache lines, enough for the prefetcher.
    const int tasks = rows * width < kParallelSumFloats ? 1 : balanced_tasks(*ctx.pool, (width + 127) / 128);
    if (tasks <= 1) return columns(0, width);
    ctx.pool->parallel_for(tasks, [&](int task, int) {
      int64_t c0, c1;
      split_range(width, tasks, task, 128, &c0, &c1);
      if (c0 < c1) columns(c0, c1);
    });
  }
};

// Forward: (x, [weight], [bias]); gradient: (x, g, [weight]). Absent inputs are Region::None.
// With `stats`, the forward pass keeps each row's statistics there and a gradient reads them.
struct NormKernel final : Kernel {
  BufRef x, g, weight, bias, y;
  NormGeometry geo;
  bool gradient = false;
  std::shared_ptr<std::vector<float>> stats;
  void run(const ExecContext& ctx) const override {
    const float* w = weight.region == Region::None ? nullptr : ctx.ptr(weight);
    float* kept = stats ? stats->data() : nullptr;
    if (gradient) return norm_backward(*ctx.pool, geo, ctx.ptr(x), ctx.ptr(g), w, ctx.ptr(y), kept);
    const float* b = bias.region == Region::None ? nullptr : ctx.ptr(bias);
    norm_forward(*ctx.pool, geo, ctx.ptr(x), w, b, ctx.ptr(y), kept);
  }
};

// (x, g) -> (2, dim): the sums over rows of g xhat and of g, through per-block partials.
struct NormAffineGradKernel final : Kernel {
  BufRef x, g, y;
  NormGeometry geo;
  std::shared_ptr<std::vector<float>> stats;  // the forward pass's row statistics, or null
  int64_t shared_floats() const override { return norm_affine_grad_blocks(geo) * 2 * geo.dim; }
  void run(const ExecContext& ctx) const override {
    const float* saved = stats ? stats->data() : nullptr;
    norm_affine_grad(*ctx.pool, geo, ctx.ptr(x), ctx.ptr(g), ctx.shared, ctx.ptr(y), saved);
  }
};

// A norm gradient and its affine gradient in one pass: (x, g, [weight]) -> dx and (2, dim).
struct NormGradPairKernel final : Kernel {
  BufRef x, g, weight, dx, sums;
  NormGeometry geo;
  std::shared_ptr<std::vector<float>> stats;
  int64_t shared_floats() const override { return norm_affine_grad_blocks(geo) * 2 * geo.dim; }
  void run(const ExecContext& ctx) const override {
    const float* w = weight.region == Region::None ? nullptr : ctx.ptr(weight);
    norm_backward_and_affine_grad(*ctx.pool, geo, ctx.ptr(x), ctx.ptr(g), w, ctx.ptr(dx), ctx.shared,
                                  ctx.ptr(sums), stats->data());
  }
};

}  // namespace

std::unique_ptr<Kernel> make_sequence_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                             const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  auto in = [&](size_t i) { return mem.ref[n.inputs[i]]; };
  auto in_shape = [&](size_t i) -> const Shape& { return shapes[n.inputs[i]]; };
  switch (n.op) {
    case OpKind::MatMul: {
      if (in_shape(0).size() == 2 && in_shape(1).size() == 2) return nullptr;
      auto k = std::make_unique<BatchedMatMulKernel>();
      int64_t lda = 0;
      k->a = read_in_place(g, n.inputs[0], mem, shapes, &lda);
      k->b = in(1);
      k->c = mem.ref[id];
      k->geo = batched_gemm_geometry(in_shape(0), in_shape(1), shapes[id], n.attrs.transpose_a, n.attrs.transpose_b);
      if (in(0).region == Region::None) {
        if (!k->geo.a_is_one_block)
          throw std::logic_error("[cpu] matmul: A's columns read in place do not fold into one product");
        k->lda = lda;
      }
      return k;
    }
    case OpKind::Gather: {
      auto k = std::make_unique<GatherKernel>();
      k->table = in(0);
      k->indices = in(1);
      k->y = mem.ref[id];
      k->index_shape = in_shape(1);
      k->rows = in_shape(0)[0];
      k->dim = in_shape(0)[1];
      return k;
    }
    case OpKind::ScatterAdd: {
      auto k = std::make_unique<ScatterAddKernel>();
      k->updates = read_in_place(g, n.inputs[0], mem, shapes, &k->ld);
      k->indices = in(1);
      k->y = mem.ref[id];
      k->index_shape = in_shape(1);
      k->rows = n.attrs.depth;
      k->dim = in_shape(0).back();
      return k;
    }
    case OpKind::LayerNorm: case OpKind::RmsNorm: case OpKind::LayerNormGrad: case OpKind::RmsNormGrad: {
      auto k = std::make_unique<NormKernel>();
      k->gradient = n.op == OpKind::LayerNormGrad || n.op == OpKind::RmsNormGrad;
      k->x = in(0);
      k->y = mem.ref[id];
      const size_t affine = k->gradient ? 2 : 1;
      if (k->gradient) k->g = in(1);
      if (n.inputs.size() > affine) k->weight = in(affine);
      if (!k->gradient && n.inputs.size() > 2) k->bias = in(2);
      const Shape& xs = in_shape(0);
      k->geo.dim = xs.back();
      k->geo.rows = numel(xs) / k->geo.dim;
      k->geo.eps = n.attrs.eps;
      k->geo.centre = n.op == OpKind::LayerNorm || n.op == OpKind::LayerNormGrad;
      return k;
    }
    case OpKind::LayerNormAffineGrad: case OpKind::RmsNormAffineGrad: {
      auto k = std::make_unique<NormAffineGradKernel>();
      k->x = in(0);
      k->g = in(1);
      k->y = mem.ref[id];
      k->geo.dim = in_shape(0).back();
      k->geo.rows = numel(in_shape(0)) / k->geo.dim;
      k->geo.eps = n.attrs.eps;
      k->geo.centre = n.op == OpKind::LayerNormAffineGrad;
      return k;
    }
    case OpKind::Sum: {
      // A sum of a slice left without a buffer (read_slices_in_place) adds its columns in place.
      const int x = n.inputs[0];
      if (mem.ref[x].region != Region::None || g.node(x).op != OpKind::Slice || !sums_leading_axes(n, in_shape(0)))
        return nullptr;
      auto k = std::make_unique<StridedColumnSumKernel>();
      k->x = read_in_place(g, x, mem, shapes, &k->ld);
      k->y = mem.ref[id];
      k->width = in_shape(0).back();
      k->rows = numel(in_shape(0)) / std::max<int64_t>(k->width, 1);
      return k;
    }
    default:
      return nullptr;
  }
}

std::unique_ptr<Kernel> make_saved_norm_stats_kernel(const Graph& g, int id, const Fusion& f, const MemoryPlan& mem,
                                                    const std::vector<Shape>& shapes, std::string* line) {
  if (f.norm_stats_slot.empty() || f.norm_stats_slot[static_cast<size_t>(id)] < 0) return nullptr;
  const SavedNormStats& saved = f.norm_stats[static_cast<size_t>(f.norm_stats_slot[static_cast<size_t>(id)])];
  const bool keeps = saved.forward == id;
  // A gradient scheduled before its forward pass computes the statistics itself.
  if (!keeps && f.step_of[static_cast<size_t>(saved.forward)] >= f.step_of[static_cast<size_t>(id)]) return nullptr;
  std::unique_ptr<Kernel> kernel = make_sequence_kernel(g, id, mem, shapes);
  const std::vector<int>& step = f.steps[static_cast<size_t>(f.step_of[static_cast<size_t>(id)])].nodes;
  auto* norm = dynamic_cast<NormKernel*>(kernel.get());
  if (norm != nullptr && step.size() == 2) {  // paired with its affine gradient (fusion.cpp)
    auto pair = std::make_unique<NormGradPairKernel>();
    pair->x = norm->x;
    pair->g = norm->g;
    pair->weight = norm->weight;
    pair->dx = norm->y;
    pair->sums = mem.ref[static_cast<size_t>(step[1])];
    pair->geo = norm->geo;
    pair->stats = saved.values;
    *line += " (row statistics read)";
    return pair;
  }
  if (norm != nullptr) norm->stats = saved.values;
  else if (auto* affine = dynamic_cast<NormAffineGradKernel*>(kernel.get())) affine->stats = saved.values;
  else return nullptr;
  *line += keeps ? " (row statistics kept)" : " (row statistics read)";
  return kernel;
}

}  // namespace gometal
