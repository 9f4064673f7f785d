// C = A^T B with A stored (K x M) and B (K x N), both row-major: a weight gradient, dW = dY^T X,
// summed over a training batch's rows. Each step of K reads a few floats of one row of A and a
// few vectors of one row of B, so the register tile runs on both as stored, with no packing.
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"

namespace gometal {

// Computes C (M x N, row-major) = A^T B and returns true when the product suits the register
// tile: AVX-512, N a multiple of 64, 24 < M <= 640, K >= 256, and N <= 128 past K = 1024
// (where the tile was measured against the BLAS). Returns false, C untouched, otherwise: the caller runs the BLAS.
// On several threads a K of at least 256 per thread is split across them (each sums its own
// rows, then the partials are added), so the sum's order differs from one thread's.
// GOMETAL_GEMM_TRANSPOSED_A_KERNEL=blas sends every product to the BLAS, as do portable and avx2
// (the tile is AVX-512 only); unset, the CPU's fastest path. An unknown name, or a path the
// CPU lacks, throws std::invalid_argument naming the variable.
bool gemm_transposed_a(ThreadPool& pool, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);

}  // namespace gometal
