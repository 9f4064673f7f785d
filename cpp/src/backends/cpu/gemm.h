// Matrix products on the BLAS, split across gometal's thread pool.
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"

namespace gometal {

// C(M x N) = op(A) op(B), row-major; A is (M x K) or (K x M) when transpose_a, likewise B.
void gemm(ThreadPool& pool, bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
          const float* a, const float* b, float* c);

// C(M x N) = op(A) op(B) with explicit leading dimensions of A and B (a slice's columns read in
// place): the BLAS, split across the pool as gemm splits it.
void gemm_strided(ThreadPool& pool, bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float* c);

// One thread: C = op(A) op(B) + beta C with explicit leading dimensions (row-major).
void gemm_serial(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace gometal
