#include "ir/conv_geometry.h"

#include <stdexcept>

namespace gometal {
namespace {

[[noreturn]] void fail(std::string_view op, const std::string& what) {
  throw std::invalid_argument("[" + std::string(op) + "] " + what);
}

void read_pair(std::string_view op, const char* name, const std::vector<int64_t>& v, int64_t fallback,
               int64_t minimum, int64_t* a, int64_t* b) {
  if (v.empty()) {
    *a = *b = fallback;
    return;
  }
  if (v.size() != 2) fail(op, std::string(name) + " must have 2 values (height, width), got " + std::to_string(v.size()));
  if (v[0] < minimum || v[1] < minimum)
    fail(op, std::string(name) + " must be >= " + std::to_string(minimum) + ", got (" + std::to_string(v[0]) + ", " +
                 std::to_string(v[1]) + ")");
  *a = v[0];
  *b = v[1];
}

}  // namespace

ConvGeometry conv_geometry(std::string_view op, const Shape& input, const Shape* weight, const Attrs& attrs) {
  if (input.size() != 4)
    fail(op, "expects a 4-D input (N, C, H, W), got shape " + shape_str(input));
  ConvGeometry g;
  g.n = input[0];
  g.c = input[1];
  g.h = input[2];
  g.w = input[3];
  if (is_symbol(g.c) || is_symbol(g.h) || is_symbol(g.w))
    fail(op, "only dimension 0 of " + shape_str(input) + " may be symbolic");
  read_pair(op, "stride", attrs.stride, 1, 1, &g.sh, &g.sw);
  read_pair(op, "padding", attrs.padding, 0, 0, &g.ph, &g.pw);
  read_pair(op, "dilation", attrs.dilation, 1, 1, &g.dh, &g.dw);
  if (weight) {
    const Shape& wt = *weight;
    if (wt.size() != 4) fail(op, "expects a 4-D weight (O, C/groups, KH, KW), got shape " + shape_str(wt));
    g.groups = attrs.groups;
    if (g.groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(g.groups));
    if (g.c % g.groups != 0 || wt[0] % g.groups != 0)
      fail(op, "groups=" + std::to_string(g.groups) + " must divide input channels " + std::to_string(g.c) +
                   " and output channels " + std::to_string(wt[0]));
    if (wt[1] * g.groups != g.c)
      fail(op, "input " + shape_str(input) + " has " + std::to_string(g.c) + " channels but weight " + shape_str(wt) +
                   " expects " + std::to_string(wt[1] * g.groups) + " (groups=" + std::to_string(g.groups) + ")");
    g.o = wt[0];
    g.kh = wt[2];
    g.kw = wt[3];
  } else {
    read_pair(op, "kernel_size", attrs.kernel_size, 0, 1, &g.kh, &g.kw);
    if (g.kh == 0) fail(op, "kernel_size is required");
    if (attrs.stride.empty()) {  // pooling windows default to not overlapping, as in torch
      g.sh = g.kh;
      g.sw = g.kw;
    }
    if (g.ph * 2 > g.kh || g.pw * 2 > g.kw)
      fail(op, "padding (" + std::to_string(g.ph) + ", " + std::to_string(g.pw) +
                   ") must be at most half the kernel (" + std::to_string(g.kh) + ", " + std::to_string(g.kw) + ")");
    g.o = g.c;
  }
  const int64_t eff_h = g.dh * (g.kh - 1) + 1, eff_w = g.dw * (g.kw - 1) + 1;
  if (g.h + 2 * g.ph < eff_h || g.w + 2 * g.pw < eff_w)
    fail(op, "kernel (" + std::to_string(eff_h) + ", " + std::to_string(eff_w) + ") is larger than the padded input (" +
                 std::to_string(g.h + 2 * g.ph) + ", " + std::to_string(g.w + 2 * g.pw) + ") of " + shape_str(input));
  g.oh = (g.h + 2 * g.ph - eff_h) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - eff_w) / g.sw + 1;
  return g;
}

}  // namespace gometal
