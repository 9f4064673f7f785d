// Moving elements without computing: reshape, transpose, broadcast, slice, concat, pad.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void reshape_shape(Node& n, const std::vector<Node>& nodes) {
  const Shape& s = input(n, nodes, 0).shape;
  const Shape& t = n.attrs.ints;
  // Symbolic dims must stay as they are, in order (their sizes are unknown until a plan is
  // compiled); the known dims may regroup.
  std::vector<int64_t> ss, st;
  const int64_t ps = known_product(s, &ss), pt = known_product(t, &st);
  if (ss != st)
    fail(name_of(n), "cannot reshape " + shape_str(s) + " into " + shape_str(t) +
                         ": symbolic dims must stay, in the same order");
  if (ps != pt)
    fail(name_of(n), "cannot reshape " + shape_str(s) + " into " + shape_str(t) + " (element counts differ)");
  n.dtype = input(n, nodes, 0).dtype;
  n.shape = t;
}

void transpose_shape(Node& n, const std::vector<Node>& nodes) {
  const Shape& s = input(n, nodes, 0).shape;
  auto perm = n.attrs.ints;
  if (perm.empty())
    for (size_t i = s.size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  if (perm.size() != s.size())
    fail(name_of(n), "perm of length " + std::to_string(perm.size()) + " for input of shape " + shape_str(s));
  std::vector<bool> seen(s.size(), false);
  n.shape.clear();
  for (auto& p : perm) {
    p = norm_axis(p, s.size(), name_of(n));
    if (seen[p]) fail(name_of(n), "perm repeats axis " + std::to_string(p));
    seen[p] = true;
    n.shape.push_back(s[p]);
  }
  n.attrs.ints = perm;
  n.dtype = input(n, nodes, 0).dtype;
}

void broadcast_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  n.dtype = x.dtype;
  const Shape& t = n.attrs.ints;
  if (broadcast_shapes(x.shape, t, name_of(n)) != t)
    fail(name_of(n), "cannot broadcast " + shape_str(x.shape) + " to " + shape_str(t));
  n.shape = t;
}

void slice_shape(Node& n, const std::vector<Node>& nodes) {
  const Shape& s = input(n, nodes, 0).shape;
  n.attrs.axis = norm_axis(n.attrs.axis, s.size(), name_of(n));
  const int64_t dim = s[n.attrs.axis];
  if (is_symbol(dim)) fail(name_of(n), "cannot slice along the symbolic dimension '" + symbol_name(dim) + "'");
  if (n.attrs.start < 0 || n.attrs.end > dim || n.attrs.start >= n.attrs.end)
    fail(name_of(n), "range [" + std::to_string(n.attrs.start) + ", " + std::to_string(n.attrs.end) +
                         ") is invalid for axis " + std::to_string(n.attrs.axis) + " of shape " + shape_str(s));
  n.shape = s;
  n.shape[n.attrs.axis] = n.attrs.end - n.attrs.start;
  n.dtype = input(n, nodes, 0).dtype;
}

void pad_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  n.dtype = x.dtype;
  n.attrs.axis = norm_axis(n.attrs.axis, x.shape.size(), name_of(n));
  if (is_symbol(x.shape[n.attrs.axis]))
    fail(name_of(n), "cannot pad along the symbolic dimension '" + symbol_name(x.shape[n.attrs.axis]) + "'");
  if (n.attrs.start < 0 || n.attrs.end < 0) fail(name_of(n), "pad amounts must be >= 0");
  n.shape = x.shape;
  n.shape[n.attrs.axis] += n.attrs.start + n.attrs.end;
}

