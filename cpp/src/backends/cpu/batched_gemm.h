// Batched matrix products (rank >= 3, broadcasting batch dims) on the BLAS.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

struct BatchedGemm {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  // Per output matrix, where its operands start (in floats); a broadcast operand repeats.
  std::vector<int64_t> a_offset, b_offset;
  bool a_is_one_block = false;  // a's matrices are consecutive and b is one matrix: one gemm
};

// The plan for op(A) op(B) with concrete shapes a, b (rank >= 2) and the output's shape.
BatchedGemm batched_gemm_geometry(const Shape& a, const Shape& b, const Shape& out, bool ta, bool tb);

void batched_gemm(ThreadPool& pool, const BatchedGemm& geo, const float* a, const float* b, float* c);

}  // namespace gometal
