// Direct convolution for unit horizontal stride: the image is copied once into a
// zero-padded buffer, and a 6x16 register-blocked micro-kernel (12 vector accumulators:
// 6 output channels x 16 output pixels of one row) reads its input rows straight from
// it, with no im2col matrix. With the few channels of small CNNs, BLAS's general gemm on
// im2col runs well below the FMA peak; this keeps the FMA units busy.
#pragma once

#include <cstdint>

#include "ir/conv_geometry.h"

namespace gometal {

// Whether the direct kernel handles g (unit horizontal stride), and its per-thread scratch.
bool conv2d_direct_supported(const ConvGeometry& g);
int64_t conv2d_direct_scratch(const ConvGeometry& g);

// y (O, OH*OW) = conv(x (C, H, W), w (O, C/groups, KH, KW)) for one image, on the calling thread.
void conv2d_direct_forward_image(const ConvGeometry& g, const float* x, const float* w, float* y, float* scratch);

// The geometry of the forward convolution that computes a stride-1 convolution's input
// gradient from dy (channels swapped, padding d*(k-1)-p); false when the gradient is not
// such a convolution (a stride above 1, or padding wider than the dilated kernel).
bool input_grad_as_forward(const ConvGeometry& g, ConvGeometry* as_forward);

// dx (C, H, W) of one image from dy (O, OH, OW) and the forward weights w, with `as_forward`
// from input_grad_as_forward: a convolution with the weights flipped and their channel axes
// swapped.
void conv2d_direct_input_grad_image(const ConvGeometry& as_forward, const float* dy, const float* w, float* dx,
                                    float* scratch);

// Whether the direct weight-gradient kernel handles g (unit horizontal stride, output
// rows a multiple of 8 wide), and its per-thread scratch.
bool conv2d_direct_weight_grad_supported(const ConvGeometry& g);
int64_t conv2d_direct_weight_grad_scratch(const ConvGeometry& g);

// One image (C, H, W) zero-padded as the direct weight gradient reads it, in
// conv2d_direct_padded_image_floats(g) floats.
int64_t conv2d_direct_padded_image_floats(const ConvGeometry& g);
void conv2d_direct_pad_image(const ConvGeometry& g, const float* x, float* padded);

// Adds the weight gradient of output channels [o_begin, o_end) over the whole batch, from
// the padded images (one after another) and dy (N, O, OH, OW), to `lanes`: 8 partial sums
// per weight of those rows of dw (O, C/groups, KH, KW), i.e. (o_end - o_begin)*C/groups*KH*KW*8
// floats, summed over the images in order. On the calling thread.
void conv2d_direct_weight_grad(const ConvGeometry& g, const float* padded, const float* dy, int64_t o_begin,
                               int64_t o_end, float* lanes, float* scratch);

// Output channels per block of the direct weight gradient: split dw across threads on these.
constexpr int64_t kDirectWeightGradBlock = 3;

// dw[i] = the sum of lanes[i*8 .. i*8+8).
void sum_lanes(const float* lanes, int64_t weights, float* dw);

}  // namespace gometal
