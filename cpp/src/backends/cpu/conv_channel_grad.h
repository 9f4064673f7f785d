// The weight gradient of a 3x3 convolution with the output channels across the vector lanes.
// Each image's dy is first transposed to (pixels, O rounded up to whole vectors); a register
// tile of V vectors of output channels x the 9 taps of KC input channels then adds, for every
// pixel, one aligned load of dy times one broadcast input value per tap, and keeps its sums in
// registers over a band of rows. Unlike conv_direct's pixel lanes, no load straddles a cache
// line and no per-lane partial sums are left to add; any stride works, as each pixel reads its
// inputs by address.
#pragma once

#include <cstdint>

#include "backends/cpu/conv_simd.h"
#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// 3x3 windows without dilation, one group (the padded images are conv_direct's).
bool conv2d_channel_weight_grad_supported(const ConvGeometry& g);

// Per-thread scratch (one padded image and its transposed dy) and the workspace shared by
// the threads (each chunk's sums), in floats.
int64_t conv2d_channel_weight_grad_scratch(const ConvGeometry& g);
int64_t conv2d_channel_weight_grad_shared(const ConvGeometry& g);

// dw (O, C, 3, 3) of the whole batch on the path choose_conv_path() gives. The images are
// summed in chunks of consecutive images, one task each, into their own sums, which are then
// added in chunk order: the chunks follow from N alone, so results never depend on the
// threads.
void conv2d_channel_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy,
                                float* dw);

}  // namespace gometal
