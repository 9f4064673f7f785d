#include "backends/cpu/attention_tiles.h"

namespace gometal::attention_tiles {
namespace {

using simd::broadcast;
using simd::load;

// Rows x (NV vectors of L columns) of c from row i0 and column j0: the accumulators stay in
// registers over the whole depth, one vector load of b per column group and one broadcast of a
// per row for each step.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void tile(const BlockProduct& o, int64_t i0, int64_t j0) {
  Vec acc[Rows][NV];
  float* c = o.c + i0 * o.ldc + j0;
  for (int r = 0; r < Rows; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = o.accumulate ? load<Vec>(c + r * o.ldc + j * L) : Vec{};
  const float* a = o.a + i0 * o.a_row;
  const float* b = o.b + j0;
  for (int64_t p = 0; p < o.depth; ++p) {
    Vec bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = load<Vec>(b + p * o.ldb + j * L);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const Vec s = broadcast<Vec, L>(a + r * o.a_row + p * o.a_depth);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] += s * bv[j];
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int j = 0; j < NV; ++j) __builtin_memcpy(c + r * o.ldc + j * L, &acc[r][j], sizeof(Vec));
}

// tile<..., rows, nv> for run-time rows <= Rows and nv <= NV.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void dispatch_tile(int rows, int nv, const BlockProduct& o, int64_t i0, int64_t j0) {
  if constexpr (Rows >= 1 && NV >= 1) {
    if (rows < Rows) return dispatch_tile<Vec, L, Rows - 1, NV>(rows, nv, o, i0, j0);
    if (nv < NV) return dispatch_tile<Vec, L, Rows, NV - 1>(rows, nv, o, i0, j0);
    tile<Vec, L, Rows, NV>(o, i0, j0);
  }
}

// The columns past the last whole vector, one multiply-add at a time.
inline void tail_columns(const BlockProduct& o, int64_t j0) {
  for (int64_t r = 0; r < o.rows; ++r) {
    float* c = o.c + r * o.ldc;
    for (int64_t j = j0; j < o.cols; ++j) {
      float sum = o.accumulate ? c[j] : 0.0f;
      for (int64_t p = 0; p < o.depth; ++p) sum += o.a[r * o.a_row + p * o.a_depth] * o.b[p * o.ldb + j];
      c[j] = sum;
    }
  }
}

template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void product(const BlockProduct& o) {
  constexpr int64_t kWidth = NV * L;
  const int64_t whole = o.cols / L * L;
  for (int64_t j0 = 0; j0 < whole; j0 += kWidth) {
    const int nv = static_cast<int>((whole - j0 < kWidth ? whole - j0 : kWidth) / L);
    for (int64_t i0 = 0; i0 < o.rows; i0 += Rows) {
      const int rows = static_cast<int>(o.rows - i0 < Rows ? o.rows - i0 : Rows);
      dispatch_tile<Vec, L, Rows, NV>(rows, nv, o, i0, j0);
    }
  }
  if (whole < o.cols) tail_columns(o, whole);
}

// Register budgets: AVX-512 12 x 2 accumulators + 2 loads + 1 broadcast of 32 registers; AVX2
// 6 x 2 + 2 + 1 of 16. D = 32 columns are then one tile wide.
void product_portable(const BlockProduct& o) { product<Vec8f, 8, 4, 2>(o); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void product_avx2(const BlockProduct& o) { product<Vec8f, 8, 6, 2>(o); }
__attribute__((target("avx512f,avx2,fma"))) void product_avx512(const BlockProduct& o) {
  product<Vec16f, 16, 12, 2>(o);
}
#endif

}  // namespace

void multiply(SimdPath path, const BlockProduct& p) {
  if (p.rows <= 0 || p.cols <= 0) return;
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case SimdPath::Avx512: return product_avx512(p);
    case SimdPath::Avx2: return product_avx2(p);
#endif
    default: return product_portable(p);
  }
}

std::optional<SimdPath> choose_path() {
  return choose_simd_path("attention", "GOMETAL_ATTENTION_KERNEL", "blas");
}

}  // namespace gometal::attention_tiles
