// Kernels of the ops sequence models are built from: gather, scatter_add, batched matmul,
// layer_norm and rms_norm with their gradients.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/kernel.h"
#include "backends/cpu/passes/memory_plan.h"
#include "gometal/ir.h"

namespace gometal {

// The kernel of node `id`, or nullptr when its op is not one of these (a 2-D matmul
// included: it keeps its own kernel).
std::unique_ptr<Kernel> make_sequence_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                             const std::vector<Shape>& shapes);

// A norm's kernel that keeps its rows' statistics, or a norm gradient's that reads them
// (passes/fusion.h: keep_norm_statistics), with `line`, its description, saying so; nullptr
// for any other node.
std::unique_ptr<Kernel> make_saved_norm_stats_kernel(const Graph& g, int id, const Fusion& f, const MemoryPlan& mem,
                                                    const std::vector<Shape>& shapes, std::string* line);

}  // namespace gometal
