// Normalization over the last axis, fused: layer_norm ((x - mean) / sqrt(var + eps), then
// times an optional weight plus an optional bias) and rms_norm (x / sqrt(mean(x^2) + eps)
// times an optional weight), each one pass over a row forward and one backward. Their
// gradient ops give dL/dx, and their affine-gradient ops the weight and bias gradients (the
// sums over rows of g xhat and of g) in one more pass.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

bool is_layer_norm(OpKind op) {
  return op == OpKind::LayerNorm || op == OpKind::LayerNormGrad || op == OpKind::LayerNormAffineGrad;
}

// Inputs (x, [weight], [bias]) for the forward ops, (x, g, [weight]) for the gradients;
// `first_affine` is where the weight sits.
void norm_shape(Node& n, const std::vector<Node>& nodes, size_t first_affine, size_t most_inputs) {
  const Node& x = input(n, nodes, 0);
  if (n.inputs.size() < first_affine || n.inputs.size() > most_inputs)
    fail(name_of(n), "expects " + std::to_string(first_affine) + " to " + std::to_string(most_inputs) +
                         " inputs, got " + std::to_string(n.inputs.size()));
  n.dtype = common_dtype(n, nodes);
  require_float(n, x);
  if (x.shape.empty() || is_symbol(x.shape.back()))
    fail(name_of(n), "normalizes the last axis, which must have a known size; got " + shape_str(x.shape));
  if (!(n.attrs.eps >= 0.0f)) fail(name_of(n), "eps must be >= 0, got " + std::to_string(n.attrs.eps));
  const Shape feature = {x.shape.back()};
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    const Shape& s = input(n, nodes, i).shape;
    const bool affine = i >= first_affine;
    if (affine && s != feature)
      fail(name_of(n), std::string(i == first_affine ? "weight" : "bias") + " must have shape " + shape_str(feature) +
                           " (the last axis of x " + shape_str(x.shape) + "), got " + shape_str(s));
    if (!affine && s != x.shape)
      fail(name_of(n), "gradient of shape " + shape_str(s) + " does not match x of shape " + shape_str(x.shape));
  }
  n.shape = x.shape;
}

void forward_shape(Node& n, const std::vector<Node>& nodes) {
  norm_shape(n, nodes, 1, n.op == OpKind::LayerNorm ? 3 : 2);
}
void gradient_shape(Node& n, const std::vector<Node>& nodes) { norm_shape(n, nodes, 2, 3); }

// (x, g) -> (2, D): the weight's gradient, then the bias's.
void affine_gradient_shape(Node& n, const std::vector<Node>& nodes) {
  norm_shape(n, nodes, 2, 2);
  n.shape = {2, n.shape.back()};
}

int norm_op(Graph& gr, OpKind op, std::vector<int> inputs, float eps) {
  Attrs at;
  at.eps = eps;
  return gr.op(op, std::move(inputs), at);
}

void vjp_norm(Graph& gr, int y, int g, std::vector<int>& dx) {
  const View v = view(gr, y);
  const bool layer = v.op == OpKind::LayerNorm;
  std::vector<int> grad_inputs = {v.in[0], g};
  if (v.in.size() > 1) grad_inputs.push_back(v.in[1]);
  dx[0] = norm_op(gr, layer ? OpKind::LayerNormGrad : OpKind::RmsNormGrad, grad_inputs, v.attrs.eps);
  if (v.in.size() == 1) return;
  // Both affine gradients from one pass over x and g, rather than x normalized again, a
  // product and two sums over the rows.
  const Shape feature = {v.shape.back()};
  const int sums = norm_op(gr, layer ? OpKind::LayerNormAffineGrad : OpKind::RmsNormAffineGrad, {v.in[0], g},
                           v.attrs.eps);
  const auto row = [&](int64_t r) {
    Attrs at;
    at.axis = 0;
    at.start = r;
    at.end = r + 1;
    return gr.reshape(gr.op(OpKind::Slice, {sums}, at), feature);
  };
  dx[1] = row(0);
  if (v.in.size() == 3) dx[2] = row(1);
}

