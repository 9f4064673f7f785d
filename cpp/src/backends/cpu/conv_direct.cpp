#include "backends/cpu/conv_direct.h"

#include <algorithm>

#include "backends/cpu/vec8.h"

namespace gometal {
namespace {

constexpr int64_t kCols = 16;  // output pixels per micro-kernel call: two 8-float vectors
constexpr int64_t kRows = 6;   // output channels per micro-kernel call
constexpr int64_t kSlack = 32; // floats after the padded image: the last row's vectors may overrun

// Pins a vector in registers (otherwise GCC folds a fresh load into every FMA). "x" names an
// SSE/AVX register and a Vec8 needs a 256-bit one, so only x86 with AVX (a native build) takes
// the hint; portable x86 builds and other CPUs keep the compiler's own choice.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__AVX__)
#define GOMETAL_KEEP_IN_REGISTER(v) asm("" : "+x"(v))
#else
#define GOMETAL_KEEP_IN_REGISTER(v) ((void)(v))
#endif

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Padded {
  int64_t h, w;  // padded height and width
  int64_t plane() const { return h * w; }
};

Padded padded_size(const ConvGeometry& g) { return {g.h + 2 * g.ph, g.w + 2 * g.pw}; }

// Where one call reads its input: the first tap of its first channel, and the strides.
struct Taps {
  int64_t channels, kh, kw, channel_stride, row_stride, dh, dw;
};

// out[r][0..cols) = sum over (c, ki, kj) of w[k][r] * in[c][ki*dh][kj*dw + 0..16), r < Rows.
// (Unrolling a fixed 3x3 window makes the compiler trade registers for reloads: slower.)
template <int Rows>
void micro_kernel(const Taps& t, const float* in, const float* w, float* out, int64_t ld, int64_t cols) {
  Vec8 acc[Rows][2] = {};
  for (int64_t c = 0; c < t.channels; ++c)
    for (int64_t ki = 0; ki < t.kh; ++ki) {
      const float* row = in + c * t.channel_stride + ki * t.dh * t.row_stride;
      for (int64_t kj = 0; kj < t.kw; ++kj, w += kRows) {
        const Vec8 b0 = load8(row + kj * t.dw), b1 = load8(row + kj * t.dw + 8);
#pragma GCC unroll 6
        for (int r = 0; r < Rows; ++r) {
          const float s = w[r];
          const Vec8 a = {s, s, s, s, s, s, s, s};
          acc[r][0] += a * b0;
          acc[r][1] += a * b1;
        }
      }
    }
  for (int r = 0; r < Rows; ++r) {
    float* o = out + r * ld;
    if (cols == kCols) {
      store8(o, acc[r][0]);
      store8(o + 8, acc[r][1]);
    } else {
      float tmp[kCols];
      store8(tmp, acc[r][0]);
      store8(tmp + 8, acc[r][1]);
      std::copy(tmp, tmp + cols, o);
    }
  }
}

using MicroKernel = void (*)(const Taps&, const float*, const float*, float*, int64_t, int64_t);
constexpr MicroKernel kMicroKernels[kRows + 1] = {nullptr,         micro_kernel<1>, micro_kernel<2>, micro_kernel<3>,
                                                  micro_kernel<4>, micro_kernel<5>, micro_kernel<6>};

// One group's channels of one image, zero-padded: (C/groups, H + 2ph, W + 2pw).
void pad_image(const ConvGeometry& g, const float* x, float* padded) {
  const Padded p = padded_size(g);
  std::fill(padded, padded + g.c_per_group() * p.plane() + kSlack, 0.0f);
  for (int64_t c = 0; c < g.c_per_group(); ++c)
    for (int64_t iy = 0; iy < g.h; ++iy)
      std::copy(x + (c * g.h + iy) * g.w, x + (c * g.h + iy + 1) * g.w, padded + c * p.plane() + (iy + g.ph) * p.w + g.pw);
}

// Packs one group's weights as blocks of 6 output channels, tap-major: block[k][r] =
// weight(o0 + r, k), zero past the group's channels.
template <class Weight>
void pack_weights(const ConvGeometry& g, float* packed, Weight weight) {
  const int64_t taps = g.patch();
  for (int64_t o0 = 0; o0 < g.o_per_group(); o0 += kRows) {
    float* block = packed + o0 * taps;
    for (int64_t k = 0; k < taps; ++k)
      for (int64_t r = 0; r < kRows; ++r) block[k * kRows + r] = o0 + r < g.o_per_group() ? weight(o0 + r, k) : 0.0f;
  }
}

void forward_group(const ConvGeometry& g, const float* padded, const float* packed, float* yg) {
  const Padded p = padded_size(g);
  const Taps t{g.c_per_group(), g.kh, g.kw, p.plane(), p.w, g.dh, g.dw};
  const int64_t plane = g.out_plane(), taps = g.patch();
  for (int64_t oy = 0; oy < g.oh; ++oy)
    for (int64_t ox0 = 0; ox0 < g.ow; ox0 += kCols) {
      const int64_t cols = std::min(kCols, g.ow - ox0);
      const float* in = padded + oy * g.sh * p.w + ox0;
      for (int64_t o0 = 0; o0 < g.o_per_group(); o0 += kRows) {
        const int64_t rows = std::min(kRows, g.o_per_group() - o0);
        kMicroKernels[rows](t, in, packed + o0 * taps, yg + o0 * plane + oy * g.ow + ox0, plane, cols);
      }
    }
}

// Weight gradient: RO output channels x RT taps of dw, each summed over pixels in 8 lanes
// kept in memory across images (lanes[weight][8]), added across lanes once at the end.
// 12 accumulators + 3 dy vectors + 1 input vector: all 16 AVX registers, no reloads.
constexpr int kGradRows = kDirectWeightGradBlock, kGradTaps = 4;

// lanes[r][t] += dy[r] * x at tap t over the image's pixels, for r < RO, t < RT;
// `offsets[t]` is tap t's place in the padded image relative to the output row's start.
template <int RO, int RT>
void weight_grad_kernel(const ConvGeometry& g, const float* dy, const float* padded, int64_t padded_w,
                        const int64_t* offsets, float* lanes, int64_t ld) {
  Vec8 acc[RO][RT];
  for (int r = 0; r < RO; ++r)
    for (int t = 0; t < RT; ++t) acc[r][t] = load8(lanes + (r * ld + t) * 8);
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    const float* x_row = padded + oy * g.sh * padded_w;
    const float* dy_row = dy + oy * g.ow;
    for (int64_t ox = 0; ox < g.ow; ox += 8) {
      Vec8 d[RO];
      for (int r = 0; r < RO; ++r) {
        d[r] = load8(dy_row + r * g.out_plane() + ox);
        GOMETAL_KEEP_IN_REGISTER(d[r]);
      }
#pragma GCC unroll 4
      for (int t = 0; t < RT; ++t) {
        Vec8 xv = load8(x_row + offsets[t] + ox);
        GOMETAL_KEEP_IN_REGISTER(xv);
        for (int r = 0; r < RO; ++r) acc[r][t] += d[r] * xv;
      }
    }
  }
  for (int r = 0; r < RO; ++r)
    for (int t = 0; t < RT; ++t) store8(lanes + (r * ld + t) * 8, acc[r][t]);
}

using WeightGradKernel = void (*)(const ConvGeometry&, const float*, const float*, int64_t, const int64_t*, float*,
                                  int64_t);

template <int RO>
constexpr WeightGradKernel kWeightGradKernels[5] = {
    nullptr, weight_grad_kernel<RO, 1>, weight_grad_kernel<RO, 2>, weight_grad_kernel<RO, 3>, weight_grad_kernel<RO, 4>};

}  // namespace

