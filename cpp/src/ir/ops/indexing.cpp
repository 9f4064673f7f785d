// Indexing: gather (an embedding lookup: rows of a table picked by integer indices) and
// scatter_add (rows added into a table at integer indices), each the other's gradient, so an
// embedding's gradient never forms a one-hot matrix.
#include <algorithm>

#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void require_indices(const Node& n, const Node& indices) {
  if (indices.dtype != DType::I32)
    fail(name_of(n), "expects int32 indices, got " + std::string(dtype_name(indices.dtype)) + " of shape " +
                         shape_str(indices.shape) + "; cast them to int32");
  if (indices.shape.empty()) fail(name_of(n), "expects indices of rank 1 or more, got a scalar");
}

// (table (V, D), indices (...)) -> (..., D).
void gather_shape(Node& n, const std::vector<Node>& nodes) {
  const Node &table = input(n, nodes, 0), &indices = input(n, nodes, 1);
  require_float(n, table);
  require_indices(n, indices);
  if (table.shape.size() != 2 || is_symbol(table.shape[0]) || is_symbol(table.shape[1]))
    fail(name_of(n), "expects a table of shape (rows, dim) with known sizes, got " + shape_str(table.shape));
  n.dtype = table.dtype;
  n.shape = indices.shape;
  n.shape.push_back(table.shape[1]);
}

// (updates (..., D), indices (...)) -> (rows, D): row i sums the updates whose index is i.
void scatter_add_shape(Node& n, const std::vector<Node>& nodes) {
  const Node &updates = input(n, nodes, 0), &indices = input(n, nodes, 1);
  require_float(n, updates);
  require_indices(n, indices);
  if (n.attrs.depth <= 0) fail(name_of(n), "rows must be positive, got " + std::to_string(n.attrs.depth));
  const Shape& u = updates.shape;
  if (u.size() != indices.shape.size() + 1 || !std::equal(indices.shape.begin(), indices.shape.end(), u.begin()) ||
      is_symbol(u.back()))
    fail(name_of(n), "expects updates of shape indices + (dim,), got updates " + shape_str(u) + " and indices " +
                         shape_str(indices.shape));
  n.dtype = updates.dtype;
  n.shape = {n.attrs.depth, u.back()};
}

int scatter_add(Graph& gr, int updates, int indices, int64_t rows) {
  Attrs at;
  at.depth = rows;
  return gr.op(OpKind::ScatterAdd, {updates, indices}, at);
}

// Only the table gets a gradient: indices are integers, nothing flows back to them.
void vjp_gather(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  dx[0] = scatter_add(gr, g, v.in[1], shape_of(gr, v.in[0])[0]);
}

void vjp_scatter_add(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  dx[0] = gr.op(OpKind::Gather, {g, v.in[1]});
}

int one_hot(Graph& gr, int indices, int64_t depth) {
  Attrs at;
  at.depth = depth;
  return gr.op(OpKind::OneHot, {indices}, at);
}

// The references: one_hot(indices) @ table, and one_hot(indices)^T @ updates summed over
// the leading dims.
std::vector<int> decompose_gather(Graph& gr, int id) {
  const View v = view(gr, id);
  return {gr.matmul(one_hot(gr, v.in[1], shape_of(gr, v.in[0])[0]), v.in[0])};
}

std::vector<int> decompose_scatter_add(Graph& gr, int id) {
  const View v = view(gr, id);
  const int per_batch = gr.matmul(one_hot(gr, v.in[1], v.attrs.depth), v.in[0], true, false);
  const Shape s = shape_of(gr, per_batch);
  if (s.size() == 2) return {per_batch};
  std::vector<int64_t> lead;
  for (size_t i = 0; i + 2 < s.size(); ++i) lead.push_back(static_cast<int64_t>(i));
  return {gr.sum(per_batch, lead)};
}

}  // namespace

std::vector<OpDef> indexing_op_defs() {
  // Both check their indices when they run (an index outside the table raises, naming it),
  // so, like check_range, they run before every effect of their function.
  return {
      {OpKind::Gather, "gather", 2, {}, gather_shape, Gradient::Rule, vjp_gather, trait::kCheck, nullptr, nullptr,
       decompose_gather},
      {OpKind::ScatterAdd, "scatter_add", 2, {attr("rows", &Attrs::depth)}, scatter_add_shape, Gradient::Rule,
       vjp_scatter_add, trait::kCheck, nullptr, nullptr, decompose_scatter_add},
  };
}

}  // namespace gometal
