// The geometry of a 2-D convolution or pooling window over NCHW tensors, shared by shape
// inference, the VJP rules and the kernels.
#pragma once

#include <cstdint>
#include <string>

#include "gometal/ir.h"

namespace gometal {

struct ConvGeometry {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t o = 0;                       // output channels (pooling: = c)
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  int64_t oh = 0, ow = 0;              // output spatial size

  int64_t c_per_group() const { return c / groups; }
  int64_t o_per_group() const { return o / groups; }
  int64_t patch() const { return c_per_group() * kh * kw; }  // rows of an im2col matrix
  int64_t out_plane() const { return oh * ow; }
};

// Reads kernel/stride/padding/dilation pairs from attrs, validating them; `op` names errors.
// For conv2d, `weight` is (O, C/groups, KH, KW); for pooling pass nullptr.
ConvGeometry conv_geometry(std::string_view op, const Shape& input, const Shape* weight, const Attrs& attrs);

}  // namespace gometal
