// The kernel of the convolution and pooling ops (conv2d, its two gradients, max and
// average pooling and their gradients).
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// The kernel of a convolution or pooling node, or nullptr for any other op.
std::unique_ptr<Kernel> make_window_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                           const std::vector<Shape>& shapes);

}  // namespace gometal
