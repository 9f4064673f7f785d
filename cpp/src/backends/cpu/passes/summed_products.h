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

// Each last-axis slice of a computed value whose every reader can read its columns in place
// (such a product, a scatter_add's updates, a batched product's A against a 2-D B, a sum over
// all leading axes, a recurrence's x: the recurrence gradient's d(xp) and state columns, the
// h columns of a layer's output) joins each reader's
// step without a buffer (the one node listed in all of them; step_of names the last), and its
// readers read the columns a row stride apart instead of a copy.
// Runs before sample tiling and plan_memory.
void read_slices_in_place(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          const std::vector<int>& summed_product, Fusion& f);

// Whether `sum` adds up `x` over every axis but its last (a gate's bias gradient from d(xp)).
bool sums_leading_axes(const Node& sum, const Shape& x);

// Where a kernel reads `value` and its row stride `ld` in floats: its own buffer (ld its last
// dim), or for a last-axis slice that read_slices_in_place left without one, its columns
// inside the source's rows (ld the source's last dim).
BufRef read_in_place(const Graph& g, int value, const MemoryPlan& mem, const std::vector<Shape>& shapes, int64_t* ld);

// The kernels of such a pair, or nullptr when node `id` is neither half of one: the matmul
// becomes one (M x N) product over all batch rows, written at the start of its own buffer,
// and the sum copies those M x N values out (the sum's buffer may share memory with the
// operands, which are dead by then).
std::unique_ptr<Kernel> make_summed_product_kernel(const Graph& g, int id, const std::vector<int>& summed_product,
                                                   const MemoryPlan& mem, const std::vector<Shape>& shapes);

}  // namespace gometal