void concat_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& first = input(n, nodes, 0);
  const Shape& s0 = first.shape;
  n.attrs.axis = norm_axis(n.attrs.axis, s0.size(), name_of(n));
  const auto axis = static_cast<size_t>(n.attrs.axis);
  n.shape = s0;
  if (is_symbol(s0[axis]))
    fail(name_of(n), "cannot concatenate along the symbolic dimension '" + symbol_name(s0[axis]) + "'");
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    const Node& other = input(n, nodes, i);
    const Shape& si = other.shape;
    bool ok = si.size() == s0.size();
    for (size_t d = 0; ok && d < s0.size(); ++d)
      if (d != axis && si[d] != s0[d]) ok = false;
    if (!ok)
      fail(name_of(n), "shapes " + shape_str(s0) + " and " + shape_str(si) + " differ outside axis " +
                           std::to_string(axis));
    if (other.dtype != first.dtype)
      fail(name_of(n), "inputs mix dtypes " + std::string(dtype_name(first.dtype)) + " and " +
                           std::string(dtype_name(other.dtype)));
    n.shape[axis] += si[axis];
  }
  n.dtype = first.dtype;
}

void vjp_layout(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const Shape xs = shape_of(gr, v.in[0]);
  switch (v.op) {
    case OpKind::Reshape: dx[0] = gr.reshape(g, xs); return;
    case OpKind::Transpose: {
      Attrs at;
      at.ints.resize(v.attrs.ints.size());
      for (size_t i = 0; i < v.attrs.ints.size(); ++i) at.ints[v.attrs.ints[i]] = static_cast<int64_t>(i);
      dx[0] = gr.op(OpKind::Transpose, {g}, at);
      return;
    }
    case OpKind::BroadcastTo: dx[0] = gr.reduce_to(g, xs); return;
    case OpKind::Slice: {
      Attrs at;
      at.axis = v.attrs.axis;
      at.start = v.attrs.start;
      at.end = xs[v.attrs.axis] - v.attrs.end;
      dx[0] = gr.op(OpKind::Pad, {g}, at);
      return;
    }
    case OpKind::Pad: {
      Attrs at;
      at.axis = v.attrs.axis;
      at.start = v.attrs.start;
      at.end = v.attrs.start + xs[v.attrs.axis];
      dx[0] = gr.op(OpKind::Slice, {g}, at);
      return;
    }
    case OpKind::Concat: {
      int64_t offset = 0;
      for (size_t i = 0; i < v.in.size(); ++i) {
        const int64_t len = shape_of(gr, v.in[i])[v.attrs.axis];
        Attrs at;
        at.axis = v.attrs.axis;
        at.start = offset;
        at.end = offset + len;
        dx[i] = gr.op(OpKind::Slice, {g}, at);
        offset += len;
      }
      return;
    }
    default: return;
  }
}

bool always_alias(const Graph&, const Node&) { return true; }

}  // namespace

std::vector<OpDef> layout_op_defs() {
  return {
      {OpKind::Reshape, "reshape", 1, {attr("shape", &Attrs::ints)}, reshape_shape, Gradient::Rule, vjp_layout, 0,
       nullptr, always_alias},
      {OpKind::Transpose, "transpose", 1, {attr("perm", &Attrs::ints)}, transpose_shape, Gradient::Rule, vjp_layout},
      // Elementwise: a broadcast reads each output element's source directly, so it fuses.
      {OpKind::BroadcastTo, "broadcast_to", 1, {attr("shape", &Attrs::ints)}, broadcast_shape, Gradient::Rule,
       vjp_layout, trait::kElementwise},
      {OpKind::Slice, "slice", 1, {attr("axis", &Attrs::axis), attr("start", &Attrs::start), attr("end", &Attrs::end)},
       slice_shape, Gradient::Rule, vjp_layout},
      {OpKind::Concat, "concat", -1, {attr("axis", &Attrs::axis)}, concat_shape, Gradient::Rule, vjp_layout},
      {OpKind::Pad, "pad", 1, {attr("axis", &Attrs::axis), attr("before", &Attrs::start), attr("after", &Attrs::end)},
       pad_shape, Gradient::Rule, vjp_layout},
  };
}

}  // namespace gometal
