// int8 quantization: quantize and dequantize (ONNX QuantizeLinear / DequantizeLinear, per
// tensor), and the int8 dense and convolution whose int32 sums are rescaled, biased, relu'd
// and optionally requantized in the kernel's epilogue. None of them is differentiable: they
// serve inference plans of quantized models.
#include <cmath>
#include <limits>

#include "ir/conv_geometry.h"
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

bool is_quantized(DType d) { return d == DType::I8 || d == DType::U8; }

void require_quantized(const Node& n, const Node& in, std::string_view role) {
  if (!is_quantized(in.dtype))
    fail(name_of(n), std::string(role) + " must be int8 or uint8, got " + std::string(dtype_name(in.dtype)));
}

void require_scale(const Node& n, float scale, std::string_view what) {
  if (!(scale > 0.0f) || !std::isfinite(scale))
    fail(name_of(n), std::string(what) + " must be a positive finite number, got " + std::to_string(scale));
}

// Zero points are integers of the quantized dtype's range.
void require_zero_point(const Node& n, int64_t zero_point, DType dtype, std::string_view what) {
  const int64_t low = dtype == DType::I8 ? -128 : 0, high = dtype == DType::I8 ? 127 : 255;
  if (zero_point < low || zero_point > high)
    fail(name_of(n), std::string(what) + " must lie in [" + std::to_string(low) + ", " + std::to_string(high) +
                         "] for " + std::string(dtype_name(dtype)) + ", got " + std::to_string(zero_point));
}

// (x float32) -> dtype: saturate(round_half_even(x / scale) + zero_point).
void quantize_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  require_dtype(n, x, DType::F32, "input");
  if (!is_quantized(n.attrs.dtype))
    fail(name_of(n), "dtype must be int8 or uint8, got " + std::string(dtype_name(n.attrs.dtype)));
  require_scale(n, n.attrs.scale, "scale");
  require_zero_point(n, n.attrs.zero_point, n.attrs.dtype, "zero_point");
  n.shape = x.shape;
  n.dtype = n.attrs.dtype;
}

// (q int8 or uint8) -> float32: (q - zero_point) * scale.
void dequantize_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& q = input(n, nodes, 0);
  require_quantized(n, q, "input");
  require_scale(n, n.attrs.scale, "scale");
  require_zero_point(n, n.attrs.zero_point, q.dtype, "zero_point");
  n.shape = q.shape;
  n.dtype = DType::F32;
}

// The checks the dense and the convolution share: the weight is int8 with the output
// channels first, scale and bias are float32 (O,), and the epilogue's attributes fit.
void check_weight_and_epilogue(Node& n, const std::vector<Node>& nodes, int64_t* channels) {
  if (n.inputs.size() < 3 || n.inputs.size() > 4)
    fail(name_of(n), "takes 3 or 4 inputs (x, weight, scale[, bias]), got " + std::to_string(n.inputs.size()));
  const Node& x = input(n, nodes, 0);
  const Node& w = input(n, nodes, 1);
  // A float32 input of the dense is quantized when the step runs, from its own range.
  const bool dynamic = x.dtype == DType::F32 && n.op == OpKind::QuantizedMatMul;
  if (!dynamic) require_quantized(n, x, n.op == OpKind::QuantizedMatMul ? "input (or float32)" : "input");
  if (w.dtype != DType::I8 && w.dtype != DType::F32)
    fail(name_of(n), "weight must be int8, or float32 holding integers in [-128, 127], got " +
                         std::string(dtype_name(w.dtype)));
  if (dynamic && n.attrs.zero_point != 0)
    fail(name_of(n), "a float32 input is quantized from its own range: zero_point must be 0, got " +
                         std::to_string(n.attrs.zero_point));
  if (!dynamic) require_zero_point(n, n.attrs.zero_point, x.dtype, "zero_point (the input's)");
  if (w.shape.empty()) fail(name_of(n), "weight must have the output channels first, got a scalar");
  *channels = w.shape[0];
  for (size_t i = 2; i < n.inputs.size(); ++i) {
    const Node& v = input(n, nodes, i);
    const char* role = i == 2 ? "scale" : "bias";
    require_dtype(n, v, DType::F32, role);
    if (v.shape != Shape{*channels})
      fail(name_of(n), std::string(role) + " must have shape (" + std::to_string(*channels) + ",), got " +
                           shape_str(v.shape));
  }
  const DType out = n.attrs.dtype;
  if (out != DType::F32 && !is_quantized(out))
    fail(name_of(n), "dtype (the output's) must be float32, int8 or uint8, got " + std::string(dtype_name(out)));
  if (is_quantized(out)) {
    require_scale(n, n.attrs.output_scale, "output_scale");
    require_zero_point(n, n.attrs.output_zero_point, out, "output_zero_point");
  }
  n.dtype = out;
}

