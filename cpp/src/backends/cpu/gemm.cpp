#include "backends/cpu/gemm.h"

#include <algorithm>
#include <array>
#include <optional>

#include "backends/cpu/blas.h"
#include "backends/cpu/gemm_dot.h"
#include "backends/cpu/gemm_packed.h"
#include "backends/cpu/gemm_small.h"
#include "backends/cpu/gemm_transposed_a.h"

namespace gometal {
namespace {
// Products smaller than this many multiply-adds run on one thread.
constexpr int64_t kParallelMacs = 1 << 17;

// Transposed B deeper than this in K packs slowly (one float gathered from each row of B):
// at 768 rows its packing took 10-25 % of the product, more than the register tile saves.
constexpr int64_t kPackTransposedMaxK = 256;
// The packed kernel streams all of A past each panel of B (64 columns on AVX-512): from
// three panels on, the BLAS's blocking of A wins with A not in cache.
constexpr int64_t kPackMaxColumns = 128;
// Bounds each of the calling thread's packings (8 of them at most) to 1 MB.
constexpr int64_t kPackMaxFloats = int64_t{1} << 18;

// Whether op(A) op(B) runs faster on B packed per call than on the BLAS. Measured on one
// thread (Zen 4, AVX-512, CPU time, caches flushed before each product) on the GPT's: by
// N = 128, 768 rows, K = 128 / 384 / 512 6 / 15 / 10 % faster (4096 rows, K = 512: 12 %);
// N = 384 and 512 with K = 128 3-5 % slower; a transposed B of K = 512 as fast (its packing
// eats the gain) below 1024 rows.
bool packs_per_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  if (ta || m <= kGemmSmallMaxRows || n < 64 || n > kPackMaxColumns || n % 16 != 0 || n * k > kPackMaxFloats)
    return false;
  return !tb || k <= kPackTransposedMaxK || m > kGemmPackedMaxRows;
}

// The calling thread's packings of B, reused by size: a training step's products come in a
// few sizes, so the steady state packs into storage it already holds.
PackedWeights& packing_for(SimdPath path, int64_t n, int64_t k) {
  constexpr size_t kSlots = 8;
  thread_local std::array<PackedWeights, kSlots> slots;
  thread_local size_t next_victim = 0;
  const int64_t width = packed_panel_width(path);
  const size_t bytes = align_up(static_cast<size_t>((n + width - 1) / width * width * k) * sizeof(float));
  for (PackedWeights& slot : slots)
    if (slot.panels.bytes() == bytes) return slot;
  PackedWeights& slot = slots[next_victim];
  next_victim = (next_victim + 1) % kSlots;
  return slot;
}
}  // namespace

void gemm(ThreadPool& pool, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
          const float* b, float* c) {
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  if (k == 0) {
    std::fill(c, c + m * n, 0.0f);
    return;
  }
  if (gemm_small(pool, ta, tb, m, n, k, a, b, c)) return;
  if (ta && !tb && gemm_transposed_a(pool, m, n, k, a, b, c)) return;
  if (!ta && tb && gemm_dot(pool, m, n, k, a, b, c)) return;
  if (packs_per_call(ta, tb, m, n, k)) {
    // Read at each call (a getenv), as inference plans do when built: tests switch paths. Only
    // the AVX-512 tile was measured against the BLAS here (its 64-column panels).
    const std::optional<SimdPath> path = choose_gemm_packed_path();
    if (path == SimdPath::Avx512) {
      PackedWeights& packed = packing_for(*path, n, k);
      pack_weights(*path, tb, n, k, b, &packed);
      gemm_packed(pool, m, a, packed, c);
      return;
    }
  }
  gemm_strided(pool, ta, tb, m, n, k, a, lda, b, ldb, c);
}

void gemm_strided(ThreadPool& pool, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float* c) {
  if (k == 0) {
    std::fill(c, c + m * n, 0.0f);
    return;
  }
  const int threads = pool.size();
  if (threads == 1 || m * n * k < kParallelMacs) {
    gemm_serial(ta, tb, m, n, k, a, lda, b, ldb, 0.0f, c, n);
    return;
  }
  // Each part is an independent single-threaded gemm. Splitting rows ran 5-15 % faster
  // on the MLP's products (OpenBLAS Haswell kernels) whenever each part keeps >= 64 rows.
  const bool split_rows = m / threads >= 64 || m >= n;
  const int64_t extent = split_rows ? m : n;
  const int parts = static_cast<int>(std::min<int64_t>(threads, (extent + 15) / 16));
  for_split_ranges(pool, extent, parts, 16, [&](int64_t lo, int64_t hi) {
    if (split_rows)
      gemm_serial(ta, tb, hi - lo, n, k, ta ? a + lo : a + lo * lda, lda, b, ldb, 0.0f, c + lo * n, n);
    else
      gemm_serial(ta, tb, m, hi - lo, k, a, lda, tb ? b + lo * ldb : b + lo, ldb, 0.0f, c + lo, n);
  });
}

void gemm_serial(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  GOMETAL_SGEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
                c, static_cast<int>(ldc));
}

}  // namespace gometal