bool conv2d_direct_weight_grad_supported(const ConvGeometry& g) { return g.sw == 1 && g.ow % 8 == 0; }

int64_t padded_group_floats(const ConvGeometry& g) {
  return round_up(g.c_per_group() * padded_size(g).plane() + kSlack, 16);
}

int64_t conv2d_direct_padded_image_floats(const ConvGeometry& g) { return g.groups * padded_group_floats(g); }

void conv2d_direct_pad_image(const ConvGeometry& g, const float* x, float* padded) {
  for (int64_t gi = 0; gi < g.groups; ++gi)
    pad_image(g, x + gi * g.c_per_group() * g.h * g.w, padded + gi * padded_group_floats(g));
}

int64_t conv2d_direct_weight_grad_scratch(const ConvGeometry& g) {
  return g.patch() * 2;  // the taps' offsets (int64: two floats each)
}

void conv2d_direct_weight_grad(const ConvGeometry& g, const float* padded, const float* dy, int64_t o_begin,
                               int64_t o_end, float* lanes, float* scratch) {
  const Padded p = padded_size(g);
  const int64_t taps = g.patch(), window = g.kh * g.kw, out_image = g.o * g.out_plane();
  auto* offsets = reinterpret_cast<int64_t*>(scratch);
  for (int64_t k = 0; k < taps; ++k) {
    const int64_t c = k / window, ki = k % window / g.kw, kj = k % g.kw;
    offsets[k] = c * p.plane() + ki * g.dh * p.w + kj * g.dw;
  }
  for (int64_t n = 0; n < g.n; ++n) {
    const float* padded_image = padded + n * conv2d_direct_padded_image_floats(g);
    for (int64_t gi = o_begin / g.o_per_group(); gi < g.groups && gi * g.o_per_group() < o_end; ++gi) {
      const float* padded_group = padded_image + gi * padded_group_floats(g);
      const int64_t first = std::max(o_begin, gi * g.o_per_group());
      const int64_t last = std::min(o_end, (gi + 1) * g.o_per_group());
      for (int64_t o0 = first; o0 < last; o0 += kGradRows) {
        const int64_t rows = std::min<int64_t>(kGradRows, last - o0);
        for (int64_t k0 = 0; k0 < taps; k0 += kGradTaps) {
          const int64_t count = std::min<int64_t>(kGradTaps, taps - k0);
          const WeightGradKernel kernel = rows == 3   ? kWeightGradKernels<3>[count]
                                          : rows == 2 ? kWeightGradKernels<2>[count]
                                                      : kWeightGradKernels<1>[count];
          kernel(g, dy + n * out_image + o0 * g.out_plane(), padded_group, p.w, offsets + k0,
                 lanes + ((o0 - o_begin) * taps + k0) * 8, taps);
        }
      }
    }
  }
}

