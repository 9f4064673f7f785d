// Batched products that are only ever summed over their batch: a weight's gradient,
// x^T g per sample then a sum over the samples, is one product over all rows.
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "backends/cpu/passes/memory_plan.h"
#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

// Per node id: for a sum that adds up a batched matmul(a, b, transpose_a) over every batch
// dim, the id of that matmul (its only reader); -1 elsewhere. The operands must share
// their batch dims exactly (no broadcasting), so the batch folds into the contracted dim.
std::vector<int> find_summed_products(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                                      const std::vector<Shape>& shapes);

// Each last-axis slice of a computed value read only by such a product (the recurrence
// gradient's columns) joins the product's step without a buffer: the product reads the columns
// in place, a row stride apart, instead of a copy. Runs before sample tiling and plan_memory.
void read_slices_in_place(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          const std::vector<int>& summed_product, Fusion& f);

// The kernels of such a pair, or nullptr when node `id` is neither half of one: the matmul
// becomes one (M x N) product over all batch rows, written at the start of its own buffer,
// and the sum copies those M x N values out (the sum's buffer may share memory with the
// operands, which are dead by then).
std::unique_ptr<Kernel> make_summed_product_kernel(const Graph& g, int id, const std::vector<int>& summed_product,
                                                   const MemoryPlan& mem, const std::vector<Shape>& shapes);

}  // namespace gometal
