// Forward convolution with the output channels across the vector lanes (the NCHWc scheme of
// onnxruntime's MLAS): the weights are packed into blocks of L output channels (L = 16 on
// AVX-512, 8 on AVX2 and the portable path), and a register tile holds a few such blocks x 12
// output pixels, each pixel's input value broadcast against a block's weights. Unlike the
// pixel-lane kernel (conv_simd.h) no lane idles on planes narrower than a vector, and any
// stride and dilation run. The taps go in chunks of input channels whose weights stay in L1
// across a band of tiles, the partial sums waiting in the image's channels-last outputs.
// Input and output stay NCHW; the epilogue (bias, scale and shift, ReLU, 2x2 max pooling) is
// applied to the tile after its last chunk.
//
// GOMETAL_CONV_NCHWC=always|never forces or forbids this kernel wherever it can run (groups
// of 1); unset, conv2d_nchwc_chosen picks it by shape. GOMETAL_CONV_KERNEL chooses its
// instruction-set path, as for the pixel-lane kernel.
#pragma once

#include <cstdint>

#include "backends/cpu/conv_simd.h"
#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// Whether this kernel can compute g's forward pass (one group).
bool conv2d_nchwc_supported(const ConvGeometry& g);

// Whether g's forward pass runs this kernel: GOMETAL_CONV_NCHWC, else the shape rule (16
// output channels or more on planes narrower than 16; measurements in conv_nchwc.cpp). Throws
// std::invalid_argument naming the variable for an unknown value.
bool conv2d_nchwc_chosen(const ConvGeometry& g);

// Per-thread scratch (floats): the packed epilogue and tap offsets, one padded image and its
// outputs channels-last. The packed weights live in a per-thread cache, keyed by the weights'
// address and checked against a copy of them on every call (so a write is always seen).
int64_t conv2d_nchwc_scratch(const ConvGeometry& g);

// Images [n0, n1) on the calling thread.
void conv2d_nchwc_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0,
                                  int64_t n1, float* scratch, const ConvEpilogue& epilogue = {});

// The whole batch: the weights packed once, the images split across the pool.
void conv2d_nchwc_forward(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* w, float* y,
                          const ConvEpilogue& epilogue = {});

}  // namespace gometal
