#include "backends/cpu/gemm.h"

#include <algorithm>

#include "backends/cpu/blas.h"

namespace gometal {
namespace {
// Products smaller than this many multiply-adds run on one thread.
constexpr int64_t kParallelMacs = 1 << 17;
}

void gemm(ThreadPool& pool, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
          const float* b, float* c) {
  const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
  const int lda = static_cast<int>(ta ? m : k), ldb = static_cast<int>(tb ? k : n), ldc = static_cast<int>(n);
  if (k == 0) {
    std::fill(c, c + m * n, 0.0f);
    return;
  }
  const int threads = pool.size();
  if (threads == 1 || m * n * k < kParallelMacs) {
    GOMETAL_SGEMM(CblasRowMajor, opa, opb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f,
                  a, lda, b, ldb, 0.0f, c, ldc);
    return;
  }
  // Each part is an independent single-threaded gemm. Splitting rows ran 5-15 % faster
  // on the MLP's products (OpenBLAS Haswell kernels) whenever each part keeps >= 64 rows.
  const bool split_rows = m / threads >= 64 || m >= n;
  const int64_t extent = split_rows ? m : n;
  const int parts = static_cast<int>(std::min<int64_t>(threads, (extent + 15) / 16));
  pool.parallel_for(parts, [&](int part, int) {
    int64_t lo, hi;
    split_range(extent, parts, part, 16, &lo, &hi);
    if (lo >= hi) return;
    if (split_rows) {
      const float* ap = ta ? a + lo : a + lo * k;
      GOMETAL_SGEMM(CblasRowMajor, opa, opb, static_cast<int>(hi - lo), static_cast<int>(n), static_cast<int>(k),
                    1.0f, ap, lda, b, ldb, 0.0f, c + lo * n, ldc);
    } else {
      const float* bp = tb ? b + lo * k : b + lo;
      GOMETAL_SGEMM(CblasRowMajor, opa, opb, static_cast<int>(m), static_cast<int>(hi - lo), static_cast<int>(k),
                    1.0f, a, lda, bp, ldb, 0.0f, c + lo, ldc);
    }
  });
}

void gemm_serial(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  GOMETAL_SGEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
                c, static_cast<int>(ldc));
}

}  // namespace gometal
