#include "backends/cpu/conv_simd.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

constexpr int64_t kSlack = 64;  // floats after the padded image: a last segment's loads overrun

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Padded {
  int64_t h, w;
  int64_t plane() const { return h * w; }
};

Padded padded_size(const ConvGeometry& g) { return {g.h + 2 * g.ph, g.w + 2 * g.pw}; }

// One group's channels of one image, zero-padded, followed by kSlack zeros. Only the
// border is zeroed, and rows are copied inline: a memset of the whole image and a memcpy
// call per row cost as much as the copy itself on these small planes.
void pad_image(const ConvGeometry& g, const float* x, float* padded) {
  const Padded p = padded_size(g);
  const int64_t floats = g.c_per_group() * p.plane();
  if (g.ph == 0 && g.pw == 0) {
    std::copy(x, x + floats, padded);
  } else {
    for (int64_t c = 0; c < g.c_per_group(); ++c) {
      float* plane = padded + c * p.plane();
      std::fill(plane, plane + g.ph * p.w + g.pw, 0.0f);  // top rows and the first left border
      for (int64_t iy = 0; iy < g.h; ++iy) {
        float* row = plane + (iy + g.ph) * p.w + g.pw;
        const float* src = x + (c * g.h + iy) * g.w;
        for (int64_t ix = 0; ix < g.w; ++ix) row[ix] = src[ix];
        // This row's right border and the next row's left border are adjacent.
        for (int64_t ix = g.w; ix < g.w + 2 * g.pw; ++ix) row[ix] = 0.0f;
      }
      float* bottom = plane + (g.h + g.ph) * p.w + g.pw;
      std::fill(bottom - g.pw, plane + p.plane(), 0.0f);
    }
  }
  std::fill(padded + floats, padded + floats + kSlack, 0.0f);
}

// Where a group's tiles read and write.
struct GroupArgs {
  const float* padded;
  const float* weights;  // the group's (O/groups, taps), as stored
  float* y;
  int64_t channels, channel_stride, row_stride, kh, kw, dh, dw, sh;
  int64_t oh, ow, plane, taps, out_channels;
  ConvEpilogue epilogue;  // pointers already at the group's first channel
};

// The epilogue on one vector of output channel o.
template <class Vec>
GOMETAL_SIMD_INLINE Vec finish(Vec v, const ConvEpilogue& e, int64_t o) {
  if (e.bias) v += e.bias[o];
  if (e.scale) v *= e.scale[o];
  if (e.shift) v += e.shift[o];
  if (e.relu) {
    const Vec zero = {};
    v = v > zero ? v : zero;
  }
  return v;
}

// Rows output channels from o0 x NV segments: out[r][seg j] = sum over (c, ki, kj) of
// w(o0 + r, tap) * in[segment j's start + tap offset + 0..L).
template <class Vec, int L, int R, int Rows, int NV>
GOMETAL_SIMD_INLINE void tile(const GroupArgs& a, int64_t o0, const int64_t* in_off, const int64_t* out_off,
                              const int64_t* cols) {
  Vec acc[Rows][NV] = {};
  // Each row's weights as stored, one tap after another: the same cache lines as a packed
  // copy, whose packing for every image cost 2-5% of workload C's layers.
  const float* w = a.weights + o0 * a.taps;
  const int64_t w_stride = a.taps;
  for (int64_t c = 0; c < a.channels; ++c)
    for (int64_t ki = 0; ki < a.kh; ++ki) {
      const float* row = a.padded + c * a.channel_stride + ki * a.dh * a.row_stride;
      for (int64_t kj = 0; kj < a.kw; ++kj, ++w) {
        Vec b[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) b[j] = load<Vec>(row + in_off[j] + kj * a.dw);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          const Vec s = broadcast<Vec, L>(w + r * w_stride);
#pragma GCC unroll 4
          for (int j = 0; j < NV; ++j) acc[r][j] += s * b[j];
        }
      }
    }
  for (int r = 0; r < Rows; ++r) {
    float* out = a.y + (o0 + r) * a.plane;
    for (int j = 0; j < NV; ++j) {
      const Vec v = finish(acc[r][j], a.epilogue, o0 + r);
      if (cols[j] == L) {
        __builtin_memcpy(out + out_off[j], &v, sizeof v);
      } else {
        float tmp[L];
        __builtin_memcpy(tmp, &v, sizeof v);
        for (int64_t i = 0; i < cols[j]; ++i) out[out_off[j] + i] = tmp[i];
      }
    }
  }
}

// tile<..., rows, nv> for run-time rows <= Rows and nv <= NV.
template <class Vec, int L, int R, int Rows, int NV>
GOMETAL_SIMD_INLINE void dispatch_tile(const GroupArgs& a, int64_t o0, int rows, int nv, const int64_t* in_off,
                                       const int64_t* out_off, const int64_t* cols) {
  if constexpr (Rows >= 1 && NV >= 1) {
    if (rows < Rows) return dispatch_tile<Vec, L, R, Rows - 1, NV>(a, o0, rows, nv, in_off, out_off, cols);
    if (nv < NV) return dispatch_tile<Vec, L, R, Rows, NV - 1>(a, o0, rows, nv, in_off, out_off, cols);
    tile<Vec, L, R, Rows, NV>(a, o0, in_off, out_off, cols);
  }
}

