// 2-D convolution, forward and both gradients. Forward passes with a fused 2x2 max pooling run
// conv_winograd's F(2x2, 3x3) tiles where they apply, conv_nchwc's channel-lane tiles on narrow
// planes, conv_channel_forward's in training plans, else conv_simd's register tiles (in parts of
// images at small batches); 3x3 gradients run the channel-lane kernels
// where they apply, other weight gradients of large planes conv_direct's; the rest run
// im2col + BLAS gemm.
#pragma once

#include "backends/cpu/conv_simd.h"
#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// Whether the forward pass of g can pool its output in the epilogue (max_pool_2x2).
bool conv2d_forward_pools(const ConvGeometry& g);

// Per-thread scratch (floats) each routine needs, and the workspace shared by all threads
// that the weight gradient needs.
int64_t conv2d_scratch(const ConvGeometry& g, bool weight_grad);
int64_t conv2d_weight_grad_shared(const ConvGeometry& g);

// Images [n0, n1) on the calling thread; `col` is that thread's scratch. The forward pass
// applies `epilogue` to its outputs (in the kernel's registers where the direct kernel runs).
void conv2d_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0, int64_t n1,
                            float* col, const ConvEpilogue& epilogue = {});
void conv2d_input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, float* dx, int64_t n0,
                               int64_t n1, float* col);

// The whole batch, images split across the pool.
void conv2d_forward(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* w, float* y,
                    const ConvEpilogue& epilogue = {});
void conv2d_input_grad(const ExecContext& ctx, const ConvGeometry& g, const float* dy, const float* w, float* dx);
void conv2d_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy, float* dw);

}  // namespace gometal
