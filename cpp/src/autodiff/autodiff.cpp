// Reverse-mode autodiff on the graph: walk the nodes between `wrt` and `loss` backwards,
// applying each op's VJP rule from its registry entry and summing the contributions per node.
#include <stdexcept>
#include <string>

#include "gometal/ir.h"
#include "ir/op_registry.h"

namespace gometal {

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

  std::vector<int> grad(n, -1);
  grad[loss] = constant(1.0f);
  std::vector<int> dx;
  for (int i = n - 1; i >= 0; --i) {
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
      grad[in] = grad[in] < 0 ? dx[j] : add(grad[in], dx[j]);
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
