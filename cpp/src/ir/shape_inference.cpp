// Shape and dtype inference. Every rule names the op and the shapes it received.
#include "ir/shape_inference.h"

#include "ir/conv_geometry.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace gometal {
namespace {

[[noreturn]] void fail(std::string_view op, const std::string& what) {
  throw std::invalid_argument("[" + std::string(op) + "] " + what);
}

int64_t norm_axis(int64_t axis, size_t rank, std::string_view op) {
  const int64_t r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r)
    fail(op, "axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + r : axis;
}

// Two dims are compatible for a reshape/broadcast when equal; kBatch never equals a number.
int64_t known_product(const Shape& s, int* batch_count) {
  int64_t p = 1;
  *batch_count = 0;
  for (int64_t d : s) {
    if (d == kBatch) ++*batch_count;
    else p *= d;
  }
  return p;
}

void check_float(const Node& n, const Node& in, std::string_view op) {
  if (in.dtype != DType::F32)
    fail(op, "expects float32 inputs, got " + std::string(dtype_name(in.dtype)) + " of shape " +
                 shape_str(in.shape) + (n.inputs.empty() ? "" : ""));
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db) out[i] = da;
    else if (da == 1) out[i] = db;
    else if (db == 1) out[i] = da;
    else fail(op, "shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast together");
  }
  return out;
}

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, size_t rank, std::string_view op) {
  std::vector<int64_t> out;
  if (axes.empty()) {
    for (size_t i = 0; i < rank; ++i) out.push_back(static_cast<int64_t>(i));
    return out;
  }
  for (int64_t a : axes) out.push_back(norm_axis(a, rank, op));
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end()) fail(op, "repeated axis in reduction");
  return out;
}

