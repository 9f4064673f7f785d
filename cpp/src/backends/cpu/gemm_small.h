// Matrix products with few rows (inference at small batch) on register tiles, no packing.
#pragma once

#include <cstdint>
#include <string_view>

#include "backends/cpu/kernel.h"

namespace gometal {

// The instruction-set paths of the small-row product; GOMETAL_GEMM_SMALL_KERNEL forces one
// (portable, avx2, avx512), or "blas" sends every product to the BLAS.
enum class GemmSmallPath { Blas, Portable, Avx2, Avx512 };

// Products with at most this many rows of A (not transposed) run here: the BLAS repacks all of
// B on every call, which costs more than the product at these sizes (from about 32 rows the
// BLAS's packed kernel wins, measured on 512 x 784 and 256 x 512 weights).
constexpr int64_t kGemmSmallMaxRows = 24;

// The path GOMETAL_GEMM_SMALL_KERNEL names, or the fastest the CPU has; throws std::invalid_argument
// for an unknown name or a path the CPU lacks.
GemmSmallPath choose_gemm_small_path();

// C(M x N) = A(M x K) B(K x N), or A B^T with B stored N x K, row-major, when the product suits the small-row kernel;
// returns false (C untouched) when the caller should use the BLAS instead.
bool gemm_small(ThreadPool& pool, bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                const float* a, const float* b, float* c);

}  // namespace gometal
