#include "backends/cpu/passes/summed_products.h"

#include <algorithm>

#include "backends/cpu/gemm.h"

namespace gometal {
namespace {

// op(A) B with A (rows x m) read transposed and B (rows x n): the batch's matrices stacked.
struct StackedProductKernel final : Kernel {
  BufRef a, b, c;
  int64_t m = 0, n = 0, rows = 0;
  void run(const ExecContext& ctx) const override {
    gemm(*ctx.pool, true, false, m, n, rows, ctx.ptr(a), ctx.ptr(b), ctx.ptr(c));
  }
};

struct CopyPrefixKernel final : Kernel {
  BufRef x, y;
  int64_t count = 0;
  void run(const ExecContext& ctx) const override {
    const float* src = ctx.ptr(x);
    std::copy(src, src + count, ctx.ptr(y));
  }
};

bool is_foldable_product(const Graph& g, int id, const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  if (n.op != OpKind::MatMul || !n.attrs.transpose_a || n.attrs.transpose_b || n.dtype != DType::F32) return false;
  const Shape& a = shapes[n.inputs[0]];
  const Shape& b = shapes[n.inputs[1]];
  const Shape& out = shapes[id];
  const size_t rank = out.size();
  if (rank < 3 || a.size() != rank || b.size() != rank) return false;
  for (size_t d = 0; d + 2 < rank; ++d)
    if (a[d] != out[d] || b[d] != out[d]) return false;
  return a[rank - 2] == b[rank - 2];
}

// A sum of `product` over exactly its batch dims.
bool sums_the_batch(const Node& sum, const Shape& product) {
  if (sum.op != OpKind::Sum) return false;
  std::vector<int64_t> axes = sum.attrs.ints;
  std::sort(axes.begin(), axes.end());
  const int64_t batch_dims = static_cast<int64_t>(product.size()) - 2;
  if (static_cast<int64_t>(axes.size()) != batch_dims) return false;
  for (int64_t d = 0; d < batch_dims; ++d)
    if (axes[static_cast<size_t>(d)] != d) return false;
  return true;
}

}  // namespace

std::vector<int> find_summed_products(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                                      const std::vector<Shape>& shapes) {
  std::vector<int> product_of(g.size(), -1);
  std::vector<int> readers(g.size(), 0), only_reader(g.size(), -1);
  for (int id : s.order)
    for (int in : g.node(id).inputs) {
      const int root = s.alias_root[in];
      ++readers[root];
      only_reader[root] = in == root ? id : -1;  // a reader through an alias disqualifies
    }
  for (int out : fn.outputs) ++readers[s.alias_root[out]];
  for (int id : s.order) {
    if (!is_foldable_product(g, id, shapes) || readers[id] != 1 || only_reader[id] < 0) continue;
    const int sum = only_reader[id];
    if (sums_the_batch(g.node(sum), shapes[id])) product_of[sum] = id;
  }
  return product_of;
}

std::unique_ptr<Kernel> make_summed_product_kernel(const Graph& g, int id, const std::vector<int>& summed_product,
                                                   const MemoryPlan& mem, const std::vector<Shape>& shapes) {
  const bool folded_product = g.node(id).op == OpKind::MatMul &&
                              std::find(summed_product.begin(), summed_product.end(), id) != summed_product.end();
  if (folded_product) {
    const Node& n = g.node(id);
    const Shape& a = shapes[n.inputs[0]];
    const Shape& out = shapes[id];
    auto k = std::make_unique<StackedProductKernel>();
    k->a = mem.ref[n.inputs[0]];
    k->b = mem.ref[n.inputs[1]];
    k->c = mem.ref[id];
    k->m = out[out.size() - 2];
    k->n = out.back();
    k->rows = numel(a) / a.back();
    return k;
  }
  if (summed_product[static_cast<size_t>(id)] >= 0) {
    const Shape& out = shapes[id];
    auto k = std::make_unique<CopyPrefixKernel>();
    k->x = mem.ref[summed_product[static_cast<size_t>(id)]];
    k->y = mem.ref[id];
    k->count = numel(out);
    return k;
  }
  return nullptr;
}

}  // namespace gometal
