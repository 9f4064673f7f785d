// The direct weight gradient for unit horizontal stride: each image is copied once into a
// zero-padded buffer, and register tiles of output channels x taps sum dy times the shifted
// input over the pixels, with no im2col matrix. Also the geometry that turns a stride-1
// input gradient into a forward convolution (which conv_simd's tiles run).
#pragma once

#include <cstdint>

#include "backends/cpu/conv_simd.h"
#include "ir/conv_geometry.h"

namespace gometal {

// The geometry of the forward convolution that computes a stride-1 convolution's input
// gradient from dy (channels swapped, padding d*(k-1)-p); false when the gradient is not
// such a convolution (a stride above 1, or padding wider than the dilated kernel).
bool input_grad_as_forward(const ConvGeometry& g, ConvGeometry* as_forward);

// Whether the direct weight-gradient kernel handles g (unit horizontal stride, output
// rows a multiple of 8 wide), and its per-thread scratch.
bool conv2d_direct_weight_grad_supported(const ConvGeometry& g);
int64_t conv2d_direct_weight_grad_scratch(const ConvGeometry& g);

// One image (C, H, W) zero-padded as the direct weight gradient reads it, in
// conv2d_direct_padded_image_floats(g) floats.
int64_t conv2d_direct_padded_image_floats(const ConvGeometry& g);
void conv2d_direct_pad_image(const ConvGeometry& g, const float* x, float* padded);

// The weight gradient's register tiles on `path`: output channels per tile (split dw
// across threads on these) and partial sums (lanes) per weight.
struct WeightGradTiles {
  int64_t rows, lanes;
};
WeightGradTiles conv2d_direct_weight_grad_tiles(ConvPath path, const ConvGeometry& g);
constexpr int64_t kMaxWeightGradLanes = 16;

// Adds the weight gradient of output channels [o_begin, o_end) over the whole batch, from
// the padded images (one after another) and dy (N, O, OH, OW), to `lanes`: the tiles' lanes
// of partial sums per weight of those rows of dw (O, C/groups, KH, KW), i.e.
// (o_end - o_begin)*C/groups*KH*KW*lanes floats, summed over the images in order. On the
// calling thread; o_begin a multiple of the tiles' rows.
void conv2d_direct_weight_grad(ConvPath path, const ConvGeometry& g, const float* padded, const float* dy,
                               int64_t o_begin, int64_t o_end, float* lanes, float* scratch);

// dw[i] = the sum of lanes[i*lane_count .. (i+1)*lane_count).
void sum_lanes(const float* lanes, int64_t weights, int64_t lane_count, float* dw);

}  // namespace gometal
