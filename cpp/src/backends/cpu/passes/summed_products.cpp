#include "backends/cpu/passes/summed_products.h"

#include <algorithm>
#include <stdexcept>

#include "backends/cpu/gemm.h"
#include "backends/cpu/passes/dense_epilogues.h"

namespace gometal {
namespace {

// op(A) B with A (rows x m) read transposed and B (rows x n): the batch's matrices stacked.
// A slice read in place has rows lda (ldb) floats apart; such products keep to the BLAS.
struct StackedProductKernel final : Kernel {
  BufRef a, b, c;
  int64_t m = 0, n = 0, rows = 0, lda = 0, ldb = 0;
  void run(const ExecContext& ctx) const override {
    if (lda == m && ldb == n) gemm(*ctx.pool, true, false, m, n, rows, ctx.ptr(a), ctx.ptr(b), ctx.ptr(c));
    else gemm_strided(*ctx.pool, true, false, m, n, rows, ctx.ptr(a), lda, ctx.ptr(b), ldb, ctx.ptr(c));
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

// A slice along the last axis of a value some step computes, in a step of its own.
bool last_axis_slice_step(const Graph& g, const Schedule& s, const Fusion& f, int id,
                          const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  if (n.op != OpKind::Slice || n.dtype != DType::F32 || n.attrs.axis + 1 != static_cast<int64_t>(shapes[id].size()))
    return false;
  const int at = f.step_of[id];
  const int source = s.alias_root[n.inputs[0]];
  return at >= 0 && !f.steps[at].fused && f.steps[at].nodes == std::vector<int>{id} && f.step_of[source] >= 0 &&
         f.materialized[source];
}

// Whether `reader`, alone in its unfused step but for slices already joined there, can read
// `slice` in place: a folded product (either operand), a scatter_add's updates, a batched
// product's rows of A against a 2-D B, a sum over all leading axes, or a recurrence's x.
bool reads_in_place(const Graph& g, const Fusion& f, int reader, int slice, const std::vector<char>& folded,
                    const std::vector<Shape>& shapes) {
  const int at = f.step_of[reader];
  if (at < 0 || f.steps[at].fused || f.steps[at].nodes.front() != reader) return false;
  for (size_t i = 1; i < f.steps[at].nodes.size(); ++i)
    if (g.node(f.steps[at].nodes[i]).op != OpKind::Slice) return false;
  const Node& n = g.node(reader);
  if (folded[reader]) return true;
  switch (n.op) {
    case OpKind::ScatterAdd:
      return n.inputs[0] == slice && n.inputs[1] != slice;
    case OpKind::Sum:
      return sums_leading_axes(n, shapes[slice]);
    case OpKind::Recurrence:  // x, projected inside the time loop
      return n.attrs.project_input && n.inputs[0] == slice &&
             std::count(n.inputs.begin(), n.inputs.end(), slice) == 1;
    case OpKind::MatMul: {
      const Shape& a = shapes[n.inputs[0]];
      // A product that could run on packed stored weights keeps its own kernel (and copy).
      return n.inputs[0] == slice && n.inputs[1] != slice && !n.attrs.transpose_a && n.dtype == DType::F32 &&
             a.size() >= 3 && shapes[n.inputs[1]].size() == 2 && !runs_on_packed_weights(g, reader, shapes, true);
    }
    default:
      return false;
  }
}

}  // namespace

bool sums_leading_axes(const Node& sum, const Shape& x) {
  if (sum.op != OpKind::Sum || sum.dtype != DType::F32) return false;
  std::vector<int64_t> axes = sum.attrs.ints;
  std::sort(axes.begin(), axes.end());
  if (x.size() < 2 || axes.size() + 1 != x.size()) return false;
  for (size_t d = 0; d < axes.size(); ++d)
    if (axes[d] != static_cast<int64_t>(d)) return false;
  return true;
}

BufRef read_in_place(const Graph& g, int value, const MemoryPlan& mem, const std::vector<Shape>& shapes, int64_t* ld) {
  *ld = shapes[value].empty() ? 1 : shapes[value].back();
  const Node& n = g.node(value);
  if (mem.ref[value].region != Region::None || n.op != OpKind::Slice ||
      n.attrs.axis + 1 != static_cast<int64_t>(shapes[value].size()))
    return mem.ref[value];
  BufRef columns = mem.ref[n.inputs[0]];
  if (columns.region != Region::Arena)
    throw std::logic_error("[cpu] a slice read in place does not lie in the arena");
  *ld = shapes[n.inputs[0]].back();
  columns.offset += n.attrs.start * dtype_size(n.dtype);
  return columns;
}

void read_slices_in_place(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          const std::vector<int>& summed_product, Fusion& f) {
  const ValueReaders value = value_readers(g, s, fn);
  std::vector<char> folded(g.size(), 0);
  for (int product : summed_product)
    if (product >= 0) folded[product] = 1;
  std::vector<char> dropped(f.steps.size(), 0);
  for (int id : s.order) {
    const std::vector<int>& readers = value.readers[id];
    if (!last_axis_slice_step(g, s, f, id, shapes) || value.returned[id] || readers.empty()) continue;
    if (!std::all_of(readers.begin(), readers.end(),
                     [&](int r) { return reads_in_place(g, f, r, id, folded, shapes); }))
      continue;
    // The slice joins each reader's step, unmaterialised: every such step reads the source
    // through it, so the source lives until the last of them and passes that order steps
    // (sample tiling hoists steps) keep each after the source's.
    for (int r : readers) f.steps[f.step_of[r]].nodes.push_back(id);
    dropped[f.step_of[id]] = 1;
    f.materialized[id] = 0;
  }
  drop_steps(dropped, f);
}

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
    k->a = read_in_place(g, n.inputs[0], mem, shapes, &k->lda);
    k->b = read_in_place(g, n.inputs[1], mem, shapes, &k->ldb);
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
