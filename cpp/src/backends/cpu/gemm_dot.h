// C = A B^T with few rows of A and a deep K, both operands read along K as stored: a Dense
// layer's forward product on a flattened feature map (workload B: 32 x 4096 by 128 x 4096).
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"

namespace gometal {

// Computes C (M x N, row-major) = A (M x K) B^T with B stored (N x K), and returns true, when the
// product suits the dot-product tile: AVX-512, 24 < M <= 64, K >= 1024. Returns false, C
// untouched, otherwise: the caller runs the BLAS, which packs all of B on each call and ran
// these at half the machine's rate. GOMETAL_GEMM_DOT_KERNEL=blas sends every product to the
// BLAS, as do portable and avx2; an unknown name, or a path the CPU lacks, throws
// std::invalid_argument naming the variable.
bool gemm_dot(ThreadPool& pool, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);

}  // namespace gometal
