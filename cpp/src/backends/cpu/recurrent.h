// CPU kernels of the recurrence ops (ir/ops/recurrent.cpp): the time loop of a layer and
// direction in one kernel, its backpropagation through time, and sequence_end.
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "backends/cpu/passes/memory_plan.h"
#include "gometal/ir.h"

namespace gometal {

// The kernel of node `id`, or nullptr when its op is not a recurrence op.
std::unique_ptr<Kernel> make_recurrent_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes);

}  // namespace gometal
