// Eight-float vectors through the compiler's vector extension (GCC and Clang): one AVX
// register on x86-64, two NEON registers on arm64, with no intrinsics to port.
#pragma once

#include <cstring>

namespace gometal {

typedef float Vec8 __attribute__((vector_size(32)));
typedef int Mask8 __attribute__((vector_size(32)));  // comparisons and shuffle indices

// Unaligned loads and stores.
inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, Vec8 v) { std::memcpy(p, &v, sizeof v); }

}  // namespace gometal
