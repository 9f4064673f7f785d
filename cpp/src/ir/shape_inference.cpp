// Shape and dtype inference: the common checks, then the op's own rule from its registry
// entry. Every rule names the op and the shapes it received.
#include "ir/shape_inference.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ir/op_registry.h"
#include "ir/ops/op_support.h"

namespace gometal {

using ops::fail;
using ops::norm_axis;

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db) out[i] = da;
    else if (da == 1) out[i] = db;
    else if (db == 1) out[i] = da;
    else fail(op, "shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast together");
  }
  return out;
}

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, size_t rank, std::string_view op) {
  std::vector<int64_t> out;
  if (axes.empty()) {
    for (size_t i = 0; i < rank; ++i) out.push_back(static_cast<int64_t>(i));
    return out;
  }
  for (int64_t a : axes) out.push_back(norm_axis(a, rank, op));
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end()) fail(op, "repeated axis in reduction");
  return out;
}

void infer_shape(Node& n, const std::vector<Node>& nodes) {
  const OpDef& def = op_def(n.op);
  const std::string_view op = def.name;
  if (def.has(trait::kLeaf)) fail(op, "leaves are created with their own builder call");
  const int arity = def.arity;
  if (arity >= 0 && static_cast<int>(n.inputs.size()) != arity)
    fail(op, "expects " + std::to_string(arity) + " inputs, got " + std::to_string(n.inputs.size()));
  if (arity < 0 && n.inputs.empty()) fail(op, "expects at least one input");
  for (int id : n.inputs)
    if (id < 0 || id >= static_cast<int>(nodes.size()))
      fail(op, "input id " + std::to_string(id) + " does not exist in this graph");
  n.dtype = DType::F32;
  def.infer(n, nodes);
}

}  // namespace gometal
