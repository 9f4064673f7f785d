// The weight gradient of a 3x3, stride-1 convolution by Winograd's F(3x3, 2x2): dw is the
// correlation of the input with dy, so each 2x2 tile of dy and the 4x4 input tile under it
// give their 3x3 window's share as G^T [(A dy A^T) . (B^T x B)] G, 16 products per channel
// pair where the direct sum takes 36. The products of all tiles are summed before the output
// transform, as 16 small matrix products (one per transformed position, output channels
// across the vector lanes, the tiles as the inner dimension). GOMETAL_CONV_WINOGRAD_GRAD=
// always|never forces or forbids it wherever it can run; unset, the shape decides.
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// Whether g's weight gradient runs these tiles (3x3, stride 1, no dilation, one group).
bool conv2d_winograd_weight_grad_chosen(const ConvGeometry& g);

// Per-thread scratch and the workspace shared by the threads (each chunk's sums), in floats.
int64_t conv2d_winograd_weight_grad_scratch(const ConvGeometry& g);
int64_t conv2d_winograd_weight_grad_shared(const ConvGeometry& g);

// The images of one chunk and the chunks of a batch (F(3x3, 2x2)'s and F(3x3, 4x4)'s): fixed
// by N alone, so that the sums are the same bits on any number of threads.
int64_t conv2d_winograd_grad_chunk_images(const ConvGeometry& g);
int64_t conv2d_winograd_grad_chunk_count(const ConvGeometry& g);

// Adds each chunk's `floats` sums, stored one chunk after another from ctx.shared, into the
// first chunk's, in chunk order, a range of floats a task.
void conv2d_winograd_grad_add_chunks(const ExecContext& ctx, int64_t floats, int64_t chunks);

// dw (O, C, 3, 3) of the whole batch, the images summed in chunks fixed by N alone (the same
// bits on any number of threads). The transforms add and subtract copies of a value, so an
// infinity can meet itself as Inf - Inf = NaN: false when any of dw is not finite, and the
// caller then computes dw by direct sums (every non-finite input leaves one in dw here).
bool conv2d_winograd_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy,
                                 float* dw);

}  // namespace gometal
