// Dense epilogues: a matmul by packed weights (gemm_packed_weights.h) whose only reader is a
// fused elementwise step that adds a per-column bias and then, optionally, applies a ReLU or
// an exact GELU (a Dense layer's add and activation, a transformer's feed-forward) or adds a
// same-shape residual (a transformer's projection back into its stream) becomes one step: the
// product does so while its sums are in registers or L1, and its own output is never written
// to memory. A bias add (and activation) whose result is only split into attention heads,
// (N, T, H * D) -> (N, H, T, D) by a reshape and a transpose, takes the transpose in too: the
// product stores each head's rows where the transpose would have put them.
#pragma once

#include <vector>

#include "backends/cpu/gemm_packed.h"
#include "backends/cpu/passes/fusion.h"
#include "backends/cpu/passes/memory_plan.h"
#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

// Whether matmul node `id` runs on packed weights in this plan: float32, A not transposed
// (its leading axes, not broadcast, are rows), B a 2-D variable or constant,
// kGemmPackedMinRows to kGemmPackedMaxRows rows, at least kGemmPackedMinColumns columns
// (unless a path is forced), packing not turned off, and no weight
// gradient in the plan (no matmul of a transposed A; `shapes` are empty for nodes the plan
// does not run). `weights_persistent`: B's buffer lies in the persistent pool.
bool runs_on_packed_weights(const Graph& g, int id, const std::vector<Shape>& shapes, bool weights_persistent);
// The rows of a product of shape `out`: all its axes but the last.
int64_t packed_rows(const Shape& out);

// Merges each such matmul with its epilogue step, unless the plan's effects write the weights
// (a training step keeps its steps): the merged step (not fused) lists the matmul, the add and
// the activation or residual add, sits where the epilogue step stood, and only the chain's
// last value keeps a buffer. B or the bias may be a row slice of a stored value (an attention's part of its
// in_proj weight) that nothing else reads: the slice's step goes, and the product reads the
// rows in place (stored_rows). Run after fuse_elementwise, before sample tiling and the
// memory plan.
void fuse_dense_epilogues(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          Fusion& f);

// Where value `id` lies: its own buffer, or, for a row slice of a stored weight or bias that
// fuse_dense_epilogues left without one (the product reads it in place), its rows in the
// stored value's buffer.
BufRef stored_rows(const Graph& g, int id, const MemoryPlan& mem, const std::vector<Shape>& shapes);

// The epilogue of matmul `id` once merged (its value has no buffer): the bias node, the
// activation that follows (relu, gelu or none) or the residual node added after the bias
// (-1: none), and the node whose buffer receives the result. Throws std::logic_error when the
// merged chain is not there.
struct DenseEpilogue {
  int bias = -1;
  DenseActivation activation = DenseActivation::None;
  int residual = -1;
  HeadsLayout heads;  // t > 0: stored split into heads, as the transpose `last` reads it
  int last = -1;
};
DenseEpilogue merged_dense_epilogue(const Graph& g, int id, const MemoryPlan& mem, const std::vector<Shape>& shapes);

}  // namespace gometal
