// Max and average pooling over NCHW planes, forward and backward.
#pragma once

#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

// Planes [p0, p1) (plane = image * channels + channel) on the calling thread.
void max_pool2d_planes(const ConvGeometry& g, const float* x, float* y, int64_t p0, int64_t p1);
void max_pool2d_grad_planes(const ConvGeometry& g, const float* x, const float* dy, float* dx, int64_t p0,
                            int64_t p1);
void avg_pool2d_planes(const ConvGeometry& g, const float* x, float* y, int64_t p0, int64_t p1);
void avg_pool2d_grad_planes(const ConvGeometry& g, const float* dy, float* dx, int64_t p0, int64_t p1);

// The whole batch, planes split across the pool.
void max_pool2d(const ExecContext& ctx, const ConvGeometry& g, const float* x, float* y);
void max_pool2d_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy, float* dx);
void avg_pool2d(const ExecContext& ctx, const ConvGeometry& g, const float* x, float* y);
void avg_pool2d_grad(const ExecContext& ctx, const ConvGeometry& g, const float* dy, float* dx);

}  // namespace gometal
