#include "passes/relu_pool_mask.h"

namespace gometal {
namespace {

bool is_zero_constant(const Graph& g, int id) {
  const Node& n = g.node(id);
  return n.op == OpKind::Constant && n.shape.empty() && n.dtype == DType::F32 && n.attrs.value == 0.0f;
}

bool same_window(const Attrs& a, const Attrs& b) {
  return a.kernel_size == b.kernel_size && a.stride == b.stride && a.padding == b.padding;
}

// The max pool of y with `window`, or -1.
int forward_max_pool(const Graph& g, int y, const Attrs& window) {
  for (int id = 0; id < g.size(); ++id) {
    const Node& n = g.node(id);
    if (n.op == OpKind::MaxPool2D && n.inputs[0] == y && same_window(n.attrs, window)) return id;
  }
  return -1;
}

}  // namespace

std::vector<std::pair<int, int>> narrow_relu_pool_masks(Graph& g) {
  std::vector<std::pair<int, int>> rewrites;
  const int original = g.size();
  for (int s = 0; s < original; ++s) {
    const Node& sel = g.node(s);
    if (sel.op != OpKind::Select || !is_zero_constant(g, sel.inputs[1])) continue;
    const Node& mask = g.node(sel.inputs[0]);
    const Node& routed = g.node(sel.inputs[2]);
    if (mask.op != OpKind::GreaterEqual || !is_zero_constant(g, mask.inputs[0])) continue;
    const int y = mask.inputs[1];
    if (g.node(y).op != OpKind::Relu || routed.op != OpKind::MaxPool2DGrad || routed.inputs[0] != y) continue;
    const Attrs window = routed.attrs;
    const int pooled = forward_max_pool(g, y, window);
    if (pooled < 0) continue;
    const int zero = sel.inputs[1], pooled_grad = routed.inputs[1];
    const int narrow_mask = g.op(OpKind::GreaterEqual, {zero, pooled});
    const int masked = g.op(OpKind::Select, {narrow_mask, zero, pooled_grad});
    const int rerouted = g.op(OpKind::MaxPool2DGrad, {y, masked}, window);
    g.redirect(s, rerouted);
    rewrites.emplace_back(s, rerouted);
  }
  return rewrites;
}

}  // namespace gometal
