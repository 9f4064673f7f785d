// Unary and binary elementwise math and select: numpy broadcasting, float32.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

// Elementwise math keeps its inputs' float dtype; comparisons give 0/1 in it.
void unary_shape(Node& n, const std::vector<Node>& nodes) {
  require_float(n, input(n, nodes, 0));
  n.shape = input(n, nodes, 0).shape;
  n.dtype = input(n, nodes, 0).dtype;
}

void binary_shape(Node& n, const std::vector<Node>& nodes) {
  const Node &a = input(n, nodes, 0), &b = input(n, nodes, 1);
  n.dtype = common_dtype(n, nodes);
  require_float(n, a);
  n.shape = broadcast_shapes(a.shape, b.shape, name_of(n));
}

void select_shape(Node& n, const std::vector<Node>& nodes) {
  n.dtype = common_dtype(n, nodes);
  require_float(n, input(n, nodes, 0));
  const Shape ab = broadcast_shapes(input(n, nodes, 0).shape, input(n, nodes, 1).shape, name_of(n));
  n.shape = broadcast_shapes(ab, input(n, nodes, 2).shape, name_of(n));
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
    // g except where y <= 0: a NaN passes its gradient, as torch's. (A pass narrows this
    // mask to a max pool's output when a pool reads y: passes/relu_pool_mask.h.)
    case OpKind::Relu: dx[0] = sel(gr, cmp(gr, OpKind::GreaterEqual, k(gr, 0), y), k(gr, 0), g); return;
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

// Gradient of a binary op that broadcast its inputs: sum back to each input's shape.
void reduce_each(Graph& gr, const View& v, int ga, int gb, std::vector<int>& dx) {
  if (ga >= 0) dx[0] = gr.reduce_to(ga, shape_of(gr, v.in[0]));
  if (gb >= 0) dx[1] = gr.reduce_to(gb, shape_of(gr, v.in[1]));
}

void vjp_binary(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int a = v.in[0], b = v.in[1];
  switch (v.op) {
    case OpKind::Add: return reduce_each(gr, v, g, g, dx);
    case OpKind::Sub: return reduce_each(gr, v, g, gr.neg(g), dx);
    case OpKind::Mul: return reduce_each(gr, v, gr.mul(g, b), gr.mul(g, a), dx);
    case OpKind::Div: return reduce_each(gr, v, gr.div(g, b), gr.neg(gr.div(gr.mul(g, y), b)), dx);
    case OpKind::Maximum: {
      const int a_wins = cmp(gr, OpKind::GreaterEqual, a, b);
      return reduce_each(gr, v, sel(gr, a_wins, g, k(gr, 0)), sel(gr, a_wins, k(gr, 0), g), dx);
    }
    case OpKind::Minimum: {
      const int a_wins = cmp(gr, OpKind::GreaterEqual, b, a);
      return reduce_each(gr, v, sel(gr, a_wins, g, k(gr, 0)), sel(gr, a_wins, k(gr, 0), g), dx);
    }
    case OpKind::Pow: {
      // d/da a^b = b a^(b-1);  d/db a^b = a^b log(a)
      const int da = gr.mul(g, gr.mul(b, gr.op(OpKind::Pow, {a, gr.sub(b, k(gr, 1))})));
      const int db = gr.mul(g, gr.mul(y, gr.unary(OpKind::Log, a)));
      return reduce_each(gr, v, da, db, dx);
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

// GELU (exact, erf form) as one op, and its derivative times the incoming gradient as another:
// composed of erf, exp and a dozen multiplies, its forward and backward passes were three
// times as long, and libm's scalar exp kept the gradient's pass from vectorising.
constexpr float kSqrtHalf = 0.70710678118654752f, kInvSqrtTwoPi = 0.39894228040143268f;

// Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
int normal_cdf(Graph& gr, int x) {
  return gr.mul(k(gr, 0.5f), gr.add(k(gr, 1), gr.unary(OpKind::Erf, gr.mul(x, k(gr, kSqrtHalf)))));
}
int normal_pdf(Graph& gr, int x) {
  return gr.mul(k(gr, kInvSqrtTwoPi), gr.unary(OpKind::Exp, gr.mul(k(gr, -0.5f), gr.unary(OpKind::Square, x))));
}

// gelu(x) = x Phi(x)
std::vector<int> decompose_gelu(Graph& gr, int id) {
  const View v = view(gr, id);
  return {gr.mul(v.in[0], normal_cdf(gr, v.in[0]))};
}

// gelu_grad(x, g) = g gelu'(x), gelu'(x) = Phi(x) + x phi(x)
std::vector<int> decompose_gelu_grad(Graph& gr, int id) {
  const View v = view(gr, id);
  const int x = v.in[0];
  return {gr.mul(v.in[1], gr.add(normal_cdf(gr, x), gr.mul(x, normal_pdf(gr, x))))};
}

void vjp_gelu(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  dx[0] = gr.op(OpKind::GeluGrad, {v.in[0], g});
}

// d/dx [g gelu'(x)] = g phi(x) (2 - x^2);  d/dg [g gelu'(x)] = gelu'(x).
void vjp_gelu_grad(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const int x = v.in[0], upstream = v.in[1];
  const int curvature = gr.mul(normal_pdf(gr, x), gr.sub(k(gr, 2), gr.unary(OpKind::Square, x)));
  const int da = gr.mul(g, gr.mul(upstream, curvature));
  const int db = gr.op(OpKind::GeluGrad, {x, g});
  reduce_each(gr, v, da, db, dx);
}

OpDef unary(OpKind kind, const char* name) {
  return {kind, name, 1, {}, unary_shape, Gradient::Rule, vjp_unary, trait::kElementwise};
}
OpDef binary(OpKind kind, const char* name) {
  return {kind, name, 2, {}, binary_shape, Gradient::Rule, vjp_binary, trait::kElementwise};
}
// Piecewise constant: the gradient is zero wherever it exists.
OpDef compare(OpKind kind, const char* name) {
  return {kind, name, 2, {}, binary_shape, Gradient::Zero, nullptr, trait::kElementwise};
}

}  // namespace

std::vector<OpDef> elementwise_op_defs() {
  return {
      unary(OpKind::Neg, "neg"),
      unary(OpKind::Exp, "exp"),
      unary(OpKind::Log, "log"),
      unary(OpKind::Tanh, "tanh"),
      unary(OpKind::Sigmoid, "sigmoid"),
      unary(OpKind::Relu, "relu"),
      unary(OpKind::Abs, "abs"),
      {OpKind::Sign, "sign", 1, {}, unary_shape, Gradient::Zero, nullptr, trait::kElementwise},
      unary(OpKind::Sqrt, "sqrt"),
      unary(OpKind::Rsqrt, "rsqrt"),
      unary(OpKind::Erf, "erf"),
      unary(OpKind::Square, "square"),
      unary(OpKind::RoundBf16, "round_bf16"),
      unary(OpKind::RoundBf16Grad, "round_bf16_grad"),
      binary(OpKind::Add, "add"),
      binary(OpKind::Sub, "sub"),
      binary(OpKind::Mul, "mul"),
      binary(OpKind::Div, "div"),
      binary(OpKind::Maximum, "maximum"),
      binary(OpKind::Minimum, "minimum"),
      binary(OpKind::Pow, "pow"),
      {OpKind::Gelu, "gelu", 1, {}, unary_shape, Gradient::Rule, vjp_gelu, trait::kElementwise, nullptr, nullptr,
       decompose_gelu},
      {OpKind::GeluGrad, "gelu_grad", 2, {}, binary_shape, Gradient::Rule, vjp_gelu_grad, trait::kElementwise,
       nullptr, nullptr, decompose_gelu_grad},
      compare(OpKind::Greater, "greater"),
      compare(OpKind::GreaterEqual, "greater_equal"),
      compare(OpKind::Less, "less"),
      compare(OpKind::Equal, "equal"),
      {OpKind::Select, "select", 3, {}, select_shape, Gradient::Rule, vjp_select, trait::kElementwise},
  };
}

}  // namespace gometal
