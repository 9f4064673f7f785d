// Inference plans' matrix products by a variable's weights run on copies of the weights
// packed once (gemm_packed.h); the copies are refreshed when the weights are written.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

// Records that [begin, begin + bytes) of a persistent pool was written (a host upload, or a
// plan's effects): packed copies of weights there are refreshed before their next use.
void note_persistent_write(const void* begin, int64_t bytes);

// The variables a function's effects write, as (byte offset, bytes) in the persistent pool.
struct PersistentWrites {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  // note_persistent_write for each range of the pool starting at `persistent`; called first
  // when the plan runs, it also tells the plan's packed products which weights it writes.
  void note(const char* persistent) const;
};
PersistentWrites persistent_writes(const Graph& g, const FunctionSpec& fn, const std::vector<int64_t>& persistent_offset);

// A kernel for node `id` when it is a float32 matmul of an activation (kGemmPackedMinRows to
// kGemmPackedMaxRows rows) by weights in the persistent pool, and packing is not turned off
// (GOMETAL_GEMM_PACKED_KERNEL=off), in a plan that computes no weight gradient; null
// otherwise. The kernel packs the weights on its first run and again on its first run after a
// write. A plan whose effects write the weights (a training step) reads them as stored. Plans
// of one engine share one packed copy per weight.
std::unique_ptr<Kernel> make_packed_matmul_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                  const std::vector<Shape>& shapes);

}  // namespace gometal
