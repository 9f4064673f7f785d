#include "backends/cpu/attention_tiles.h"

#include <algorithm>

namespace gometal::attention_tiles {
namespace {

typedef int32_t Vec16i __attribute__((vector_size(64)));
typedef int32_t Vec8i __attribute__((vector_size(32)));

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

// exp(x) for x <= 0, lane by lane, the same range reduction and polynomial as the scalar
// attention_blocks::exp_nonpositive (vector_math::exp_parts); 0 below -87, so -inf gives 0.
template <class Vec, class IVec>
GOMETAL_SIMD_INLINE Vec exp_nonpositive(Vec x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const Vec lowest = Vec{} - 87.0f;
  const IVec under = x < lowest;
  const Vec clamped = under ? lowest : x;
  const Vec shifted = clamped * kLog2e + kRound;
  const Vec n = shifted - kRound;
  const Vec r = clamped - n * kLn2Hi - n * kLn2Lo;
  Vec p = Vec{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const IVec two_n = ((IVec)shifted - 0x4B400000 + 127) << 23;
  const Vec result = p * (Vec)two_n;
  return under ? Vec{} : result;
}

template <class Vec, int L>
GOMETAL_SIMD_INLINE float lane_total(Vec v) {
  float total = 0.0f;
  for (int i = 0; i < L; ++i) total += v[i];
  return total;
}

template <class Vec, int L>
GOMETAL_SIMD_INLINE float max_of_row(const float* x, int64_t n) {
  Vec lanes = Vec{} - __builtin_inff();
  for (int64_t c = 0; c < n; c += L) {
    const Vec v = load<Vec>(x + c);
    lanes = lanes > v ? lanes : v;
  }
  float top = -__builtin_inff();
  for (int i = 0; i < L; ++i) top = std::max(top, lanes[i]);
  return top;
}

// Whole vectors over x[0, n) rounded up to L: the callers pad rows with -inf to a multiple of
// kRowPadding, which exp maps to 0, so a row needs no partial vector.
template <class Vec, class IVec, int L>
GOMETAL_SIMD_INLINE float exp_sum_row(float* x, float m, int64_t n) {
  Vec sum = {};
  for (int64_t c = 0; c < n; c += L) {
    const Vec e = exp_nonpositive<Vec, IVec>(load<Vec>(x + c) - m);
    __builtin_memcpy(x + c, &e, sizeof e);
    sum += e;
  }
  return lane_total<Vec, L>(sum);
}

// As exp_sum_row; ds past n may hold anything, and stays out of the padded lanes' results (0).
template <class Vec, class IVec, int L>
GOMETAL_SIMD_INLINE void score_grad_row(float* p, float* ds, float lse, float delta, int64_t n) {
  for (int64_t c = 0; c < n; c += L) {
    const Vec e = exp_nonpositive<Vec, IVec>(load<Vec>(p + c) - lse);
    const Vec d = e != 0.0f ? e * (load<Vec>(ds + c) - delta) : Vec{};
    __builtin_memcpy(p + c, &e, sizeof e);
    __builtin_memcpy(ds + c, &d, sizeof d);
  }
}

// Register budgets: AVX-512 12 x 2 accumulators + 2 loads + 1 broadcast of 32 registers; AVX2
// 6 x 2 + 2 + 1 of 16. D = 32 columns are then one tile wide.
// Each path's entries, compiled for its instructions.
#define GOMETAL_ATTENTION_PATH(suffix, Vec, IVec, L, Rows)                                                  \
  void product_##suffix(const BlockProduct& o) { product<Vec, L, Rows, 2>(o); }                         \
  float row_max_##suffix(const float* x, int64_t n) { return max_of_row<Vec, L>(x, n); }                \
  float exp_and_sum_##suffix(float* x, float m, int64_t n) { return exp_sum_row<Vec, IVec, L>(x, m, n); } \
  void score_grads_##suffix(float* p, float* ds, float lse, float delta, int64_t n) {                   \
    score_grad_row<Vec, IVec, L>(p, ds, lse, delta, n);                                                 \
  }

GOMETAL_ATTENTION_PATH(portable, Vec8f, Vec8i, 8, 4)
#ifdef GOMETAL_SIMD_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
GOMETAL_ATTENTION_PATH(avx2, Vec8f, Vec8i, 8, 6)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
GOMETAL_ATTENTION_PATH(avx512, Vec16f, Vec16i, 16, 12)
#pragma GCC pop_options
#endif
#undef GOMETAL_ATTENTION_PATH

}  // namespace

// The entry of `path` (a product or a row function): name_avx512, name_avx2 or name_portable.
#ifdef GOMETAL_SIMD_X86
#define GOMETAL_ATTENTION_DISPATCH(path, name, ...)                      \
  switch (path) {                                                        \
    case SimdPath::Avx512: return name##_avx512(__VA_ARGS__);            \
    case SimdPath::Avx2: return name##_avx2(__VA_ARGS__);                \
    default: return name##_portable(__VA_ARGS__);                        \
  }
#else
#define GOMETAL_ATTENTION_DISPATCH(path, name, ...) return name##_portable(__VA_ARGS__);
#endif

void multiply(SimdPath path, const BlockProduct& p) {
  if (p.rows <= 0 || p.cols <= 0) return;
  GOMETAL_ATTENTION_DISPATCH(path, product, p)
}

float row_max(SimdPath path, const float* x, int64_t n) { GOMETAL_ATTENTION_DISPATCH(path, row_max, x, n) }

float exp_and_sum(SimdPath path, float* x, float m, int64_t n) {
  GOMETAL_ATTENTION_DISPATCH(path, exp_and_sum, x, m, n)
}

void probabilities_and_score_grads(SimdPath path, float* p, float* ds, float lse, float delta, int64_t n) {
  GOMETAL_ATTENTION_DISPATCH(path, score_grads, p, ds, lse, delta, n)
}
#undef GOMETAL_ATTENTION_DISPATCH

std::optional<SimdPath> choose_path() {
  return choose_simd_path("attention", "GOMETAL_ATTENTION_KERNEL", "blas");
}

}  // namespace gometal::attention_tiles
