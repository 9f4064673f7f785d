// Forward 3x3 convolution without pooling by Winograd's F(4x4, 3x3): each 4x4 block of outputs
// comes from a 6x6 block of input through 36 products per channel pair (F(2x2, 3x3) takes 64
// for the same 16 outputs, the direct sums 144), and each input value is transformed into 2.25
// floats instead of 4, so the transforms' loads and stores, which bound F(2x2, 3x3), halve.
// The padded input is split into 24 parts per channel (row modulo 4 x column offset 0..5 in a
// tile), so that a vector of consecutive tiles is one load wherever they lie in the plane; then
// blocks of transformed tiles, register tiles of output channels x vectors of tiles, and the
// output transform and epilogue in registers, stored in place.
//
// conv_winograd.cpp runs these tiles for its unpooled forward passes (a training plan's forward
// pass and the flipped-weight input gradient) where conv2d_winograd_f4_chosen says so.
// GOMETAL_CONV_WINOGRAD_F4=always|never forces or forbids them; unset, the shape rule decides.
#pragma once

#include <cstdint>
#include <functional>

#include "backends/cpu/conv_simd.h"
#include "ir/conv_geometry.h"

namespace gometal {

// 3x3, unit stride and dilation, one group, output sizes multiples of 4.
bool conv2d_winograd_f4_supported(const ConvGeometry& g);

// Whether g's unpooled Winograd forward pass runs F(4x4, 3x3): GOMETAL_CONV_WINOGRAD_F4, else
// the shape rule (measurements in conv_winograd_f4.cpp). Throws std::invalid_argument naming
// the variable for an unknown value.
bool conv2d_winograd_f4_chosen(const ConvGeometry& g);

// Per-thread scratch (floats): the split rows, one block of transformed tiles and one register
// tile's transformed sums; 0 where unsupported. Reads the variable, so a plan refuses a bad value
// when it is built.
int64_t conv2d_winograd_f4_scratch(const ConvGeometry& g);

// Images [n0, n1) of y (N, O, OH, OW) = epilogue(conv(x (N, C, H, W), w)) on the calling thread
// (w and `flipped` as for conv2d_winograd_f4_weights); fallback(n) computes image n instead
// where it or the weights hold a value that is not moderate.
void conv2d_winograd_f4_samples(const ConvGeometry& g, const float* x, const float* w, bool flipped, float* y,
                                int64_t n0, int64_t n1, float* scratch, const ConvEpilogue& epilogue,
                                const std::function<void(int64_t)>& fallback);

}  // namespace gometal