void infer_shape(Node& n, const std::vector<Node>& nodes) {
  const std::string_view op = op_name(n.op);
  const int arity = op_arity(n.op);
  if (arity >= 0 && static_cast<int>(n.inputs.size()) != arity)
    fail(op, "expects " + std::to_string(arity) + " inputs, got " + std::to_string(n.inputs.size()));
  if (arity < 0 && n.inputs.empty()) fail(op, "expects at least one input");
  for (int id : n.inputs)
    if (id < 0 || id >= static_cast<int>(nodes.size()))
      fail(op, "input id " + std::to_string(id) + " does not exist in this graph");
  auto in = [&](size_t i) -> const Node& { return nodes[n.inputs[i]]; };
  n.dtype = DType::F32;

  switch (n.op) {
    case OpKind::Input: case OpKind::Variable: case OpKind::Scalar: case OpKind::Constant:
      fail(op, "leaves are created with their own builder call");

    case OpKind::Neg: case OpKind::Exp: case OpKind::Log: case OpKind::Tanh: case OpKind::Sigmoid:
    case OpKind::Relu: case OpKind::Abs: case OpKind::Sign: case OpKind::Sqrt: case OpKind::Rsqrt:
    case OpKind::Erf: case OpKind::Square: case OpKind::StopGradient: case OpKind::RandomUniform:
    case OpKind::RoundBf16: case OpKind::RoundBf16Grad:
      check_float(n, in(0), op);
      n.shape = in(0).shape;
      return;

    case OpKind::Add: case OpKind::Sub: case OpKind::Mul: case OpKind::Div: case OpKind::Maximum:
    case OpKind::Minimum: case OpKind::Pow: case OpKind::Greater: case OpKind::GreaterEqual:
    case OpKind::Less: case OpKind::Equal:
      check_float(n, in(0), op);
      check_float(n, in(1), op);
      n.shape = broadcast_shapes(in(0).shape, in(1).shape, op);
      return;

    case OpKind::Select:
      for (size_t i = 0; i < 3; ++i) check_float(n, in(i), op);
      n.shape = broadcast_shapes(broadcast_shapes(in(0).shape, in(1).shape, op), in(2).shape, op);
      return;

    case OpKind::Sum: case OpKind::Mean: case OpKind::Max: {
      check_float(n, in(0), op);
      const Shape& s = in(0).shape;
      auto axes = normalize_axes(n.attrs.ints, s.size(), op);
      n.attrs.ints = axes;
      n.shape.clear();
      for (size_t i = 0; i < s.size(); ++i) {
        const bool reduced = std::find(axes.begin(), axes.end(), static_cast<int64_t>(i)) != axes.end();
        if (!reduced) n.shape.push_back(s[i]);
        else if (n.attrs.keepdims) n.shape.push_back(1);
      }
      return;
    }

    case OpKind::ChannelMoments: {
      check_float(n, in(0), op);
      const Shape& s = in(0).shape;
      if (s.size() < 2 || s[1] == kBatch)
        fail(op, "expects (batch, channels, ...) with at least 2 dims, got shape " + shape_str(s));
      n.shape = {2, s[1]};
      return;
    }

    case OpKind::Argmax: {
      check_float(n, in(0), op);
      const Shape& s = in(0).shape;
      n.attrs.axis = norm_axis(n.attrs.axis, s.size(), op);
      n.shape = s;
      n.shape.erase(n.shape.begin() + n.attrs.axis);
      return;
    }

    case OpKind::Reshape: {
      const Shape& s = in(0).shape;
      const Shape& t = n.attrs.ints;
      int bs = 0, bt = 0;
      const int64_t ps = known_product(s, &bs), pt = known_product(t, &bt);
      for (int64_t d : t)
        if (d < 0 && d != kBatch) fail(op, "target shape " + shape_str(t) + " has a negative dim");
      if (bs != bt || ps != pt)
        fail(op, "cannot reshape " + shape_str(s) + " into " + shape_str(t) +
                     " (element counts differ)");
      n.dtype = in(0).dtype;
      n.shape = t;
      return;
    }

    case OpKind::Transpose: {
      const Shape& s = in(0).shape;
      auto perm = n.attrs.ints;
      if (perm.empty())
        for (size_t i = s.size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));
      if (perm.size() != s.size())
        fail(op, "perm of length " + std::to_string(perm.size()) + " for input of shape " + shape_str(s));
      std::vector<bool> seen(s.size(), false);
      n.shape.clear();
      for (auto& p : perm) {
        p = norm_axis(p, s.size(), op);
        if (seen[p]) fail(op, "perm repeats axis " + std::to_string(p));
        seen[p] = true;
        n.shape.push_back(s[p]);
      }
      n.attrs.ints = perm;
      n.dtype = in(0).dtype;
      return;
    }

    case OpKind::BroadcastTo: {
      check_float(n, in(0), op);
      const Shape& t = n.attrs.ints;
      if (broadcast_shapes(in(0).shape, t, op) != t)
        fail(op, "cannot broadcast " + shape_str(in(0).shape) + " to " + shape_str(t));
      n.shape = t;
      return;
    }

    case OpKind::Slice: {
      const Shape& s = in(0).shape;
      n.attrs.axis = norm_axis(n.attrs.axis, s.size(), op);
      const int64_t dim = s[n.attrs.axis];
      if (dim == kBatch) fail(op, "cannot slice along the batch dimension");
      if (n.attrs.start < 0 || n.attrs.end > dim || n.attrs.start >= n.attrs.end)
        fail(op, "range [" + std::to_string(n.attrs.start) + ", " + std::to_string(n.attrs.end) +
                     ") is invalid for axis " + std::to_string(n.attrs.axis) + " of shape " + shape_str(s));
      n.shape = s;
      n.shape[n.attrs.axis] = n.attrs.end - n.attrs.start;
      n.dtype = in(0).dtype;
      return;
    }

    case OpKind::Pad: {
      const Shape& s = in(0).shape;
      check_float(n, in(0), op);
      n.attrs.axis = norm_axis(n.attrs.axis, s.size(), op);
      if (s[n.attrs.axis] == kBatch) fail(op, "cannot pad along the batch dimension");
      if (n.attrs.start < 0 || n.attrs.end < 0) fail(op, "pad amounts must be >= 0");
      n.shape = s;
      n.shape[n.attrs.axis] += n.attrs.start + n.attrs.end;
      return;
    }

    case OpKind::Concat: {
      const Shape& s0 = in(0).shape;
      n.attrs.axis = norm_axis(n.attrs.axis, s0.size(), op);
      const auto axis = static_cast<size_t>(n.attrs.axis);
      n.shape = s0;
      if (s0[axis] == kBatch) fail(op, "cannot concatenate along the batch dimension");
      for (size_t i = 1; i < n.inputs.size(); ++i) {
        const Shape& si = in(i).shape;
        bool ok = si.size() == s0.size() && in(i).dtype == in(0).dtype;
        for (size_t d = 0; ok && d < s0.size(); ++d)
          if (d != axis && si[d] != s0[d]) ok = false;
        if (!ok)
          fail(op, "shapes " + shape_str(s0) + " and " + shape_str(si) + " differ outside axis " +
                       std::to_string(axis));
        n.shape[axis] += si[axis];
      }
      n.dtype = in(0).dtype;
      return;
    }

    case OpKind::MatMul: {
      const Shape& a = in(0).shape;
      const Shape& b = in(1).shape;
      check_float(n, in(0), op);
      check_float(n, in(1), op);
      if (a.size() != 2 || b.size() != 2)
        fail(op, "expects 2-D operands, got " + shape_str(a) + " x " + shape_str(b));
      const int64_t m = n.attrs.transpose_a ? a[1] : a[0];
      const int64_t ka = n.attrs.transpose_a ? a[0] : a[1];
      const int64_t kb = n.attrs.transpose_b ? b[1] : b[0];
      const int64_t nn = n.attrs.transpose_b ? b[0] : b[1];
      if (ka != kb)
        fail(op, "inner dimensions differ: " + shape_str(a) + (n.attrs.transpose_a ? "^T" : "") +
                     " x " + shape_str(b) + (n.attrs.transpose_b ? "^T" : ""));
      n.shape = {m, nn};
      return;
    }

    case OpKind::Conv2D: {
      check_float(n, in(0), op);
      check_float(n, in(1), op);
      const ConvGeometry g = conv_geometry(op, in(0).shape, &in(1).shape, n.attrs);
      n.shape = {g.n, g.o, g.oh, g.ow};
      return;
    }
    case OpKind::Conv2DInputGrad: {  // (g, w) -> dx, attrs.ints = x's shape
      const ConvGeometry g = conv_geometry(op, n.attrs.ints, &in(1).shape, n.attrs);
      const Shape out = {g.n, g.o, g.oh, g.ow};
      if (in(0).shape != out)
        fail(op, "gradient of shape " + shape_str(in(0).shape) + " does not match the output " + shape_str(out));
      n.shape = n.attrs.ints;
      return;
    }
    case OpKind::Conv2DWeightGrad: {  // (x, g) -> dw, attrs.ints = w's shape
      const ConvGeometry g = conv_geometry(op, in(0).shape, &n.attrs.ints, n.attrs);
      const Shape out = {g.n, g.o, g.oh, g.ow};
      if (in(1).shape != out)
        fail(op, "gradient of shape " + shape_str(in(1).shape) + " does not match the output " + shape_str(out));
      n.shape = n.attrs.ints;
      return;
    }
    case OpKind::MaxPool2D: case OpKind::AvgPool2D: {
      check_float(n, in(0), op);
      const ConvGeometry g = conv_geometry(op, in(0).shape, nullptr, n.attrs);
      n.shape = {g.n, g.c, g.oh, g.ow};
      return;
    }
    case OpKind::MaxPool2DGrad: {  // (x, g) -> dx
      const ConvGeometry g = conv_geometry(op, in(0).shape, nullptr, n.attrs);
      const Shape out = {g.n, g.c, g.oh, g.ow};
      if (in(1).shape != out)
        fail(op, "gradient of shape " + shape_str(in(1).shape) + " does not match the output " + shape_str(out));
      n.shape = in(0).shape;
      return;
    }
    case OpKind::AvgPool2DGrad: {  // (g) -> dx, attrs.ints = x's shape
      const ConvGeometry g = conv_geometry(op, n.attrs.ints, nullptr, n.attrs);
      const Shape out = {g.n, g.c, g.oh, g.ow};
      if (in(0).shape != out)
        fail(op, "gradient of shape " + shape_str(in(0).shape) + " does not match the output " + shape_str(out));
      n.shape = n.attrs.ints;
      return;
    }

    case OpKind::OneHot:
      if (in(0).dtype != DType::I32)
        fail(op, "expects int32 indices, got " + std::string(dtype_name(in(0).dtype)));
      if (n.attrs.depth <= 0) fail(op, "depth must be positive, got " + std::to_string(n.attrs.depth));
      n.shape = in(0).shape;
      n.shape.push_back(n.attrs.depth);
      return;

    case OpKind::Cast:
      n.shape = in(0).shape;
      n.dtype = n.attrs.dtype;
      return;

    case OpKind::CheckRange:
      check_float(n, in(0), op);
      if (n.attrs.name.empty() || n.attrs.message.empty())
        fail(op, "needs a label (the op it guards) and a message (the rule), both non-empty");
      if (!(n.attrs.low <= n.attrs.high))
        fail(op, "needs low <= high, got [" + std::to_string(n.attrs.low) + ", " + std::to_string(n.attrs.high) + "]");
      n.shape = {};  // a zero scalar: the value is never read, the check is what runs
      return;

    case OpKind::Assign: {
      const Node& var = in(0);
      if (var.op != OpKind::Variable)
        fail(op, "first input must be a variable, got '" + std::string(op_name(var.op)) + "'");
      if (in(1).shape != var.shape)
        fail(op, "value of shape " + shape_str(in(1).shape) + " does not match variable '" +
                     var.attrs.name + "' of shape " + shape_str(var.shape));
      check_float(n, in(1), op);
      n.shape = var.shape;
      return;
    }

    case OpKind::AdamUpdate: {
      // (param, exp_avg, exp_avg_sq, grad, step_size, sqrt(bias_correction2))
      const Node& p = in(0);
      for (size_t i = 0; i < 3; ++i) {
        if (in(i).op != OpKind::Variable)
          fail(op, "input " + std::to_string(i) + " must be a variable, got '" +
                       std::string(op_name(in(i).op)) + "'");
        if (in(i).shape != p.shape)
          fail(op, "slot '" + in(i).attrs.name + "' of shape " + shape_str(in(i).shape) +
                       " does not match parameter '" + p.attrs.name + "' of shape " + shape_str(p.shape));
      }
      if (n.inputs[0] == n.inputs[1] || n.inputs[0] == n.inputs[2] || n.inputs[1] == n.inputs[2])
        fail(op, "parameter and slots must be three different variables");
      for (size_t i = 0; i < 3; ++i)
        if (n.inputs[3] == n.inputs[i]) fail(op, "the gradient cannot be one of the variables it updates");
      if (in(3).shape != p.shape)
        fail(op, "gradient of shape " + shape_str(in(3).shape) + " does not match parameter '" + p.attrs.name +
                     "' of shape " + shape_str(p.shape));
      for (size_t i = 4; i < 6; ++i)
        if (!in(i).shape.empty())
          fail(op, "input " + std::to_string(i) + " must be a scalar, got shape " + shape_str(in(i).shape));
      for (size_t i = 3; i < 6; ++i) check_float(n, in(i), op);
      n.shape = p.shape;
      return;
    }

    case OpKind::kCount: break;
  }
  fail(op, "has no shape rule");
}

}  // namespace gometal
