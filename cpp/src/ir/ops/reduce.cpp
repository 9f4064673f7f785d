// Reductions over axes, argmax, and batch-norm's per-channel moments.
#include <algorithm>

#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void reduce_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  require_float(n, x);
  n.dtype = x.dtype;
  const Shape& s = x.shape;
  const auto axes = normalize_axes(n.attrs.ints, s.size(), name_of(n));
  n.attrs.ints = axes;
  n.shape.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    const bool reduced = std::find(axes.begin(), axes.end(), static_cast<int64_t>(i)) != axes.end();
    if (!reduced) n.shape.push_back(s[i]);
    else if (n.attrs.keepdims) n.shape.push_back(1);
  }
}

void argmax_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  require_float(n, x);
  n.attrs.axis = norm_axis(n.attrs.axis, x.shape.size(), name_of(n));
  n.shape = x.shape;
  n.shape.erase(n.shape.begin() + n.attrs.axis);
}

void moments_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  require_float(n, x);
  n.dtype = x.dtype;
  const Shape& s = x.shape;
  if (s.size() < 2 || is_symbol(s[1]))
    fail(name_of(n), "expects (batch, channels, ...) with at least 2 dims, got shape " + shape_str(s));
  n.shape = {2, s[1]};
}

// Shape of a reduction's output with the reduced axes kept as 1.
Shape kept_shape(const Shape& in, const std::vector<int64_t>& axes) {
  Shape s = in;
  for (int64_t a : axes) s[a] = 1;
  return s;
}

void vjp_reduce(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const Shape xs = shape_of(gr, v.in[0]);
  const Shape keep = kept_shape(xs, v.attrs.ints);
  const int gb = gr.broadcast_to(gr.reshape(g, keep), xs);
  switch (v.op) {
    case OpKind::Sum: dx[0] = gb; return;
    case OpKind::Mean: dx[0] = divide_by_count(gr, gb, xs, v.attrs.ints); return;
    case OpKind::Max: {
      // Ties share the gradient evenly, as torch.amax does.
      const int yb = gr.broadcast_to(gr.reshape(y, keep), xs);
      const int mask = cmp(gr, OpKind::Equal, v.in[0], yb);
      const int ties = gr.broadcast_to(gr.sum(mask, v.attrs.ints, true), xs);
      dx[0] = gr.mul(gb, gr.div(mask, ties));
      return;
    }
    default: return;
  }
}

// moments = (mean, var) per channel over the n values of each: d mean / dx = 1/n and
// d var / dx = 2 (x - mean) / n, so dx = (g_mean + 2 g_var (x - mean)) / n.
void vjp_channel_moments(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int x = v.in[0];
  const Shape xs = shape_of(gr, x);
  Shape channel(xs.size(), 1);
  channel[1] = xs[1];
  std::vector<int64_t> axes{0};
  for (int64_t a = 2; a < static_cast<int64_t>(xs.size()); ++a) axes.push_back(a);
  auto row = [&](int value, int64_t r) {
    Attrs a;
    a.axis = 0;
    a.start = r;
    a.end = r + 1;
    return gr.reshape(gr.op(OpKind::Slice, {value}, a), channel);
  };
  const int centered = gr.sub(x, row(y, 0));
  const int total = gr.add(row(g, 0), gr.mul(gr.mul(row(g, 1), k(gr, 2.0f)), centered));
  dx[0] = divide_by_count(gr, total, xs, axes);
}

OpDef reduction(OpKind kind, const char* name) {
  return {kind, name, 1, {attr("axes", &Attrs::ints), attr("keepdims", &Attrs::keepdims)},
          reduce_shape, Gradient::Rule, vjp_reduce};
}

}  // namespace

std::vector<OpDef> reduce_op_defs() {
  return {
      reduction(OpKind::Sum, "sum"),
      reduction(OpKind::Mean, "mean"),
      reduction(OpKind::Max, "max"),
      // The index of the maximum is piecewise constant: no gradient flows.
      {OpKind::Argmax, "argmax", 1, {attr("axis", &Attrs::axis)}, argmax_shape, Gradient::Zero},
      {OpKind::ChannelMoments, "channel_moments", 1, {}, moments_shape, Gradient::Rule, vjp_channel_moments},
  };
}

}  // namespace gometal
