// Positions: the indices 0..T-1 of one axis of a value, T possibly a run-time (symbolic)
// size, so a model built for any sequence length can gather rows of a position table.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

// (x of any dtype) -> int32 (x.shape[axis],). With a limit, a longer axis fails the step
// (a kCheck: it runs before every effect, so a failed step changes nothing).
void positions_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  if (x.shape.empty()) fail(name_of(n), "expects an input of rank 1 or more, got a scalar");
  const int64_t axis = norm_axis(n.attrs.axis, x.shape.size(), name_of(n));
  if (n.attrs.depth < 0) fail(name_of(n), "limit must be 0 (none) or positive, got " + std::to_string(n.attrs.depth));
  if (n.attrs.depth > 0 && (n.attrs.name.empty() || n.attrs.message.empty()))
    fail(name_of(n), "a limit needs a label (who sets it) and a message (the rule), both non-empty");
  if (n.attrs.depth > 0 && !is_symbol(x.shape[axis]) && x.shape[axis] > n.attrs.depth)
    fail(name_of(n), "axis " + std::to_string(axis) + " of " + shape_str(x.shape) + " is longer than the limit " +
                         std::to_string(n.attrs.depth));
  n.attrs.axis = axis;
  n.dtype = DType::I32;
  n.shape = {x.shape[axis]};
}

}  // namespace

std::vector<OpDef> positions_op_defs() {
  return {
      // Its input only gives a size: no gradient reaches it.
      {OpKind::Positions, "positions", 1,
       {attr("axis", &Attrs::axis), attr("limit", &Attrs::depth), attr("label", &Attrs::name),
        attr("message", &Attrs::message)},
       positions_shape, Gradient::Zero, nullptr, trait::kCheck},
  };
}

}  // namespace gometal
