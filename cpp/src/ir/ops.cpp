// The op table: names, arity and categories of every primitive.
#include <array>
#include <stdexcept>

#include "gometal/ir.h"

namespace gometal {
namespace {

struct OpInfo {
  OpKind kind;
  const char* name;
  int arity;  // -1 = variadic
  bool elementwise;
  bool differentiable;
};

constexpr std::array<OpInfo, static_cast<size_t>(OpKind::kCount)> kOps = {{
    {OpKind::Input, "input", 0, false, false},
    {OpKind::Variable, "variable", 0, false, false},
    {OpKind::Scalar, "scalar", 0, false, false},
    {OpKind::Constant, "constant", 0, false, false},
    {OpKind::Neg, "neg", 1, true, true},
    {OpKind::Exp, "exp", 1, true, true},
    {OpKind::Log, "log", 1, true, true},
    {OpKind::Tanh, "tanh", 1, true, true},
    {OpKind::Sigmoid, "sigmoid", 1, true, true},
    {OpKind::Relu, "relu", 1, true, true},
    {OpKind::Abs, "abs", 1, true, true},
    {OpKind::Sign, "sign", 1, true, false},
    {OpKind::Sqrt, "sqrt", 1, true, true},
    {OpKind::Rsqrt, "rsqrt", 1, true, true},
    {OpKind::Erf, "erf", 1, true, true},
    {OpKind::Square, "square", 1, true, true},
    {OpKind::RoundBf16, "round_bf16", 1, true, true},
    {OpKind::RoundBf16Grad, "round_bf16_grad", 1, true, true},
    {OpKind::Add, "add", 2, true, true},
    {OpKind::Sub, "sub", 2, true, true},
    {OpKind::Mul, "mul", 2, true, true},
    {OpKind::Div, "div", 2, true, true},
    {OpKind::Maximum, "maximum", 2, true, true},
    {OpKind::Minimum, "minimum", 2, true, true},
    {OpKind::Pow, "pow", 2, true, true},
    {OpKind::Greater, "greater", 2, true, false},
    {OpKind::GreaterEqual, "greater_equal", 2, true, false},
    {OpKind::Less, "less", 2, true, false},
    {OpKind::Equal, "equal", 2, true, false},
    {OpKind::Select, "select", 3, true, true},
    {OpKind::Sum, "sum", 1, false, true},
    {OpKind::Mean, "mean", 1, false, true},
    {OpKind::Max, "max", 1, false, true},
    {OpKind::Argmax, "argmax", 1, false, false},
    {OpKind::ChannelMoments, "channel_moments", 1, false, true},
    {OpKind::Reshape, "reshape", 1, false, true},
    {OpKind::Transpose, "transpose", 1, false, true},
    {OpKind::BroadcastTo, "broadcast_to", 1, true, true},
    {OpKind::Slice, "slice", 1, false, true},
    {OpKind::Concat, "concat", -1, false, true},
    {OpKind::Pad, "pad", 1, false, true},
    {OpKind::MatMul, "matmul", 2, false, true},
    {OpKind::Conv2D, "conv2d", 2, false, true},
    {OpKind::Conv2DInputGrad, "conv2d_input_grad", 2, false, false},
    {OpKind::Conv2DWeightGrad, "conv2d_weight_grad", 2, false, false},
    {OpKind::MaxPool2D, "max_pool2d", 1, false, true},
    {OpKind::MaxPool2DGrad, "max_pool2d_grad", 2, false, false},
    {OpKind::AvgPool2D, "avg_pool2d", 1, false, true},
    {OpKind::AvgPool2DGrad, "avg_pool2d_grad", 1, false, false},
    {OpKind::OneHot, "one_hot", 1, false, false},
    {OpKind::Cast, "cast", 1, false, true},
    {OpKind::RandomUniform, "random_uniform", 1, true, false},
    {OpKind::StopGradient, "stop_gradient", 1, false, false},
    {OpKind::Assign, "assign", 2, false, false},
    {OpKind::CheckRange, "check_range", 1, false, false},
    {OpKind::AdamUpdate, "adam_update", 6, false, false},
}};

constexpr bool table_is_ordered() {
  for (size_t i = 0; i < kOps.size(); ++i)
    if (static_cast<size_t>(kOps[i].kind) != i) return false;
  return true;
}
static_assert(table_is_ordered(), "kOps must list OpKind values in declaration order");

const OpInfo& info(OpKind op) { return kOps[static_cast<size_t>(op)]; }

}  // namespace

std::string_view op_name(OpKind op) { return info(op).name; }

OpKind op_from_name(std::string_view name) {
  for (const auto& o : kOps)
    if (name == o.name && o.arity != 0) return o.kind;
  std::string known;
  for (const auto& o : kOps)
    if (o.arity != 0) known += std::string(known.empty() ? "" : ", ") + o.name;
  throw std::invalid_argument("[graph] unknown op '" + std::string(name) + "'; known ops: " + known);
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const auto& o : kOps)
    if (o.arity != 0) names.emplace_back(o.name);
  return names;
}

int op_arity(OpKind op) { return info(op).arity; }
bool is_elementwise(OpKind op) { return info(op).elementwise; }
bool is_differentiable(OpKind op) { return info(op).differentiable; }
bool is_effect(OpKind op) { return op == OpKind::Assign || op == OpKind::AdamUpdate; }
bool is_check(OpKind op) { return op == OpKind::CheckRange; }

std::vector<int> written_variables(const Node& n) {
  if (n.op == OpKind::Assign) return {n.inputs[0]};
  if (n.op == OpKind::AdamUpdate) return {n.inputs[0], n.inputs[1], n.inputs[2]};
  return {};
}

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += s[i] == kBatch ? std::string("batch") : std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

std::string_view dtype_name(DType d) { return d == DType::F32 ? "float32" : "int32"; }

DType dtype_from_name(std::string_view name) {
  if (name == "float32") return DType::F32;
  if (name == "int32") return DType::I32;
  throw std::invalid_argument("[graph] unknown dtype '" + std::string(name) +
                              "'; expected 'float32' or 'int32'");
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape concretize(const Shape& s, int64_t batch) {
  Shape out = s;
  for (auto& d : out)
    if (d == kBatch) d = batch;
  return out;
}

}  // namespace gometal
