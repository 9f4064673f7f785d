// Validation kernels: scan a value and throw std::invalid_argument naming the op, the rule,
// the offending value and where it sits, as PyTorch's input checks do.
#pragma once

#include <cstdint>
#include <string>

#include "gometal/ir.h"

namespace gometal {

// Throws "[label] message, got V at index (i, j, ...)" for the first value outside
// [low, high] or NaN; `shape` is concrete.
void check_range(const float* x, const Shape& shape, float low, float high, const std::string& label,
                 const std::string& message);

}  // namespace gometal
