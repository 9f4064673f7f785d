// The input gradient of a 3x3, stride-1 convolution with the input channels across the vector
// lanes. dx is the forward convolution of dy (padded) with the flipped, transposed weights; a
// register tile holds V vectors of dx's channels x P consecutive pixels of one row, and for
// each output channel of dy and each window row it loads the row's 3 weight vectors once, then
// broadcasts each of the P + 2 dy values under the tile once for the up to 3 pixels it reaches:
// 3 FMAs per broadcast, where a tap-by-tap tile (conv_simd, conv_nchwc) issues one.
#pragma once

#include <cstdint>

#include "backends/cpu/conv_simd.h"
#include "ir/conv_geometry.h"

namespace gometal {

// 3x3 windows, unit stride and dilation, one group, padding of at most 2 (the gradient is a
// convolution of dy then), and rows at least 8 pixels wide (one tile).
bool conv2d_channel_input_grad_supported(const ConvGeometry& g);

// Per-thread scratch (floats): one padded image of dy.
int64_t conv2d_channel_input_grad_scratch(const ConvGeometry& g);

// dx of images [n0, n1) from dy (N, O, OH, OW) and w (O, C, 3, 3), on the calling thread, on
// the path choose_conv_path() gives, with the weights packed once per thread and value
// (packed_weight_cache.h).
void conv2d_channel_input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, float* dx, int64_t n0,
                                       int64_t n1, float* scratch);

}  // namespace gometal