void sum_lanes(const float* lanes, int64_t weights, float* dw) {
  for (int64_t i = 0; i < weights; ++i) {
    float sum = 0.0f;
    for (int lane = 0; lane < 8; ++lane) sum += lanes[i * 8 + lane];
    dw[i] = sum;
  }
}

bool conv2d_direct_supported(const ConvGeometry& g) { return g.sw == 1; }

int64_t conv2d_direct_scratch(const ConvGeometry& g) {
  return round_up(g.o_per_group(), kRows) * g.patch() + g.c_per_group() * padded_size(g).plane() + kSlack;
}

void conv2d_direct_forward_image(const ConvGeometry& g, const float* x, const float* w, float* y, float* scratch) {
  const int64_t taps = g.patch();
  float* padded = scratch + round_up(g.o_per_group(), kRows) * taps;
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const float* wg = w + gi * g.o_per_group() * taps;
    pack_weights(g, scratch, [&](int64_t o, int64_t k) { return wg[o * taps + k]; });
    pad_image(g, x + gi * g.c_per_group() * g.h * g.w, padded);
    forward_group(g, padded, scratch, y + gi * g.o_per_group() * g.out_plane());
  }
}

bool input_grad_as_forward(const ConvGeometry& g, ConvGeometry* f) {
  const int64_t reach_h = g.dh * (g.kh - 1), reach_w = g.dw * (g.kw - 1);
  if (g.sh != 1 || g.sw != 1 || g.ph > reach_h || g.pw > reach_w) return false;
  *f = g;
  f->c = g.o;
  f->h = g.oh;
  f->w = g.ow;
  f->o = g.c;
  f->ph = reach_h - g.ph;
  f->pw = reach_w - g.pw;
  f->oh = g.h;
  f->ow = g.w;
  return true;
}

void conv2d_direct_input_grad_image(const ConvGeometry& f, const float* dy, const float* w, float* dx,
                                    float* scratch) {
  // f's input channels are the forward convolution's outputs and vice versa, so the
  // forward weights are (f.c, f.o / groups, kh, kw).
  const int64_t taps = f.patch(), window = f.kh * f.kw, forward_patch = f.o_per_group() * window;
  float* padded = scratch + round_up(f.o_per_group(), kRows) * taps;
  for (int64_t gi = 0; gi < f.groups; ++gi) {
    const float* wg = w + gi * f.c_per_group() * forward_patch;
    // Entry (c, k = (o, ki, kj)) is w[o][c][kh-1-ki][kw-1-kj] of this group.
    pack_weights(f, scratch, [&](int64_t c, int64_t k) {
      const int64_t o = k / window, tap = k % window;
      return wg[o * forward_patch + c * window + (window - 1 - tap)];
    });
    pad_image(f, dy + gi * f.c_per_group() * f.h * f.w, padded);
    forward_group(f, padded, scratch, dx + gi * f.o_per_group() * f.out_plane());
  }
}

}  // namespace gometal
