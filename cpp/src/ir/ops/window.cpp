// Convolution and pooling over (N, C, H, W), and their gradients. The gradients are
// primitives of their own: they take the forward op's attributes and the shape they produce.
#include "ir/conv_geometry.h"
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void conv_shape(Node& n, const std::vector<Node>& nodes) {
  n.dtype = common_dtype(n, nodes);
  require_float(n, input(n, nodes, 0));
  const ConvGeometry g = conv_geometry(name_of(n), input(n, nodes, 0).shape, &input(n, nodes, 1).shape, n.attrs);
  n.shape = {g.n, g.o, g.oh, g.ow};
}

// Fails unless the incoming gradient has the forward output's shape.
void require_output_grad(const Node& n, const Node& grad, const Shape& out) {
  require_float(n, grad);
  if (grad.shape != out)
    fail(name_of(n), "gradient of shape " + shape_str(grad.shape) + " does not match the output " + shape_str(out));
}

void conv_input_grad_shape(Node& n, const std::vector<Node>& nodes) {  // (g, w) -> dx
  n.dtype = common_dtype(n, nodes);
  require_float(n, input(n, nodes, 1));
  const ConvGeometry g = conv_geometry(name_of(n), n.attrs.ints, &input(n, nodes, 1).shape, n.attrs);
  require_output_grad(n, input(n, nodes, 0), {g.n, g.o, g.oh, g.ow});
  n.shape = n.attrs.ints;
}

void conv_weight_grad_shape(Node& n, const std::vector<Node>& nodes) {  // (x, g) -> dw
  n.dtype = common_dtype(n, nodes);
  require_float(n, input(n, nodes, 0));
  const ConvGeometry g = conv_geometry(name_of(n), input(n, nodes, 0).shape, &n.attrs.ints, n.attrs);
  require_output_grad(n, input(n, nodes, 1), {g.n, g.o, g.oh, g.ow});
  n.shape = n.attrs.ints;
}

void pool_shape(Node& n, const std::vector<Node>& nodes) {
  require_float(n, input(n, nodes, 0));
  n.dtype = input(n, nodes, 0).dtype;
  const ConvGeometry g = conv_geometry(name_of(n), input(n, nodes, 0).shape, nullptr, n.attrs);
  n.shape = {g.n, g.c, g.oh, g.ow};
}

void max_pool_grad_shape(Node& n, const std::vector<Node>& nodes) {  // (x, g) -> dx
  n.dtype = common_dtype(n, nodes);
  require_float(n, input(n, nodes, 0));
  const ConvGeometry g = conv_geometry(name_of(n), input(n, nodes, 0).shape, nullptr, n.attrs);
  require_output_grad(n, input(n, nodes, 1), {g.n, g.c, g.oh, g.ow});
  n.shape = input(n, nodes, 0).shape;
}

void avg_pool_grad_shape(Node& n, const std::vector<Node>& nodes) {  // (g) -> dx
  n.dtype = input(n, nodes, 0).dtype;
  const ConvGeometry g = conv_geometry(name_of(n), n.attrs.ints, nullptr, n.attrs);
  require_output_grad(n, input(n, nodes, 0), {g.n, g.c, g.oh, g.ow});
  n.shape = n.attrs.ints;
}

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
    case OpKind::Conv2DInputGrad: {  // a transposed convolution: y = conv2d^T(x, w)
      at.ints = {};
      dx[0] = gr.op(OpKind::Conv2D, {g, v.in[1]}, at);
      // The roles swap: g plays conv2d's input and x its output gradient.
      at.ints = shape_of(gr, v.in[1]);
      dx[1] = gr.op(OpKind::Conv2DWeightGrad, {g, v.in[0]}, at);
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

std::vector<AttrSpec> conv_attrs() {
  return {attr("stride", &Attrs::stride), attr("padding", &Attrs::padding), attr("dilation", &Attrs::dilation),
          attr("groups", &Attrs::groups)};
}
std::vector<AttrSpec> pool_attrs() {
  return {attr("kernel_size", &Attrs::kernel_size), attr("stride", &Attrs::stride),
          attr("padding", &Attrs::padding)};
}
// A gradient op also takes the shape it produces.
std::vector<AttrSpec> with_shape(std::vector<AttrSpec> attrs) {
  attrs.push_back(attr("shape", &Attrs::ints));
  return attrs;
}

}  // namespace

std::vector<OpDef> window_op_defs() {
  // conv2d_input_grad is also the transposed convolution (Conv2DTranspose), so it has a rule;
  // second derivatives through the other gradient primitives are not defined: asking is an error.
  return {
      {OpKind::Conv2D, "conv2d", 2, conv_attrs(), conv_shape, Gradient::Rule, vjp_window},
      {OpKind::Conv2DInputGrad, "conv2d_input_grad", 2, with_shape(conv_attrs()), conv_input_grad_shape,
       Gradient::Rule, vjp_window},
      {OpKind::Conv2DWeightGrad, "conv2d_weight_grad", 2, with_shape(conv_attrs()), conv_weight_grad_shape},
      {OpKind::MaxPool2D, "max_pool2d", 1, pool_attrs(), pool_shape, Gradient::Rule, vjp_window},
      {OpKind::MaxPool2DGrad, "max_pool2d_grad", 2, pool_attrs(), max_pool_grad_shape},
      {OpKind::AvgPool2D, "avg_pool2d", 1, pool_attrs(), pool_shape, Gradient::Rule, vjp_window},
      {OpKind::AvgPool2DGrad, "avg_pool2d_grad", 1, with_shape(pool_attrs()), avg_pool_grad_shape},
  };
}

}  // namespace gometal
