// What the CPU backend runs: one mask of input dtypes per op, read by Backend::supports.
#pragma once

#include "gometal/ir.h"
#include "ir/op_registry.h"

namespace gometal {

// Whether the CPU backend has a kernel for node n with its inputs' dtypes.
bool cpu_runs(const Graph& g, const Node& n);

}  // namespace gometal
