// One VJP rule per primitive, side by side. Each composes primitives, so every backend
// gets the same backward pass. Copy what you need out of a Node before adding nodes:
// adding nodes can move the node storage.
#include "autodiff/vjp_rules.h"

#include <array>
#include <cmath>

namespace gometal {
namespace {

struct View {
  OpKind op;
  std::vector<int> in;
  Attrs attrs;
  Shape shape;
};

View view(const Graph& gr, int y) {
  const Node& n = gr.node(y);
  return {n.op, n.inputs, n.attrs, n.shape};
}

Shape shape_of(const Graph& gr, int id) { return gr.node(id).shape; }
int k(Graph& gr, float v) { return gr.constant(v); }
int cmp(Graph& gr, OpKind op, int a, int b) { return gr.op(op, {a, b}); }
int sel(Graph& gr, int c, int a, int b) { return gr.op(OpKind::Select, {c, a, b}); }

// Gradient of a binary op that broadcast its inputs: sum back to each input's shape.
void binary(Graph& gr, const View& v, int ga, int gb, std::vector<int>& dx) {
  if (ga >= 0) dx[0] = gr.reduce_to(ga, shape_of(gr, v.in[0]));
  if (gb >= 0) dx[1] = gr.reduce_to(gb, shape_of(gr, v.in[1]));
}

// Shape of a reduction's output with the reduced axes kept as 1.
Shape kept_shape(const Shape& in, const std::vector<int64_t>& axes) {
  Shape s = in;
  for (int64_t a : axes) s[a] = 1;
  return s;
}

// Number of elements each output of a reduction sums over; 0 when it involves the batch dim.
int64_t reduced_count(const Shape& in, const std::vector<int64_t>& axes) {
  int64_t c = 1;
  for (int64_t a : axes) {
    if (in[a] == kBatch) return 0;
    c *= in[a];
  }
  return c;
}

// The max pool of y with the window of `pool_grad` (a max_pool2d_grad of y), or -1.
int forward_max_pool(const Graph& gr, int y, int pool_grad) {
  const Attrs& a = gr.node(pool_grad).attrs;
  for (int id = y + 1; id < gr.size(); ++id) {
    const Node& n = gr.node(id);
    if (n.op == OpKind::MaxPool2D && n.inputs[0] == y && n.attrs.kernel_size == a.kernel_size &&
        n.attrs.stride == a.stride && n.attrs.padding == a.padding)
      return id;
  }
  return -1;
}

// dx = g except where y = relu(x) <= 0 (a NaN passes its gradient, as torch's). When y's only
// reader is a max pool, g routes each pooled gradient to its window's max, and that max is
// <= 0 exactly when the pooled value is: so the mask is applied to the pooled gradient, a
// quarter of the size for 2x2 windows.
int relu_vjp(Graph& gr, int y, int g) {
  const int zero = k(gr, 0);
  if (gr.node(g).op == OpKind::MaxPool2DGrad && gr.node(g).inputs[0] == y) {
    const int pooled = forward_max_pool(gr, y, g);
    if (pooled >= 0) {
      const Attrs attrs = gr.node(g).attrs;
      const int pooled_grad = gr.node(g).inputs[1];
      const int masked = sel(gr, cmp(gr, OpKind::GreaterEqual, zero, pooled), zero, pooled_grad);
      return gr.op(OpKind::MaxPool2DGrad, {y, masked}, attrs);
    }
  }
  return sel(gr, cmp(gr, OpKind::GreaterEqual, zero, y), zero, g);
}

void vjp_unary(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int x = v.in[0];
  switch (v.op) {
    case OpKind::Neg: dx[0] = gr.neg(g); return;
    case OpKind::Exp: dx[0] = gr.mul(g, y); return;
    case OpKind::Log: dx[0] = gr.div(g, x); return;
    case OpKind::Tanh: dx[0] = gr.mul(g, gr.sub(k(gr, 1), gr.unary(OpKind::Square, y))); return;
    case OpKind::Sigmoid: dx[0] = gr.mul(g, gr.mul(y, gr.sub(k(gr, 1), y))); return;
    case OpKind::Relu: dx[0] = relu_vjp(gr, y, g); return;
    case OpKind::Abs: dx[0] = gr.mul(g, gr.unary(OpKind::Sign, x)); return;
    case OpKind::Sqrt: dx[0] = gr.div(gr.mul(g, k(gr, 0.5f)), y); return;
    case OpKind::Rsqrt: dx[0] = gr.mul(g, gr.mul(k(gr, -0.5f), gr.div(y, x))); return;
    case OpKind::Erf: {
      const float two_over_sqrt_pi = 1.1283791670955126f;
      const int e = gr.unary(OpKind::Exp, gr.neg(gr.unary(OpKind::Square, x)));
      dx[0] = gr.mul(g, gr.mul(k(gr, two_over_sqrt_pi), e));
      return;
    }
    case OpKind::Square: dx[0] = gr.mul(g, gr.mul(k(gr, 2), x)); return;
    // Rounding is a cast to bf16 and back: the gradient passes as a cast's would.
    case OpKind::RoundBf16: dx[0] = g; return;
    // Identity whose backward rounds: the gradient enters the backward gemms as bf16.
    case OpKind::RoundBf16Grad: dx[0] = gr.unary(OpKind::RoundBf16, g); return;
    default: return;
  }
}

void vjp_binary(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int a = v.in[0], b = v.in[1];
  switch (v.op) {
    case OpKind::Add: return binary(gr, v, g, g, dx);
    case OpKind::Sub: return binary(gr, v, g, gr.neg(g), dx);
    case OpKind::Mul: return binary(gr, v, gr.mul(g, b), gr.mul(g, a), dx);
    case OpKind::Div: return binary(gr, v, gr.div(g, b), gr.neg(gr.div(gr.mul(g, y), b)), dx);
    case OpKind::Maximum: {
      const int a_wins = cmp(gr, OpKind::GreaterEqual, a, b);
      return binary(gr, v, sel(gr, a_wins, g, k(gr, 0)), sel(gr, a_wins, k(gr, 0), g), dx);
    }
    case OpKind::Minimum: {
      const int a_wins = cmp(gr, OpKind::GreaterEqual, b, a);
      return binary(gr, v, sel(gr, a_wins, g, k(gr, 0)), sel(gr, a_wins, k(gr, 0), g), dx);
    }
    case OpKind::Pow: {
      // d/da a^b = b a^(b-1);  d/db a^b = a^b log(a)
      const int da = gr.mul(g, gr.mul(b, gr.op(OpKind::Pow, {a, gr.sub(b, k(gr, 1))})));
      const int db = gr.mul(g, gr.mul(y, gr.unary(OpKind::Log, a)));
      return binary(gr, v, da, db, dx);
    }
    default: return;
  }
}

void vjp_select(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int zero = k(gr, 0);
  dx[1] = gr.reduce_to(sel(gr, v.in[0], g, zero), shape_of(gr, v.in[1]));
  dx[2] = gr.reduce_to(sel(gr, v.in[0], zero, g), shape_of(gr, v.in[2]));
}

// value / (the number of elements `axes` of shape xs span); that count is a constant
// unless the batch dim is among the axes, when it is counted at run time.
int divide_by_count(Graph& gr, int value, const Shape& xs, const std::vector<int64_t>& axes) {
  const int64_t count = reduced_count(xs, axes);
  if (count > 0) return gr.mul(value, k(gr, 1.0f / static_cast<float>(count)));
  // A (batch,) vector of ones, summed, times the static part of the extent.
  int64_t fixed = 1;
  for (int64_t a : axes)
    if (xs[a] != kBatch) fixed *= xs[a];
  const int batch = gr.sum(gr.broadcast_to(k(gr, 1), {kBatch}), {});
  int total = k(gr, static_cast<float>(fixed));
  for (int64_t a : axes)
    if (xs[a] == kBatch) total = gr.mul(total, batch);
  return gr.div(value, total);
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
    case OpKind::Cast:
      if (gr.node(v.in[0]).dtype == DType::F32) dx[0] = g;
      return;
    default: return;
  }
}

void vjp_matmul(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int a = v.in[0], b = v.in[1];
  const bool ta = v.attrs.transpose_a, tb = v.attrs.transpose_b;
  // C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo each op.
  if (!ta && !tb) {
    dx[0] = gr.matmul(g, b, false, true);
    dx[1] = gr.matmul(a, g, true, false);
  } else if (ta && !tb) {
    dx[0] = gr.matmul(b, g, false, true);
    dx[1] = gr.matmul(a, g, false, false);
  } else if (!ta && tb) {
    dx[0] = gr.matmul(g, b, false, false);
    dx[1] = gr.matmul(g, a, true, false);
  } else {
    dx[0] = gr.matmul(b, g, true, true);
    dx[1] = gr.matmul(g, a, true, true);
  }
}

// Convolution and pooling: their gradients are primitives of their own, which take the
// forward op's attributes (and the shape of what they produce).
void vjp_window(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  Attrs at = v.attrs;
  switch (v.op) {
    case OpKind::Conv2D: {
      at.ints = shape_of(gr, v.in[0]);
      dx[0] = gr.op(OpKind::Conv2DInputGrad, {g, v.in[1]}, at);
      at.ints = shape_of(gr, v.in[1]);
      dx[1] = gr.op(OpKind::Conv2DWeightGrad, {v.in[0], g}, at);
      return;
    }
    case OpKind::MaxPool2D: dx[0] = gr.op(OpKind::MaxPool2DGrad, {v.in[0], g}, at); return;
    case OpKind::AvgPool2D:
      at.ints = shape_of(gr, v.in[0]);
      dx[0] = gr.op(OpKind::AvgPool2DGrad, {g}, at);
      return;
    default: return;
  }
}

constexpr size_t kNumOps = static_cast<size_t>(OpKind::kCount);

std::array<VjpRule, kNumOps> make_table() {
  std::array<VjpRule, kNumOps> t{};
  for (OpKind op : {OpKind::Neg, OpKind::Exp, OpKind::Log, OpKind::Tanh, OpKind::Sigmoid, OpKind::Relu,
                    OpKind::Abs, OpKind::Sqrt, OpKind::Rsqrt, OpKind::Erf, OpKind::Square,
                    OpKind::RoundBf16, OpKind::RoundBf16Grad})
    t[static_cast<size_t>(op)] = vjp_unary;
  for (OpKind op : {OpKind::Add, OpKind::Sub, OpKind::Mul, OpKind::Div, OpKind::Maximum,
                    OpKind::Minimum, OpKind::Pow})
    t[static_cast<size_t>(op)] = vjp_binary;
  t[static_cast<size_t>(OpKind::Select)] = vjp_select;
  for (OpKind op : {OpKind::Sum, OpKind::Mean, OpKind::Max}) t[static_cast<size_t>(op)] = vjp_reduce;
  for (OpKind op : {OpKind::Reshape, OpKind::Transpose, OpKind::BroadcastTo, OpKind::Slice,
                    OpKind::Pad, OpKind::Concat, OpKind::Cast})
    t[static_cast<size_t>(op)] = vjp_layout;
  t[static_cast<size_t>(OpKind::MatMul)] = vjp_matmul;
  t[static_cast<size_t>(OpKind::ChannelMoments)] = vjp_channel_moments;
  for (OpKind op : {OpKind::Conv2D, OpKind::MaxPool2D, OpKind::AvgPool2D}) t[static_cast<size_t>(op)] = vjp_window;
  return t;
}

const std::array<VjpRule, kNumOps> kRules = make_table();

}  // namespace

VjpRule vjp_rule(OpKind op) { return kRules[static_cast<size_t>(op)]; }

}  // namespace gometal
