// What the two channel-lane 3x3 kernels share: the forward pass (conv_channel_forward.cpp,
// output channels in the lanes) and the input gradient (conv_channel_input_grad.cpp, input
// channels in the lanes, taps flipped) pack the same weights, one vector of channels per tap.
#pragma once

#include <algorithm>
#include <cstdint>

#include "backends/cpu/packed_weight_cache.h"
#include "backends/cpu/simd_paths.h"

namespace gometal::conv_lanes {

constexpr int kTaps = 9;            // a 3x3 window
constexpr int64_t kMostLanes = 16;  // the widest vector (AVX-512): scratch fits every path
constexpr int64_t kSlack = 16;      // floats after the padded image, read by no tile but kept zero

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Keeps GCC from splitting one pointer into an offset per unrolled access.
GOMETAL_SIMD_INLINE void keep_opaque(const float*& p) { asm("" : "+r"(p)); }

// w (O, C, 3, 3), key O rows and C columns. Forward: packed[b][c][t][l] = w[b*lanes + l][c][t]
// (zero past O). Input gradient: packed[b][o][t][l] = w[o][b*lanes + l][8 - t] (zero past C).
inline void pack_3x3(const PackedWeightKey& key, const float* w, bool input_gradient, float* packed) {
  const int64_t o_count = key.rows, c_count = key.columns, lanes = key.lanes;
  const int64_t in_lanes = input_gradient ? c_count : o_count, across = input_gradient ? o_count : c_count;
  const int64_t blocks = (in_lanes + lanes - 1) / lanes, block = across * kTaps * lanes;
  if (in_lanes % lanes != 0) std::fill(packed + (blocks - 1) * block, packed + blocks * block, 0.0f);
  for (int64_t o = 0; o < o_count; ++o)
    for (int64_t c = 0; c < c_count; ++c) {
      const float* src = w + (o * c_count + c) * kTaps;
      const int64_t lane = input_gradient ? c : o, other = input_gradient ? o : c;
      float* dst = packed + (lane / lanes) * block + other * kTaps * lanes + lane % lanes;
      for (int t = 0; t < kTaps; ++t) dst[t * lanes] = src[input_gradient ? kTaps - 1 - t : t];
    }
}

}  // namespace gometal::conv_lanes
