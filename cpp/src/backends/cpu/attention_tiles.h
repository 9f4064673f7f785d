// The block products of the fused attention on register tiles: scores (32 queries x 128 keys
// over D), and the products back onto D columns. The BLAS spent more time packing such small
// operands than multiplying them, and could not add into its output on its fast path.
#pragma once

#include <cstdint>
#include <optional>

#include "backends/cpu/simd_paths.h"

namespace gometal::attention_tiles {

// c (rows x cols, row stride ldc) = a b, or c += a b when `accumulate`. a's element (r, p) is
// a[r * a_row + p * a_depth] (a_row = 1 reads a stored transposed); b is (depth x cols), row
// stride ldb. Columns past the last whole vector are computed one by one.
struct BlockProduct {
  const float* a;
  int64_t a_row, a_depth;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int64_t rows, cols, depth;
  bool accumulate;
};

void multiply(SimdPath path, const BlockProduct& p);

// Rows the row functions read hold -inf from n up to a multiple of this many floats.
inline constexpr int64_t kRowPadding = 16;

// The softmax's row passes at the path's vector width (the compiler's own loops ran eight lanes
// wide), over whole vectors into the -inf padding: the largest of x[0..n); x[c] = exp(x[c] - m),
// all x[c] <= m, returning their sum; and a row of the backward pass, p[c] = exp(p[c] - lse),
// ds[c] = p[c] (ds[c] - delta) (0 in the padding).
float row_max(SimdPath path, const float* x, int64_t n);
float exp_and_sum(SimdPath path, float* x, float m, int64_t n);
void probabilities_and_score_grads(SimdPath path, float* p, float* ds, float lse, float delta, int64_t n);

// The path GOMETAL_ATTENTION_KERNEL names (portable, avx2, avx512, or blas: std::nullopt, the
// BLAS products), or unset, the fastest this CPU has. Throws std::invalid_argument for an
// unknown name or a path the CPU lacks.
std::optional<SimdPath> choose_path();

}  // namespace gometal::attention_tiles
