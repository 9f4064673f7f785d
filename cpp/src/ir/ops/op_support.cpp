#include "ir/ops/op_support.h"

#include <stdexcept>

namespace gometal::ops {

void fail(std::string_view op, const std::string& what) {
  throw std::invalid_argument("[" + std::string(op) + "] " + what);
}

int64_t norm_axis(int64_t axis, size_t rank, std::string_view op) {
  const int64_t r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r)
    fail(op, "axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + r : axis;
}

// Two dims are compatible for a reshape/broadcast when equal; a symbol never equals a number.
int64_t known_product(const Shape& s, std::vector<int64_t>* symbols) {
  int64_t p = 1;
  symbols->clear();
  for (int64_t d : s) {
    if (is_symbol(d)) symbols->push_back(d);
    else p *= d;
  }
  return p;
}

void require_float(const Node& n, const Node& in) {
  if (!is_float(in.dtype))
    fail(name_of(n), "expects float inputs (float32, float16 or bfloat16), got " + std::string(dtype_name(in.dtype)) +
                         " of shape " + shape_str(in.shape) + "; cast it first");
}

DType common_dtype(const Node& n, const std::vector<Node>& nodes) {
  const DType first = nodes[n.inputs[0]].dtype;
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    const DType other = nodes[n.inputs[i]].dtype;
    if (other != first)
      fail(name_of(n), "inputs mix dtypes " + std::string(dtype_name(first)) + " and " +
                           std::string(dtype_name(other)) + "; cast one to the other");
  }
  return first;
}

void require_dtype(const Node& n, const Node& in, DType want, std::string_view role) {
  if (in.dtype != want)
    fail(name_of(n), "expects " + std::string(role) + " of dtype " + std::string(dtype_name(want)) + ", got " +
                         std::string(dtype_name(in.dtype)));
}

View view(const Graph& gr, int id) {
  const Node& n = gr.node(id);
  return {n.op, n.inputs, n.attrs, n.shape};
}

int divide_by_count(Graph& gr, int value, const Shape& xs, const std::vector<int64_t>& axes) {
  int64_t count = 1;
  bool batch = false;
  for (int64_t a : axes) {
    if (is_symbol(xs[a])) batch = true;
    else count *= xs[a];
  }
  if (!batch) return gr.mul(value, k(gr, 1.0f / static_cast<float>(count)));
  // Each symbolic extent is counted when the plan runs: a vector of ones of that size,
  // summed; times the static part of the extent.
  int total = k(gr, static_cast<float>(count));
  for (int64_t a : axes)
    if (is_symbol(xs[a])) total = gr.mul(total, gr.sum(gr.broadcast_to(k(gr, 1), {xs[a]}), {}));
  return gr.div(value, total);
}

}  // namespace gometal::ops
