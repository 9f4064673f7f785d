// Shape and dtype rules for every primitive.
#pragma once

#include <vector>

#include "gometal/ir.h"

namespace gometal {

// Fills n.shape and n.dtype from its inputs; throws std::invalid_argument naming the op and shapes.
void infer_shape(Node& n, const std::vector<Node>& nodes);

// numpy broadcasting of two shapes (kBatch only matches kBatch or 1); throws on mismatch.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);

// Normalises reduction axes (negative, empty = all) to a sorted unique list.
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, size_t rank, std::string_view op);

}  // namespace gometal
