// The forward pass of a 3x3, stride-1 convolution with the output channels across the vector
// lanes, on the row tile of the channel-lane input gradient (conv_channel_input_grad.h): a
// register tile holds one vector of output channels x one vector's count of consecutive
// pixels of a row, and for each input channel and window row it loads the row's 3 weight
// vectors once, then broadcasts each input value under the tile once for the up to 3 pixels it
// reaches. The tile is transposed in registers, so each output channel's pixels are stored as
// one vector into NCHW, after the epilogue (bias, scale and shift, ReLU; no pooling).
#pragma once

#include <cstdint>

#include "backends/cpu/conv_simd.h"
#include "ir/conv_geometry.h"

namespace gometal {

// 3x3 windows, unit stride and dilation, one group, padding of at most 1, and output rows at
// least one tile (16 pixels) wide.
bool conv2d_channel_forward_supported(const ConvGeometry& g);

// Whether g's forward pass with `epilogue` runs this kernel: wherever it can (no pooling
// epilogue: the training plan's convolutions, whose ReLU output the backward pass reads),
// unless GOMETAL_CONV_CHANNEL_FORWARD=never (always: the default). 1 thread, batch 32, CPU ms
// against the pixel-lane tiles (conv_simd) with bias (and ReLU): 3->16 at 64x64 1.90 -> 1.76,
// 16->32 at 32x32 2.70 -> 2.42, 32->64 at 16x16 2.46 -> 2.26. Throws std::invalid_argument
// naming the variable for an unknown value.
bool conv2d_channel_forward_chosen(const ConvGeometry& g, const ConvEpilogue& epilogue);

// Per-thread scratch (floats): one padded image, or Winograd's where it runs (0 where unsupported).
// Refuses an unknown GOMETAL_CONV_CHANNEL_FORWARD as conv2d_channel_forward_chosen does: plans
// size their scratch when they compile, so the error comes before any kernel thread runs.
int64_t conv2d_channel_forward_scratch(const ConvGeometry& g);

// y = epilogue(conv(x, w)) of images [n0, n1) from x (N, C, H, W) and w (O, C, 3, 3) into
// y (N, O, OH, OW), on the calling thread, on the path choose_conv_path() gives, with the
// weights packed once per thread and value (packed_weight_cache.h). The epilogue must not pool.
// Where conv2d_winograd_unpooled_chosen(g) (planes of 16+ input channels), Winograd's tiles run
// instead (conv_winograd.h).
void conv2d_channel_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0,
                                    int64_t n1, float* scratch, const ConvEpilogue& epilogue);

}  // namespace gometal
