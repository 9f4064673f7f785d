// The kernel of the positions op (ir/ops/positions.cpp): 0..T-1 for the plan's T.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// out[i] = i for i < length. Throws std::invalid_argument "[label] message, got length"
// when limit > 0 and length > limit, before writing.
void fill_positions(int64_t length, int64_t limit, const std::string& label, const std::string& message,
                    int32_t* out);

// The kernel of a positions node, or nullptr for any other op.
std::unique_ptr<Kernel> make_positions_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes);

}  // namespace gometal