// The row statistics in primitives: the centred (layer_norm) or raw (rms_norm) x, and
// 1 / sqrt(variance or mean square + eps), kept with a size-1 last axis.
void row_statistics(Graph& gr, const View& v, int* centred, int* rstd) {
  const int x = v.in[0];
  const std::vector<int64_t> last = {static_cast<int64_t>(shape_of(gr, x).size()) - 1};
  *centred = is_layer_norm(v.op) ? gr.sub(x, gr.mean(x, last, true)) : x;
  const int spread = gr.mean(gr.unary(OpKind::Square, *centred), last, true);
  *rstd = gr.unary(OpKind::Rsqrt, gr.add(spread, k(gr, v.attrs.eps)));
}

std::vector<int> decompose_norm(Graph& gr, int id) {
  const View v = view(gr, id);
  int centred, rstd;
  row_statistics(gr, v, &centred, &rstd);
  int y = gr.mul(centred, rstd);
  if (v.in.size() > 1) y = gr.mul(y, v.in[1]);
  if (v.in.size() > 2) y = gr.add(y, v.in[2]);
  return {y};
}

// dx = rstd (gw - mean(gw) - xhat mean(gw xhat)) with gw = g * weight and xhat the
// normalized x; rms_norm has no mean(gw) term (nothing was subtracted).
std::vector<int> decompose_norm_grad(Graph& gr, int id) {
  const View v = view(gr, id);
  const std::vector<int64_t> last = {static_cast<int64_t>(v.shape.size()) - 1};
  int centred, rstd;
  row_statistics(gr, v, &centred, &rstd);
  const int xhat = gr.mul(centred, rstd);
  const int gw = v.in.size() > 2 ? gr.mul(v.in[1], v.in[2]) : v.in[1];
  int inner = gr.sub(gw, gr.mul(xhat, gr.mean(gr.mul(gw, xhat), last, true)));
  if (is_layer_norm(v.op)) inner = gr.sub(inner, gr.mean(gw, last, true));
  return {gr.mul(rstd, inner)};
}

// Sums over every row of g xhat and of g, stacked as (2, D).
std::vector<int> decompose_affine_grad(Graph& gr, int id) {
  const View v = view(gr, id);
  int centred, rstd;
  row_statistics(gr, v, &centred, &rstd);
  const int64_t dim = v.shape.back();
  const int g = v.in[1];
  Attrs stacked;
  stacked.axis = 0;
  return {gr.op(OpKind::Concat,
                {gr.reshape(gr.reduce_to(gr.mul(g, gr.mul(centred, rstd)), {dim}), {1, dim}),
                 gr.reshape(gr.reduce_to(g, {dim}), {1, dim})},
                stacked)};
}

}  // namespace

std::vector<OpDef> normalization_op_defs() {
  const std::vector<AttrSpec> eps = {attr("eps", &Attrs::eps)};
  return {
      {OpKind::LayerNorm, "layer_norm", -1, eps, forward_shape, Gradient::Rule, vjp_norm, 0, nullptr, nullptr,
       decompose_norm},
      {OpKind::LayerNormGrad, "layer_norm_grad", -1, eps, gradient_shape, Gradient::None, nullptr, 0, nullptr,
       nullptr, decompose_norm_grad},
      {OpKind::RmsNorm, "rms_norm", -1, eps, forward_shape, Gradient::Rule, vjp_norm, 0, nullptr, nullptr,
       decompose_norm},
      {OpKind::RmsNormGrad, "rms_norm_grad", -1, eps, gradient_shape, Gradient::None, nullptr, 0, nullptr, nullptr,
       decompose_norm_grad},
      {OpKind::LayerNormAffineGrad, "layer_norm_affine_grad", 2, eps, affine_gradient_shape, Gradient::None, nullptr,
       0, nullptr, nullptr, decompose_affine_grad},
      {OpKind::RmsNormAffineGrad, "rms_norm_affine_grad", 2, eps, affine_gradient_shape, Gradient::None, nullptr, 0,
       nullptr, nullptr, decompose_affine_grad},
  };
}

}  // namespace gometal
