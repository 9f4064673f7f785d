// VJP rules: one table entry per primitive.
#pragma once

#include <vector>

#include "gometal/ir.h"

namespace gometal {

// Given node `y` and the gradient `g` of the loss w.r.t. y, appends nodes computing the
// gradient w.r.t. each input; `dx[i]` stays -1 for inputs that receive no gradient.
using VjpRule = void (*)(Graph& graph, int y, int g, std::vector<int>& dx);

VjpRule vjp_rule(OpKind op);  // nullptr for non-differentiable ops

}  // namespace gometal
