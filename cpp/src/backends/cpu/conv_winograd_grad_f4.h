// The weight gradient of a 3x3, stride-1 convolution by Winograd's F(3x3, 4x4): each 4x4 tile
// of dy and the 6x6 input tile under it give their 3x3 window's share as
// G^T [(A dy A^T) . (B^T x B)] G (F(4x4, 3x3)'s matrices), 36 products per 16 dy pixels and
// channel pair where F(3x3, 2x2) takes 64. Both transforms run with the channels across the
// vector lanes, on tiles of several images at once. GOMETAL_CONV_WINOGRAD_GRAD_F4=always|never
// forces or forbids it wherever the Winograd weight gradient runs; unset, the shape rule decides
// (16+ channels each way, planes of 8+ that the 6x6 tiles cover with little waste).
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// Whether g's Winograd weight gradient takes F(3x3, 4x4) tiles; throws std::invalid_argument
// naming the variable for a value other than always or never.
bool conv2d_winograd_weight_grad_f4_chosen(const ConvGeometry& g);

// Per-thread scratch and the workspace shared by the threads (each chunk's sums), in floats.
int64_t conv2d_winograd_weight_grad_f4_scratch(const ConvGeometry& g);
int64_t conv2d_winograd_weight_grad_f4_shared(const ConvGeometry& g);

enum class WinogradGradF4Result {
  kFinite,      // dw holds the gradient
  kNotFinite,   // dw holds a non-finite value: the caller computes it by direct sums
  kLargeInput,  // an input or dy value of 2^100 or more, Inf or NaN: F(3x3, 2x2) instead
};

// dw (O, C, 3, 3) of the whole batch, the images summed in chunks fixed by N alone (the same
// bits on any number of threads).
WinogradGradF4Result conv2d_winograd_weight_grad_f4(const ExecContext& ctx, const ConvGeometry& g, const float* x,
                                                    const float* dy, float* dw);

}  // namespace gometal
