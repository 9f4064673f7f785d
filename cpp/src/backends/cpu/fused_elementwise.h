// One pass over memory for a fused group of elementwise ops: the group is compiled to a
// small register program run block by block, so each input is read once and each
// output written once.
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "backends/cpu/passes/fusion.h"

namespace gometal {

// Whether the fused kernel knows op (a line in elementwise_ops.h, or select, random_uniform,
// assign): an elementwise op without one is unsupported, never silently skipped.
bool fusable_on_cpu(OpKind op);

std::unique_ptr<Kernel> make_fused_elementwise(const Graph& g, const Step& step,
                                               const Fusion& f, const MemoryPlan& mem,
                                               const std::vector<Shape>& shapes);

}  // namespace gometal