// int32 sums of K products of at most 255 * 128 stay exact up to K = 65536.
constexpr int64_t kMaxDepth = 65536;

void require_depth(const Node& n, int64_t depth) {
  if (depth > kMaxDepth)
    fail(name_of(n), "sums " + std::to_string(depth) + " products per output; int32 sums stay exact up to " +
                         std::to_string(kMaxDepth));
}

// (x (..., K), w (O, K), scale (O,)[, bias (O,)]) -> (..., O).
void quantized_matmul_shape(Node& n, const std::vector<Node>& nodes) {
  int64_t channels = 0;
  check_weight_and_epilogue(n, nodes, &channels);
  const Shape& x = input(n, nodes, 0).shape;
  const Shape& w = input(n, nodes, 1).shape;
  if (x.empty() || w.size() != 2 || x.back() != w[1])
    fail(name_of(n), "expects x (..., K) and weight (O, K), got " + shape_str(x) + " x " + shape_str(w));
  require_depth(n, w[1]);
  n.shape = x;
  n.shape.back() = channels;
}

// (x (N, C, H, W), w (O, C, KH, KW), scale (O,)[, bias (O,)]) -> (N, O, OH, OW).
void quantized_conv2d_shape(Node& n, const std::vector<Node>& nodes) {
  int64_t channels = 0;
  check_weight_and_epilogue(n, nodes, &channels);
  const ConvGeometry g = conv_geometry(name_of(n), input(n, nodes, 0).shape, &input(n, nodes, 1).shape, n.attrs);
  if (g.groups != 1) fail(name_of(n), "takes groups=1 only, got groups=" + std::to_string(g.groups));
  require_depth(n, g.patch());
  n.shape = {g.n, g.o, g.oh, g.ow};
}

std::vector<AttrSpec> epilogue_attrs() {
  return {attr("zero_point", &Attrs::zero_point), attr("relu", &Attrs::relu), attr("dtype", &Attrs::dtype),
          attr("output_scale", &Attrs::output_scale), attr("output_zero_point", &Attrs::output_zero_point)};
}

std::vector<AttrSpec> conv_epilogue_attrs() {
  std::vector<AttrSpec> specs = epilogue_attrs();
  for (AttrSpec s : {attr("stride", &Attrs::stride), attr("padding", &Attrs::padding),
                     attr("dilation", &Attrs::dilation), attr("groups", &Attrs::groups)})
    specs.push_back(s);
  return specs;
}

}  // namespace

std::vector<OpDef> quantized_op_defs() {
  const std::vector<AttrSpec> linear = {attr("scale", &Attrs::scale), attr("zero_point", &Attrs::zero_point),
                                        attr("dtype", &Attrs::dtype)};
  return {
      {OpKind::Quantize, "quantize", 1, linear, quantize_shape},
      {OpKind::Dequantize, "dequantize", 1, {attr("scale", &Attrs::scale), attr("zero_point", &Attrs::zero_point)},
       dequantize_shape},
      {OpKind::QuantizedMatMul, "quantized_matmul", -1, epilogue_attrs(), quantized_matmul_shape},
      {OpKind::QuantizedConv2D, "quantized_conv2d", -1, conv_epilogue_attrs(), quantized_conv2d_shape},
  };
}

}  // namespace gometal