// Segments (L output pixels of one row) in groups of V, each group against every block
// of R output channels: the group's input rows stay in L1 while the weights stream by.
template <class Vec, int L, int R, int V>
GOMETAL_SIMD_INLINE void forward_group(const GroupArgs& a) {
  const int64_t per_row = (a.ow + L - 1) / L, segments = a.oh * per_row;
  for (int64_t s0 = 0; s0 < segments; s0 += V) {
    const int nv = static_cast<int>(std::min<int64_t>(V, segments - s0));
    int64_t in_off[V] = {}, out_off[V] = {}, cols[V] = {};
    for (int j = 0; j < nv; ++j) {
      const int64_t oy = (s0 + j) / per_row, ox = (s0 + j) % per_row * L;
      in_off[j] = oy * a.sh * a.row_stride + ox;
      out_off[j] = oy * a.ow + ox;
      cols[j] = std::min<int64_t>(L, a.ow - ox);
    }
    for (int64_t o0 = 0; o0 < a.out_channels; o0 += R) {
      const int rows = static_cast<int>(std::min<int64_t>(R, a.out_channels - o0));
      dispatch_tile<Vec, L, R, R, V>(a, o0, rows, nv, in_off, out_off, cols);
    }
  }
}

constexpr int64_t kPortableRows = 6, kAvx2Rows = 6, kAvx512Rows = 8;

void forward_group_portable(const GroupArgs& a) { forward_group<Vec8f, 8, kPortableRows, 2>(a); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void forward_group_avx2(const GroupArgs& a) {
  forward_group<Vec8f, 8, kAvx2Rows, 2>(a);
}
__attribute__((target("avx512f,avx2,fma"))) void forward_group_avx512(const GroupArgs& a) {
  forward_group<Vec16f, 16, kAvx512Rows, 3>(a);
}
#endif

void forward_group(ConvPath path, const GroupArgs& a) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512: return forward_group_avx512(a);
    case ConvPath::Avx2: return forward_group_avx2(a);
#endif
    default: return forward_group_portable(a);
  }
}

// Output rows per band of a pooled convolution: 6 rows fill whole 3-segment tiles on
// planes 16 and 64 wide, and a band of up to 64 channels stays within 24 KB (L1).
constexpr int64_t kBandRows = 6;

// Whether `v` replaces `best` as a window's maximum: a larger value or a NaN, as torch's
// max pooling (and pool.cpp) propagate NaN.
inline float pool_max(float best, float v) { return v > best || v != v ? v : best; }

// out[o][pr][px] = max of band[o][2pr..2pr+1][2px..2px+1] for a band of `rows` (even) rows.
void pool_band(const float* band, int64_t channels, int64_t rows, int64_t width, float* out, int64_t out_plane,
               int64_t out_w) {
  for (int64_t o = 0; o < channels; ++o)
    for (int64_t pr = 0; pr < rows / 2; ++pr) {
      const float* r0 = band + (o * rows + 2 * pr) * width;
      const float* r1 = r0 + width;
      float* dst = out + o * out_plane + pr * out_w;
      for (int64_t px = 0; px < out_w; ++px)
        dst[px] = pool_max(pool_max(pool_max(r0[2 * px], r0[2 * px + 1]), r1[2 * px]), r1[2 * px + 1]);
    }
}

// The pooled convolution of one group: each band of output rows into `band`, then pooled.
void forward_pooled_group(ConvPath path, const GroupArgs& a, float* band, float* out) {
  const int64_t pooled_h = a.oh / 2, pooled_w = a.ow / 2;
  for (int64_t r0 = 0; r0 < 2 * pooled_h; r0 += kBandRows) {
    GroupArgs b = a;
    b.oh = std::min(kBandRows, 2 * pooled_h - r0);
    b.padded = a.padded + r0 * a.sh * a.row_stride;
    b.y = band;
    b.plane = b.oh * a.ow;
    forward_group(path, b);
    pool_band(band, a.out_channels, b.oh, a.ow, out + r0 / 2 * pooled_w, pooled_h * pooled_w, pooled_w);
  }
}

}  // namespace

ConvPath choose_conv_path() { return *choose_simd_path("conv2d", "GOMETAL_CONV_KERNEL"); }

bool conv2d_simd_supported(const ConvGeometry& g) { return g.sw == 1; }

int64_t conv2d_simd_scratch(const ConvGeometry& g) {
  return round_up(g.c_per_group() * padded_size(g).plane(), 16) + kSlack + g.o_per_group() * kBandRows * g.ow;
}

void conv2d_simd_forward_image(ConvPath path, const ConvGeometry& g, const float* x, const float* w, float* y,
                               float* scratch, const ConvEpilogue& epilogue) {
  const int64_t taps = g.patch();
  float* padded = scratch;
  float* band = padded + round_up(g.c_per_group() * padded_size(g).plane(), 16) + kSlack;
  const Padded p = padded_size(g);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const int64_t first = gi * g.o_per_group();
    pad_image(g, x + gi * g.c_per_group() * g.h * g.w, padded);
    GroupArgs a{};
    a.padded = padded;
    a.weights = w + first * taps;
    a.y = epilogue.max_pool_2x2 ? nullptr : y + first * g.out_plane();
    a.channels = g.c_per_group();
    a.channel_stride = p.plane();
    a.row_stride = p.w;
    a.kh = g.kh;
    a.kw = g.kw;
    a.dh = g.dh;
    a.dw = g.dw;
    a.sh = g.sh;
    a.oh = g.oh;
    a.ow = g.ow;
    a.plane = g.out_plane();
    a.taps = taps;
    a.out_channels = g.o_per_group();
    a.epilogue = epilogue;
    if (a.epilogue.bias) a.epilogue.bias += first;
    if (a.epilogue.scale) a.epilogue.scale += first;
    if (a.epilogue.shift) a.epilogue.shift += first;
    if (epilogue.max_pool_2x2)
      forward_pooled_group(path, a, band, y + first * (g.oh / 2) * (g.ow / 2));
    else
      forward_group(path, a);
  }
}

}  // namespace gometal
