// The CPU kernels of the quantized ops (ir/ops/quantized.cpp): quantize, dequantize, and the
// int8 dense and convolution over int8_gemm's products.
#pragma once

#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// The kernel of a quantize, dequantize, quantized_matmul or quantized_conv2d node, or
// nullptr for any other op.
std::unique_ptr<Kernel> make_quantized_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes);

}  // namespace gometal
