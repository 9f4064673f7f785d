// Reductions (sum, mean, max, argmax) over any set of axes.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cpu/kernel.h"

namespace gometal {

enum class ReduceKind : uint8_t { Sum, Mean, Max, Argmax };

struct ReduceGeometry {
  bool contiguous = false;              // reduced axes form one block: (outer, reduced, inner)
  // Reduced, kept, reduced: (lead, kept, trail) with lead and trail reduced, as batch-norm
  // statistics over (N, H, W) of an NCHW tensor.
  bool sandwich = false;
  int64_t lead = 1, kept = 1, trail = 1;
  int64_t outer = 1, reduced = 1, inner = 1;
  Shape in_shape;                       // for the general path
  std::vector<int64_t> axes;
};

ReduceGeometry reduce_geometry(const Shape& in, const std::vector<int64_t>& axes);

void reduce(ThreadPool& pool, ReduceKind kind, const ReduceGeometry& geo, const float* x, float* y);

// Images [n0, n1), on the calling thread, of a reduction that keeps dim 0 and reduces a
// trailing block of dims (passes/sample_tiling.h: reduces_trailing_block); geo is the
// whole batch's, and the arithmetic is the same as reduce()'s.
void reduce_samples(ReduceKind kind, const ReduceGeometry& geo, const float* x, float* y, int64_t n0, int64_t n1);

// y (2, channels) = the mean and biased variance of each channel of x (lead, channels,
// trail) over its lead * trail values: batch-norm statistics.
void channel_moments(ThreadPool& pool, int64_t lead, int64_t channels, int64_t trail, const float* x, float* y);

}  // namespace gometal
