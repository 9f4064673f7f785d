// A graph pass: ReLU's backward mask, when a max pool reads the ReLU, is applied to the
// pooled gradient instead of the full one.
#pragma once

#include <utility>
#include <vector>

#include "gometal/ir.h"

namespace gometal {

// Rewrites select(0 >= y, 0, max_pool2d_grad(y, pg)), where y = relu(x) and the graph also
// holds max_pool2d(y) = p with the same window, into max_pool2d_grad(y, select(0 >= p, 0, pg)).
// The gradient goes to each window's maximum, which is <= 0 exactly when p is, so the result
// is the same, and the select runs over a quarter of the values for 2x2 windows. Readers of
// a rewritten node are redirected; returns (old, new) pairs, for function outputs that name
// an old node.
std::vector<std::pair<int, int>> narrow_relu_pool_masks(Graph& g);

}  // namespace gometal
