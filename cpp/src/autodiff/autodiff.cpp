// Reverse-mode autodiff on the graph: walk the nodes between `wrt` and `loss` backwards,
// applying each op's VJP rule from its registry entry and summing the contributions per node.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "gometal/ir.h"
#include "ir/op_registry.h"

namespace gometal {
namespace {

// x itself, or the node below a chain of reshapes that has x's shape (the same floats).
int through_reshapes(const Graph& g, int x) {
  int found = x;
  for (int y = x; g.node(y).op == OpKind::Reshape;) {
    y = g.node(y).inputs[0];
    if (g.node(y).shape == g.node(x).shape) found = y;
  }
  return found;
}

// The node whose consecutive slices along `axis` `parts` are, when they cover all of it in
// order: a concat of them is that node again (the stacked gradient attention_grad returns).
int sliced_whole(const Graph& g, const std::vector<int>& parts, int64_t axis, const Shape& out) {
  int whole = -1;
  int64_t next = 0;
  for (int part : parts) {
    const Node& s = g.node(through_reshapes(g, part));
    if (s.op != OpKind::Slice || s.attrs.axis != axis || s.attrs.start != next) return -1;
    if (whole >= 0 && s.inputs[0] != whole) return -1;
    whole = s.inputs[0];
    next = s.attrs.end;
  }
  return whole >= 0 && g.node(whole).shape == out ? whole : -1;
}

// Gradient contributions that are zero-padded pieces tiling one axis (the VJPs of slices
// that cut a tensor into parts, as q, k and v of one packed projection) sum to their concat:
// one copy instead of pads and adds. -1 when `parts` are not such pieces.
int tiled_pads_as_concat(Graph& g, const std::vector<int>& parts) {
  const Node& first = g.node(parts[0]);
  if (first.op != OpKind::Pad) return -1;
  const int64_t axis = first.attrs.axis;
  const Shape out = first.shape;
  std::vector<std::pair<int64_t, int>> pieces;  // (start along the axis, padded node)
  for (int p : parts) {
    const Node& n = g.node(p);
    if (n.op != OpKind::Pad || n.attrs.axis != axis || n.shape != out) return -1;
    pieces.emplace_back(n.attrs.start, n.inputs[0]);
  }
  std::sort(pieces.begin(), pieces.end());
  std::vector<int> inputs;
  int64_t next = 0;
  for (const auto& [start, piece] : pieces) {
    if (start != next) return -1;
    next += g.node(piece).shape[axis];
    inputs.push_back(piece);
  }
  if (next != out[axis]) return -1;
  const int whole = sliced_whole(g, inputs, axis, out);
  if (whole >= 0) return whole;
  Attrs at;
  at.axis = axis;
  return g.op(OpKind::Concat, inputs, at);
}

// The sum of a node's gradient contributions, in the order they arrived.
int sum_contributions(Graph& g, const std::vector<int>& parts) {
  if (parts.size() == 1) return parts[0];
  const int tiled = tiled_pads_as_concat(g, parts);
  if (tiled >= 0) return tiled;
  int sum = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) sum = g.add(sum, parts[i]);
  return sum;
}

}  // namespace

std::vector<int> Graph::gradients(int loss, const std::vector<int>& wrt) {
  if (!node(loss).shape.empty())
    throw std::invalid_argument("[gradients] the loss must be a scalar, got shape " +
                                shape_str(node(loss).shape));
  const int n = loss + 1;
  // Nodes that depend on some wrt node, through ops a gradient can pass, and on which the
  // loss depends. Zero-gradient ops (stop_gradient, comparisons, checks) end the first set.
  std::vector<char> from_wrt(n, 0), to_loss(n, 0);
  for (int w : wrt) {
    node(w);
    if (w < n) from_wrt[w] = 1;
  }
  for (int i = 0; i < n; ++i) {
    if (from_wrt[i] || op_def(nodes_[i].op).gradient == Gradient::Zero) continue;
    for (int in : nodes_[i].inputs)
      if (from_wrt[in]) {
        from_wrt[i] = 1;
        break;
      }
  }
  to_loss.back() = 1;  // the loss itself
  for (int i = n - 1; i >= 0; --i) {
    if (!to_loss[i]) continue;
    for (int in : nodes_[i].inputs) to_loss[in] = 1;
  }

  // Each node's contributions are summed once all have arrived (its readers come later in
  // the graph, so before it in this walk): the sum can then take their shape into account.
  std::vector<std::vector<int>> contributions(n);
  std::vector<int> grad(n, -1);
  grad[loss] = constant(1.0f);
  std::vector<int> dx;
  for (int i = n - 1; i >= 0; --i) {
    if (grad[i] < 0 && !contributions[i].empty()) grad[i] = sum_contributions(*this, contributions[i]);
    if (grad[i] < 0 || !from_wrt[i] || !to_loss[i] || nodes_[i].inputs.empty()) continue;
    const OpDef& def = op_def(nodes_[i].op);
    if (def.gradient == Gradient::None)
      throw std::invalid_argument("[gradients] the loss depends on '" + std::string(def.name) + "' (node " +
                                  std::to_string(i) + "), which is not differentiable; stop the gradient "
                                  "before it (stop_gradient) or leave it out of the loss");
    dx.assign(nodes_[i].inputs.size(), -1);
    def.vjp(*this, i, grad[i], dx);
    const std::vector<int> inputs = nodes_[i].inputs;
    for (size_t j = 0; j < inputs.size(); ++j) {
      const int in = inputs[j];
      if (dx[j] < 0 || !from_wrt[in]) continue;
      contributions[in].push_back(dx[j]);
    }
  }

  std::vector<int> out;
  out.reserve(wrt.size());
  for (int w : wrt) {
    if (w < n && grad[w] >= 0) {
      out.push_back(grad[w]);
    } else {
      // No path from w to the loss: its gradient is zero.
      out.push_back(broadcast_to(constant(0.0f), node(w).shape));
    }
  }
  return out;
}

}  // namespace gometal
