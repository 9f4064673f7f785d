// A square block of vectors transposed in registers, for the channel-lane convolution kernels
// (conv_channel_forward, conv_channel_input_grad): their tiles hold one vector of channels per
// pixel, and NCHW wants one vector of pixels per channel.
#pragma once

#include <cstdint>

#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace lanes {

// Two vectors' first (or last) halves interleaved: a0 b0 a1 b1 ... GCC spells a two-vector
// shuffle __builtin_shuffle, Clang __builtin_shufflevector with constant lanes.
typedef int Mask16 __attribute__((vector_size(64)));
typedef int Mask8i __attribute__((vector_size(32)));
#if defined(__clang__)
#define GOMETAL_LANE_SHUFFLE(a, b, MaskT, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define GOMETAL_LANE_SHUFFLE(a, b, MaskT, ...) __builtin_shuffle(a, b, MaskT{__VA_ARGS__})
#endif

template <class Vec>
GOMETAL_SIMD_INLINE Vec interleave_low(Vec a, Vec b) {
  if constexpr (sizeof(Vec) == 64)
    return GOMETAL_LANE_SHUFFLE(a, b, Mask16, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  else
    return GOMETAL_LANE_SHUFFLE(a, b, Mask8i, 0, 8, 1, 9, 2, 10, 3, 11);
}

template <class Vec>
GOMETAL_SIMD_INLINE Vec interleave_high(Vec a, Vec b) {
  if constexpr (sizeof(Vec) == 64)
    return GOMETAL_LANE_SHUFFLE(a, b, Mask16, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  else
    return GOMETAL_LANE_SHUFFLE(a, b, Mask8i, 4, 12, 5, 13, 6, 14, 7, 15);
}

// An L x L block transposed in registers: interleaving row k with row k + L/2, log2(L) times,
// turns rows (pixels, channels in the lanes) into columns (channels, pixels in the lanes).
template <class Vec, int L>
GOMETAL_SIMD_INLINE void transpose(Vec (&rows)[L]) {
#pragma GCC unroll 4
  for (int stage = 1; stage < L; stage *= 2) {
    Vec next[L];
#pragma GCC unroll 16
    for (int k = 0; k < L / 2; ++k) {
      next[2 * k] = interleave_low(rows[k], rows[k + L / 2]);
      next[2 * k + 1] = interleave_high(rows[k], rows[k + L / 2]);
    }
#pragma GCC unroll 16
    for (int k = 0; k < L; ++k) rows[k] = next[k];
  }
}

// dst rows j (8 floats, ld_dst apart) = column j of the 8 src rows (ld_src apart): three
// rounds of two-input shuffles, as unpack, shuffle and lane-permute instructions.
GOMETAL_SIMD_INLINE void transpose_8x8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  Vec8f r[8], t[8];
  for (int i = 0; i < 8; ++i) __builtin_memcpy(&r[i], src + i * ld_src, sizeof(Vec8f));
  for (int i = 0; i < 8; i += 2) {
    t[i] = GOMETAL_LANE_SHUFFLE(r[i], r[i + 1], Mask8i, 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = GOMETAL_LANE_SHUFFLE(r[i], r[i + 1], Mask8i, 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      r[i + j] = GOMETAL_LANE_SHUFFLE(t[i + j], t[i + j + 2], Mask8i, 0, 1, 8, 9, 4, 5, 12, 13);
      r[i + j + 2] = GOMETAL_LANE_SHUFFLE(t[i + j], t[i + j + 2], Mask8i, 2, 3, 10, 11, 6, 7, 14, 15);
    }
  // r[0..3] hold columns 0, 2, 1, 3 of rows 0-3 (low half) and 4, 6, 5, 7 (high half); r[4..7]
  // the same of rows 4-7.
  const int column[4] = {0, 2, 1, 3};
  for (int i = 0; i < 4; ++i) {
    const Vec8f low = GOMETAL_LANE_SHUFFLE(r[i], r[i + 4], Mask8i, 0, 1, 2, 3, 8, 9, 10, 11);
    const Vec8f high = GOMETAL_LANE_SHUFFLE(r[i], r[i + 4], Mask8i, 4, 5, 6, 7, 12, 13, 14, 15);
    __builtin_memcpy(dst + column[i] * ld_dst, &low, sizeof low);
    __builtin_memcpy(dst + (column[i] + 4) * ld_dst, &high, sizeof high);
  }
}

}  // namespace lanes
}  // namespace gometal
