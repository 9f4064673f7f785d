// The vector paths of the hand-written kernels (conv_simd, gemm_small): the compiler's vector
// types and the loads their tiles share, and the choice of a path at run time.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace gometal {

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GOMETAL_SIMD_X86 1
#endif

// Tile bodies are templates inlined into one entry function per path, so each path's copy is
// compiled for that path's instructions (the target attribute of its entry).
#define GOMETAL_SIMD_INLINE __attribute__((always_inline)) inline

typedef float Vec16f __attribute__((vector_size(64)));
typedef float Vec8f __attribute__((vector_size(32)));

namespace simd {

// Every lane = *p, as an initializer list: GCC turns it into one vbroadcastss (a lane loop
// becomes a chain of inserts, and Vec{} + *p adds a zero first).
template <class Vec, int L>
GOMETAL_SIMD_INLINE Vec broadcast(const float* p) {
  const float s = *p;
  if constexpr (L == 16) {
    return Vec{s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
  } else {
    return Vec{s, s, s, s, s, s, s, s};
  }
}

template <class Vec>
GOMETAL_SIMD_INLINE Vec load(const float* p) {
  Vec v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// acc[r][j] += row r of A (k floats, rows k apart) times columns j*L..j*L+L-1 of `panel`
// (K rows, ldp floats apart): the register tile of the small-row and packed products, one
// vector load per column group and one broadcast per row for each step of K.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void accumulate_tile(const float* a, int64_t k, const float* panel, int64_t ldp,
                                         Vec (&acc)[Rows][NV]) {
  for (int64_t p = 0; p < k; ++p) {
    Vec bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = load<Vec>(panel + p * ldp + j * L);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const Vec s = broadcast<Vec, L>(a + r * k + p);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] += s * bv[j];
    }
  }
}

}  // namespace simd

enum class SimdPath : uint8_t { Portable, Avx2, Avx512 };

std::string_view simd_path_name(SimdPath path);
// Whether this CPU runs the path's instructions (AVX2 and AVX-512 paths use FMA too).
bool simd_path_available(SimdPath path);

// The path the environment variable `variable` names ("portable", "avx2", "avx512"), or
// unset, the fastest this CPU has. `alternative` (when not empty) is one more name the variable
// accepts, returned as std::nullopt: a kernel's non-vector way (gemm_small's "blas"). Throws
// std::invalid_argument naming `op` and the variable for an unknown name or a path the CPU lacks.
std::optional<SimdPath> choose_simd_path(std::string_view op, const char* variable,
                                         std::string_view alternative = {});

}  // namespace gometal
