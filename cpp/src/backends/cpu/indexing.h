// Gather and scatter-add over the rows of a (rows x dim) table, with the indices checked.
#pragma once

#include <cstdint>
#include <string>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// Throws std::invalid_argument "[op] index V at position (i, j, ...) of the indices of shape S
// is out of range for a table of R rows (0 to R - 1)" for the first index outside [0, rows).
// Runs on the calling thread, so the exception leaves the step cleanly.
void check_indices(const int32_t* indices, const Shape& shape, int64_t rows, const std::string& op);

// out[i, :] = table[indices[i], :] for i < count.
void gather_rows(ThreadPool& pool, const float* table, int64_t dim, const int32_t* indices, int64_t count,
                 float* out);

// out (rows x dim) = 0, then out[indices[i], :] += updates[i, :] for i < count, in order of i
// (columns are split across threads, so the sums do not depend on the thread count). Update
// rows lie ld >= dim floats apart: a slice's columns read in place.
void scatter_add_rows(ThreadPool& pool, const float* updates, int64_t dim, int64_t ld, const int32_t* indices,
                      int64_t count, int64_t rows, float* out);

}  // namespace gometal
