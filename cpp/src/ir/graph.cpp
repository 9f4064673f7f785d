// The graph builder: leaves, primitives (verified on insertion) and builder sugar.
#include <cstring>
#include <stdexcept>

#include "gometal/ir.h"
#include "ir/shape_inference.h"

namespace gometal {
namespace {

// Inputs may hold symbols (the batch, -1, or a named one such as the sequence length) in any
// dim; variables hold fixed shapes.
void check_shape(const Shape& shape, std::string_view what, const std::string& name, bool batch_allowed) {
  for (size_t i = 0; i < shape.size(); ++i) {
    const bool ok = shape[i] > 0 || (is_symbol(shape[i]) && batch_allowed);
    if (!ok)
      throw std::invalid_argument("[" + std::string(what) + "] '" + name + "' has invalid shape " +
                                  shape_str(shape) +
                                  (batch_allowed ? ": dims must be positive, or symbols (-1 for the batch)"
                                                 : ": dims must be positive (a variable has no symbolic dims)"));
  }
}

}  // namespace

int Graph::push(Node n) {
  nodes_.push_back(std::move(n));
  return static_cast<int>(nodes_.size()) - 1;
}

void Graph::check_unique(OpKind kind, const std::string& name) const {
  if (name.empty())
    throw std::invalid_argument("[" + std::string(op_name(kind)) + "] a name is required");
  if (find_named(kind, name) >= 0)
    throw std::invalid_argument("[" + std::string(op_name(kind)) + "] the name '" + name +
                                "' is already used in this graph");
}

int Graph::find_named(OpKind kind, std::string_view name) const {
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].op == kind && nodes_[i].attrs.name == name) return static_cast<int>(i);
  return -1;
}

int Graph::input(const std::string& name, const Shape& shape, DType dtype) {
  check_unique(OpKind::Input, name);
  check_shape(shape, "input", name, true);
  Node n{OpKind::Input, {}, {}, shape, dtype, {}};
  n.attrs.name = name;
  return push(std::move(n));
}

int Graph::variable(const std::string& name, const Shape& shape, DType dtype) {
  check_unique(OpKind::Variable, name);
  check_shape(shape, "variable", name, false);
  Node n{OpKind::Variable, {}, {}, shape, dtype, {}};
  n.attrs.name = name;
  return push(std::move(n));
}

int Graph::scalar(const std::string& name, float initial) {
  check_unique(OpKind::Scalar, name);
  Node n{OpKind::Scalar, {}, {}, {}, DType::F32, {}};
  n.attrs.name = name;
  n.attrs.value = initial;
  return push(std::move(n));
}

int Graph::constant(float value) { return constant({}, {value}); }

int Graph::constant(const Shape& shape, std::vector<float> values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  const int id = constant(shape, DType::F32, std::move(bytes));
  if (values.size() == 1) nodes_[id].attrs.value = values[0];
  return id;
}

int Graph::constant(const Shape& shape, DType dtype, std::vector<uint8_t> bytes) {
  for (int64_t d : shape)
    if (d <= 0)
      throw std::invalid_argument("[constant] invalid shape " + shape_str(shape));
  if (static_cast<int64_t>(bytes.size()) != numel(shape) * dtype_size(dtype))
    throw std::invalid_argument("[constant] " + std::to_string(bytes.size()) + " bytes for " +
                                std::string(dtype_name(dtype)) + " of shape " + shape_str(shape) + " (" +
                                std::to_string(numel(shape) * dtype_size(dtype)) + " expected)");
  Node n{OpKind::Constant, {}, {}, shape, dtype, std::move(bytes)};
  return push(std::move(n));
}

int Graph::op(OpKind kind, std::vector<int> inputs, Attrs attrs) {
  Node n{kind, std::move(inputs), std::move(attrs), {}, DType::F32, {}};
  infer_shape(n, nodes_);
  return push(std::move(n));
}

int Graph::op(std::string_view kind, std::vector<int> inputs, Attrs attrs) {
  return op(op_from_name(kind), std::move(inputs), std::move(attrs));
}

const Node& Graph::node(int id) const {
  if (id < 0 || id >= size())
    throw std::invalid_argument("[graph] node id " + std::to_string(id) + " does not exist (graph has " +
                                std::to_string(size()) + " nodes)");
  return nodes_[id];
}

int Graph::sum(int a, std::vector<int64_t> axes, bool keepdims) {
  Attrs at;
  at.ints = std::move(axes);
  at.keepdims = keepdims;
  return op(OpKind::Sum, {a}, at);
}

int Graph::mean(int a, std::vector<int64_t> axes, bool keepdims) {
  Attrs at;
  at.ints = std::move(axes);
  at.keepdims = keepdims;
  return op(OpKind::Mean, {a}, at);
}

int Graph::max(int a, std::vector<int64_t> axes, bool keepdims) {
  Attrs at;
  at.ints = std::move(axes);
  at.keepdims = keepdims;
  return op(OpKind::Max, {a}, at);
}

int Graph::reshape(int a, Shape shape) {
  if (node(a).shape == shape) return a;
  Attrs at;
  at.ints = std::move(shape);
  return op(OpKind::Reshape, {a}, at);
}

int Graph::broadcast_to(int a, Shape shape) {
  if (node(a).shape == shape) return a;
  Attrs at;
  at.ints = std::move(shape);
  return op(OpKind::BroadcastTo, {a}, at);
}

int Graph::matmul(int a, int b, bool transpose_a, bool transpose_b) {
  Attrs at;
  at.transpose_a = transpose_a;
  at.transpose_b = transpose_b;
  return op(OpKind::MatMul, {a, b}, at);
}

void Graph::redirect(int from, int to) {
  const Node& a = node(from);
  const Node& b = node(to);
  if (a.shape != b.shape || a.dtype != b.dtype)
    throw std::logic_error("[graph] redirect from " + shape_str(a.shape) + " to " + shape_str(b.shape));
  for (int id = 0; id < size(); ++id)
    if (id != to)
      for (int& in : nodes_[id].inputs)
        if (in == from) in = to;
}

int Graph::reduce_to(int g, const Shape& target) {
  const Shape gs = node(g).shape;
  if (gs == target) return g;
  const size_t lead = gs.size() - target.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < gs.size(); ++i) {
    if (i < lead) axes.push_back(static_cast<int64_t>(i));
    else if (target[i - lead] == 1 && gs[i] != 1) axes.push_back(static_cast<int64_t>(i));
  }
  int s = g;
  if (axes.size() > 1 && axes.front() == 0 && gs[0] == kBatch) {
    // Per image first, then across the batch: the per-image sums can run inside
    // sample-tiled runs while each image is in cache (a bias gradient, say).
    s = sum(sum(g, std::vector<int64_t>(axes.begin() + 1, axes.end()), true), {0}, true);
  } else if (!axes.empty()) {
    s = sum(g, axes, true);
  }
  return reshape(s, target);
}

}  // namespace gometal
