// Convolution epilogues: a float32 conv2d whose only reader is a fused elementwise step
// that adds a per-channel bias, scales and shifts per channel (an inference batch norm)
// and applies a ReLU, in that order (each part optional), becomes one step: the
// convolution applies them while its sums are still in registers, and the conv's own
// output is never written to memory (ONNX Runtime's fused Conv does the same).
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "backends/cpu/passes/fusion.h"
#include "backends/cpu/passes/memory_plan.h"
#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

// Merges each such conv2d with its epilogue step: the merged step (not fused) lists the
// conv then the chain's nodes, sits where the epilogue step stood, and only the chain's
// last value keeps a buffer. Run after fuse_elementwise, before sample tiling and the
// memory plan.
void fuse_conv_epilogues(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                         Fusion& f);

// The kernel of a merged step, for its conv2d node `id` (whose value has no buffer once
// merged); nullptr for any other node.
std::unique_ptr<Kernel> make_conv_epilogue_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                  const std::vector<Shape>& shapes);

}  // namespace gometal
