// Matrix products against weights packed once into column panels (inference plans): the
// register-blocked kernel reads each panel contiguously, with no per-call repacking of B.
#pragma once

#include <cstdint>
#include <optional>
#include "backends/cpu/kernel.h"
#include "backends/cpu/simd_paths.h"
#include "runtime/memory.h"

namespace gometal {

// Products of kGemmPackedMinRows to kGemmPackedMaxRows rows of A run on packed weights; past
// the maximum the BLAS's own packing is amortized over enough rows. One row too: its panels,
// read back and forth, stay mostly in the L2 cache, where the BLAS's matrix-vector product
// streams the weights (1 thread, batch 1, loaded machine, medians of alternating blocks: the
// CNN head's 4096 x 128 with its bias and ReLU 50 -> 37 us alone, workload C's CNN 0.269 ->
// 0.248 ms; workload A's MLP 0.0513 -> 0.0401 ms, and in bench_latency 1.08x -> 1.42x
// onnxruntime; 2 threads within the noise).
constexpr int64_t kGemmPackedMinRows = 1, kGemmPackedMaxRows = 1024;

// Fewer output columns than one 16-float vector leave most of a panel's lanes idle: the
// BLAS measured up to 2.2x faster there (8 rows, K = 4096, N = 1 to 10), so such products
// pack only when GOMETAL_GEMM_PACKED_KERNEL names a path (the tests' way to reach the tails).
constexpr int64_t kGemmPackedMinColumns = 16;

// The path GOMETAL_GEMM_PACKED_KERNEL names (portable, avx2, avx512), the fastest this CPU
// has when unset, or std::nullopt for "off" (weights are never packed). Throws
// std::invalid_argument naming the variable for an unknown name or a path the CPU lacks.
std::optional<SimdPath> choose_gemm_packed_path();

// B (K x N, or N x K when transposed: a dense layer's weight) as ceil(N / width) panels of
// K rows x `width` columns each, zero-padded past column N; width depends on the path.
struct PackedWeights {
  SimdPath path = SimdPath::Portable;
  int64_t n = 0, k = 0, width = 0;
  AlignedBuffer panels;  // 64-byte aligned: every panel row starts a cache line on AVX-512
};

// The panel width the path's register tile covers.
int64_t packed_panel_width(SimdPath path);

// Packs B into `out` (reusing its storage when the size matches).
void pack_weights(SimdPath path, bool transpose_b, int64_t n, int64_t k, const float* b, PackedWeights* out);

// What a packed product applies to each sum after its bias: nothing, max(0, .), or exact GELU
// (x Phi(x), elementwise_ops.h's gelu, the same bits as the element-wise op).
enum class DenseActivation : uint8_t { None, Relu, Gelu };

// Where a product's rows (batch x t) and columns (heads x d) are stored: row-major when t is
// 0, else as (batch, heads, t, d), the split into attention heads a transpose would make.
struct HeadsLayout {
  int64_t t = 0, heads = 0, d = 0;
};

// C(M x N) = A(M x K) B with B packed, row-major (or in `heads`' layout); then + bias (length N, when not null)
// and the activation, or + bias then + residual (M x N like C, when not null; it may not
// overlap C). Columns are split across the pool's threads when the product is
// large enough to pay for waking them. `backwards` visits each thread's panels last to first
// (the same bits: every column's sums run over K in order either way).
void gemm_packed(ThreadPool& pool, int64_t m, const float* a, const PackedWeights& b, float* c,
                 const float* bias = nullptr, DenseActivation activation = DenseActivation::None,
                 bool backwards = false, const float* residual = nullptr, HeadsLayout heads = {});

}  // namespace gometal
