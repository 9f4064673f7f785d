// The kernels of the collective ops (ir/ops/collective.cpp).
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// The kernel of an all_reduce_mean, all_reduce_mean_start, all_reduce_mean_wait or all_gather
// node, or nullptr for any other op.
std::unique_ptr<Kernel> make_collective_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                               const std::vector<Shape>& shapes);

// Advances the non-blocking all-reduces in flight (the communicator's progress: one test of
// each request); one relaxed atomic load when none is. The run loop calls it after every
// kernel, so a bucket's exchange moves on while the backward pass runs.
void progress_collectives();

}  // namespace gometal
