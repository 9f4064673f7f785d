// Quantized chains: a quantized_conv2d with a float32 output whose only reader is a
// quantize, directly or through one max_pool2d (and reshapes), becomes one step; the convolution
// requantizes in its epilogue and pools its uint8 (or int8) values, so no float32 value
// and no dequantize/quantize pair stands between consecutive quantized layers.
#pragma once

#include <vector>

#include "backends/cpu/passes/fusion.h"
#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

// Merges each such chain into one step (not fused) listing the conv, the pool if any, and
// the quantize, at the quantize's place; only the quantize's value keeps a buffer. Then a
// chain whose quantized value only the next chain's convolution reads joins that chain's
// step, and the value keeps no buffer either: the kernel carries each image through every
// linked stage in its scratch, channels-last. Last, a quantize of float32 values read only
// by a convolution, as its input, joins the head of that convolution's step (chain or not):
// the kernel quantizes each image while copying it (not with GOMETAL_INT8_INPUT_FOLD=0, which
// keeps the quantize apart for an A/B). The kernel is make_quantized_conv2d_kernel's
// (make_input_quantizing_conv2d_kernel's for a step headed by a quantize).
// Run after fuse_elementwise, before sample tiling and the memory plan.
void fuse_quantized_chains(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                           const std::vector<Shape>& shapes, Fusion& f);

}  // namespace gometal
