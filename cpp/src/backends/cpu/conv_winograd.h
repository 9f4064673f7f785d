// Forward 3x3 convolution (with or without a fused 2x2 max pooling) by Winograd's minimal filtering
// F(2x2, 3x3): each 2x2 block of outputs (one pooled output) comes from a 4x4 block of input
// through 16 products per channel pair instead of 36, so the sum over input channels costs 4/9
// of the direct kernel's multiply-adds. The input blocks are transformed (B^T d B) a block of
// tiles at a time, the 16 transformed sums run as register tiles (output channels x vectors of
// tiles), and the output transform (A^T m A), the epilogue and the pooling follow in registers.
// Pooled (inference), the unpooled outputs are never stored; unpooled (a training plan's forward
// pass), each tile's 2x2 outputs are stored in place after the epilogue.
// Unpooled passes whose output sizes are multiples of 4 run F(4x4, 3x3) instead where
// conv2d_winograd_f4_chosen says so (conv_winograd_f4.h).
//
// GOMETAL_CONV_WINOGRAD=always|never forces or forbids this kernel wherever it can run; unset,
// conv2d_winograd_chosen picks it by shape. GOMETAL_CONV_KERNEL chooses its instruction-set
// path, as for the pixel-lane kernel.
#pragma once

#include <cstdint>

#include "backends/cpu/conv_simd.h"
#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// Whether this kernel can compute g's forward pass with `epilogue`: 3x3, unit stride and
// dilation, one group, and a 2x2 max pooling in the epilogue.
bool conv2d_winograd_supported(const ConvGeometry& g, const ConvEpilogue& epilogue);

// Whether g's forward pass runs this kernel: GOMETAL_CONV_WINOGRAD, else the shape rule
// (measurements in conv_winograd.cpp). Throws std::invalid_argument naming the variable for an
// unknown value.
bool conv2d_winograd_chosen(const ConvGeometry& g, const ConvEpilogue& epilogue);

// Whether g's forward pass without pooling (every output stored) runs these tiles: 3x3, unit
// stride and dilation, one group, even output sizes, and the shape rule for unpooled planes
// (measurements in conv_winograd.cpp), or GOMETAL_CONV_WINOGRAD=always|never. The training
// forward pass asks (conv_channel_forward.h); conv2d_winograd_chosen stays for pooled ones.
bool conv2d_winograd_unpooled_chosen(const ConvGeometry& g);

// Per-thread scratch (floats): the image's rows split into even and odd columns, one block of
// transformed tiles and the transformed sums of one register tile.
int64_t conv2d_winograd_scratch(const ConvGeometry& g);

// Images [n0, n1) on the calling thread.
void conv2d_winograd_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0,
                                     int64_t n1, float* scratch, const ConvEpilogue& epilogue);

// The whole batch: the weights transformed once, each image a task, or at batches smaller than
// twice the threads, each image cut into ranges of tiles (every output the same sum either way).
void conv2d_winograd_forward(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* w,
                             float* y, const ConvEpilogue& epilogue);

// The input gradient of a 3x3 stride-1 convolution g as these tiles' forward pass over dy
// with the flipped weights (transformed straight from w, cached per thread), unpooled: where
// the unpooled rule takes the flipped convolution (16 and more input and output channels), or
// GOMETAL_CONV_WINOGRAD=always|never; the scratch, and images [n0, n1) of dx.
bool conv2d_winograd_input_grad_chosen(const ConvGeometry& g);
int64_t conv2d_winograd_input_grad_scratch(const ConvGeometry& g);
void conv2d_winograd_input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, float* dx,
                                        int64_t n0, int64_t n1, float* scratch);

}  // namespace gometal
