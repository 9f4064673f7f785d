// Direct forward convolution (unit horizontal stride) on the widest vectors the CPU has,
// with an optional per-channel epilogue (bias, scale and shift, ReLU) applied while the
// accumulators are still in registers. A register tile holds R output channels x V
// segments of L consecutive output pixels; segments may come from different output rows,
// so narrow planes (16 pixels wide) still fill the tile. AVX-512: L = 16, 8 x 3 (24 of the
// 32 zmm registers); AVX2 and the portable path: L = 8, 6 x 2 (12 of 16). The path is
// chosen at run time from what the CPU has; GOMETAL_CONV_KERNEL=portable|avx2|avx512
// forces one (the tests run each the CPU has).
#pragma once

#include <cstdint>
#include <string_view>

#include "backends/cpu/kernel.h"
#include "backends/cpu/simd_paths.h"
#include "ir/conv_geometry.h"

namespace gometal {

using ConvPath = SimdPath;

// The fastest path this CPU has, or the one GOMETAL_CONV_KERNEL names (std::invalid_argument
// when it names no path or one the CPU lacks).
ConvPath choose_conv_path();

// Applied to each output channel o after the sum: y = (acc + bias[o]) * scale[o] + shift[o],
// then max(y, 0) when relu. A null pointer skips its term. With max_pool_2x2 the output is
// that of a 2x2, stride 2, unpadded max pooling of y (floor(OH/2) x floor(OW/2)): y is
// computed a band of rows at a time into scratch and pooled from there, never stored whole.
struct ConvEpilogue {
  const float* bias = nullptr;
  const float* scale = nullptr;
  const float* shift = nullptr;
  bool relu = false;
  bool max_pool_2x2 = false;
};

// The epilogue's per-channel terms and ReLU on one vector of output channel o's values
// (NaN stays NaN, as the element-wise relu keeps it); pooling is the caller's.
template <class Vec>
GOMETAL_SIMD_INLINE Vec conv_epilogue_channel(Vec v, const ConvEpilogue& e, int64_t o) {
  if (e.bias) v += e.bias[o];
  if (e.scale) v *= e.scale[o];
  if (e.shift) v += e.shift[o];
  if (e.relu) {
    const Vec zero = {};
    v = v < zero ? zero : v;
  }
  return v;
}

bool conv2d_simd_supported(const ConvGeometry& g);
// Per-thread scratch (floats) of conv2d_simd_forward_image, enough for every path.
int64_t conv2d_simd_scratch(const ConvGeometry& g);

// y (O, OH*OW) = epilogue(conv(x (C, H, W), w (O, C/groups, KH, KW))) for one image, on the
// calling thread (y (O, OH/2 * OW/2) with max_pool_2x2).
void conv2d_simd_forward_image(ConvPath path, const ConvGeometry& g, const float* x, const float* w, float* y,
                               float* scratch, const ConvEpilogue& epilogue = {});

// Whether a batch of g.n images on `threads` threads runs in parts of images: a batch
// smaller than twice the threads would leave threads idle (or one thread an extra image)
// with each image a task, as a batch of 1 ran on one thread.
bool conv2d_simd_forward_in_parts(const ConvGeometry& g, const ConvEpilogue& epilogue, int threads);
// y = the batch's convolution, as conv2d_simd_forward_image writes each image, with each
// image cut into bands of output rows and blocks of output channels, one task of ctx.pool
// each, every part padding only the rows it reads into its thread's scratch
// (conv2d_simd_scratch floats). Every output is the same sum as in the whole-image call.
void conv2d_simd_forward_parts(const ExecContext& ctx, ConvPath path, const ConvGeometry& g, const float* x,
                               const float* w, float* y, const ConvEpilogue& epilogue);

}  // namespace gometal
