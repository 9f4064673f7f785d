// Leaves, and the ops that move or check values without arithmetic: one_hot, cast,
// random_uniform, stop_gradient, check_range.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void one_hot_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  if (x.dtype != DType::I32 && x.dtype != DType::I64)
    fail(name_of(n), "expects int32 or int64 indices, got " + std::string(dtype_name(x.dtype)));
  if (n.attrs.depth <= 0) fail(name_of(n), "depth must be positive, got " + std::to_string(n.attrs.depth));
  n.shape = x.shape;
  n.shape.push_back(n.attrs.depth);
}

void cast_shape(Node& n, const std::vector<Node>& nodes) {
  n.shape = input(n, nodes, 0).shape;
  n.dtype = n.attrs.dtype;
}

void same_shape(Node& n, const std::vector<Node>& nodes) {
  require_float(n, input(n, nodes, 0));
  n.shape = input(n, nodes, 0).shape;
  n.dtype = input(n, nodes, 0).dtype;
}

// stop_gradient passes any dtype through.
void identity_shape(Node& n, const std::vector<Node>& nodes) {
  n.shape = input(n, nodes, 0).shape;
  n.dtype = input(n, nodes, 0).dtype;
}

void check_range_shape(Node& n, const std::vector<Node>& nodes) {
  require_float(n, input(n, nodes, 0));
  if (n.attrs.name.empty() || n.attrs.message.empty())
    fail(name_of(n), "needs a label (the op it guards) and a message (the rule), both non-empty");
  if (!(n.attrs.low <= n.attrs.high))
    fail(name_of(n), "needs low <= high, got [" + std::to_string(n.attrs.low) + ", " + std::to_string(n.attrs.high) +
                         "]");
  n.shape = {};  // a zero scalar: the value is never read, the check is what runs
}

// A float-to-float cast passes the gradient; from integers nothing flows back.
void vjp_cast(Graph& gr, int y, int g, std::vector<int>& dx) {
  if (gr.node(gr.node(y).inputs[0]).dtype == DType::F32) dx[0] = g;
}

bool cast_is_alias(const Graph& g, const Node& n) { return g.node(n.inputs[0]).dtype == n.attrs.dtype; }
bool always_alias(const Graph&, const Node&) { return true; }

}  // namespace

std::vector<OpDef> leaf_op_defs() {
  return {
      {OpKind::Input, "input", 0, {}, nullptr, Gradient::Zero, nullptr, trait::kLeaf},
      {OpKind::Variable, "variable", 0, {}, nullptr, Gradient::Zero, nullptr, trait::kLeaf},
      {OpKind::Scalar, "scalar", 0, {}, nullptr, Gradient::Zero, nullptr, trait::kLeaf},
      {OpKind::Constant, "constant", 0, {}, nullptr, Gradient::Zero, nullptr, trait::kLeaf},
  };
}

std::vector<OpDef> misc_op_defs() {
  return {
      // Labels in, a float one-hot out: nothing to differentiate.
      {OpKind::OneHot, "one_hot", 1, {attr("depth", &Attrs::depth)}, one_hot_shape, Gradient::Zero},
      {OpKind::Cast, "cast", 1, {attr("dtype", &Attrs::dtype)}, cast_shape, Gradient::Rule, vjp_cast, 0, nullptr,
       cast_is_alias},
      // Its input only gives the shape: no gradient reaches it.
      {OpKind::RandomUniform, "random_uniform", 1, {}, same_shape, Gradient::Zero, nullptr,
       trait::kElementwise | trait::kRandom},
      {OpKind::StopGradient, "stop_gradient", 1, {}, identity_shape, Gradient::Zero, nullptr, 0, nullptr, always_alias},
      {OpKind::CheckRange, "check_range", 1,
       {attr("low", &Attrs::low), attr("high", &Attrs::high), attr("label", &Attrs::name),
        attr("message", &Attrs::message)},
       check_range_shape, Gradient::Zero, nullptr, trait::kCheck},
  };
}

}  // namespace gometal
