// Max and average pooling over NCHW planes, forward and backward.
#pragma once

#include "backends/cpu/kernel.h"
#include "ir/conv_geometry.h"

namespace gometal {

void max_pool2d(const ExecContext& ctx, const ConvGeometry& g, const float* x, float* y);
void max_pool2d_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy, float* dx);
void avg_pool2d(const ExecContext& ctx, const ConvGeometry& g, const float* x, float* y);
void avg_pool2d_grad(const ExecContext& ctx, const ConvGeometry& g, const float* dy, float* dx);

}  // namespace gometal
