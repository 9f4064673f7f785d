#include "backends/cpu/conv_simd.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

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
      const Vec v = conv_epilogue_channel(acc[r][j], a.epilogue, o0 + r);
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

// tile<..., rows, NV> for run-time rows <= Rows.
template <class Vec, int L, int R, int Rows, int NV>
GOMETAL_SIMD_INLINE void dispatch_tile(const GroupArgs& a, int64_t o0, int rows, const int64_t* in_off,
                                       const int64_t* out_off, const int64_t* cols) {
  if constexpr (Rows >= 1) {
    if (rows < Rows) return dispatch_tile<Vec, L, R, Rows - 1, NV>(a, o0, rows, in_off, out_off, cols);
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
    int64_t in_off[V] = {}, out_off[V] = {}, cols[V] = {};  // cols 0: a segment not stored
    for (int j = 0; j < nv; ++j) {
      const int64_t oy = (s0 + j) / per_row, ox = (s0 + j) % per_row * L;
      in_off[j] = oy * a.sh * a.row_stride + ox;
      out_off[j] = oy * a.ow + ox;
      cols[j] = std::min<int64_t>(L, a.ow - ox);
    }
    // A last group of fewer segments still runs all V, the missing ones over the first's input
    // and storing nothing: a tile of fewer vectors gave some outputs another last bit on the
    // 8-lane paths than the other kernels (and than itself in other parts of the plane).
    for (int64_t o0 = 0; o0 < a.out_channels; o0 += R) {
      const int rows = static_cast<int>(std::min<int64_t>(R, a.out_channels - o0));
      dispatch_tile<Vec, L, R, R, V>(a, o0, rows, in_off, out_off, cols);
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

// pool_max on every lane.
template <class Vec>
GOMETAL_SIMD_INLINE Vec pool_max(Vec best, Vec v) {
  return (v > best) | (v != v) ? v : best;
}

// The even and the odd lanes of the 2L floats (a, b), each in order.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void deinterleave(Vec a, Vec b, Vec* even, Vec* odd) {
  using Index = std::conditional_t<L == 16, int32_t __attribute__((vector_size(64))),
                                   int32_t __attribute__((vector_size(32)))>;
  Index even_index, odd_index;
  for (int i = 0; i < L; ++i) {
    even_index[i] = 2 * i;
    odd_index[i] = 2 * i + 1;
  }
  *even = __builtin_shuffle(a, b, even_index);
  *odd = __builtin_shuffle(a, b, odd_index);
}

// out[o][pr][px] = max of band[o][2pr..2pr+1][2px..2px+1] for a band of `rows` (even) rows,
// L outputs at a time from two vector rows: the scalar loop with its stride-2 reads cost as
// much as the convolution of a 3-channel layer. Any NaN in a window gives NaN, whatever the
// order of the maxima, as torch's max pooling (and pool.cpp) propagate NaN.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void pool_band(const float* band, int64_t channels, int64_t rows, int64_t width, float* out,
                                   int64_t out_plane, int64_t out_w) {
  for (int64_t o = 0; o < channels; ++o)
    for (int64_t pr = 0; pr < rows / 2; ++pr) {
      const float* r0 = band + (o * rows + 2 * pr) * width;
      const float* r1 = r0 + width;
      float* dst = out + o * out_plane + pr * out_w;
      int64_t px = 0;
      for (; px + L <= out_w; px += L) {
        const Vec top_a = load<Vec>(r0 + 2 * px), top_b = load<Vec>(r0 + 2 * px + L);
        const Vec bottom_a = load<Vec>(r1 + 2 * px), bottom_b = load<Vec>(r1 + 2 * px + L);
        Vec even, odd;
        deinterleave<Vec, L>(pool_max(top_a, bottom_a), pool_max(top_b, bottom_b), &even, &odd);
        const Vec v = pool_max(even, odd);
        __builtin_memcpy(dst + px, &v, sizeof v);
      }
      for (; px < out_w; ++px)
        dst[px] = pool_max(pool_max(pool_max(r0[2 * px], r0[2 * px + 1]), r1[2 * px]), r1[2 * px + 1]);
    }
}

void pool_band_portable(const float* band, int64_t channels, int64_t rows, int64_t width, float* out,
                        int64_t out_plane, int64_t out_w) {
  pool_band<Vec8f, 8>(band, channels, rows, width, out, out_plane, out_w);
}

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void pool_band_avx2(const float* band, int64_t channels, int64_t rows,
                                                         int64_t width, float* out, int64_t out_plane,
                                                         int64_t out_w) {
  pool_band<Vec8f, 8>(band, channels, rows, width, out, out_plane, out_w);
}
__attribute__((target("avx512f,avx2,fma"))) void pool_band_avx512(const float* band, int64_t channels,
                                                                  int64_t rows, int64_t width, float* out,
                                                                  int64_t out_plane, int64_t out_w) {
  pool_band<Vec16f, 16>(band, channels, rows, width, out, out_plane, out_w);
}
#endif

void pool_band(ConvPath path, const float* band, int64_t channels, int64_t rows, int64_t width, float* out,
               int64_t out_plane, int64_t out_w) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512: return pool_band_avx512(band, channels, rows, width, out, out_plane, out_w);
    case ConvPath::Avx2: return pool_band_avx2(band, channels, rows, width, out, out_plane, out_w);
#endif
    default: return pool_band_portable(band, channels, rows, width, out, out_plane, out_w);
  }
}

// Output rows [row_begin, row_end) of a group's channels: written to a.y, or with `pooled`
// each band of rows into `band`, then pooled into `pooled` (the group's pooled planes).
void forward_rows(ConvPath path, const GroupArgs& a, int64_t row_begin, int64_t row_end, float* band,
                  float* pooled) {
  if (!pooled) {
    GroupArgs b = a;
    b.oh = row_end - row_begin;
    b.padded = a.padded + row_begin * a.sh * a.row_stride;
    b.y = a.y + row_begin * a.ow;
    forward_group(path, b);
    return;
  }
  const int64_t pooled_w = a.ow / 2, pooled_plane = (a.oh / 2) * pooled_w;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kBandRows) {
    GroupArgs b = a;
    b.oh = std::min(kBandRows, row_end - r0);
    b.padded = a.padded + r0 * a.sh * a.row_stride;
    b.y = band;
    b.plane = b.oh * a.ow;
    forward_group(path, b);
    pool_band(path, band, a.out_channels, b.oh, a.ow, pooled + r0 / 2 * pooled_w, pooled_plane, pooled_w);
  }
}

// Where output channels [o_begin, o_end) of group gi read and write, from its padded image.
GroupArgs group_args(const ConvGeometry& g, const float* padded, const float* w, float* y,
                     const ConvEpilogue& epilogue, int64_t gi, int64_t o_begin, int64_t o_end) {
  const Padded p = padded_size(g);
  const int64_t first = gi * g.o_per_group() + o_begin;
  GroupArgs a{};
  a.padded = padded;
  a.weights = w + first * g.patch();
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
  a.taps = g.patch();
  a.out_channels = o_end - o_begin;
  a.epilogue = epilogue;
  if (a.epilogue.bias) a.epilogue.bias += first;
  if (a.epilogue.scale) a.epilogue.scale += first;
  if (a.epilogue.shift) a.epilogue.shift += first;
  return a;
}

// Where a pooled output's channels [first, ...) start in image y.
float* pooled_output(const ConvGeometry& g, float* y, const ConvEpilogue& epilogue, int64_t first) {
  return epilogue.max_pool_2x2 ? y + first * (g.oh / 2) * (g.ow / 2) : nullptr;
}

float* band_scratch(const ConvGeometry& g, float* scratch) {
  return scratch + round_up(g.c_per_group() * padded_size(g).plane(), 16) + kSlack;
}

}  // namespace

ConvPath choose_conv_path() { return *choose_simd_path("conv2d", "GOMETAL_CONV_KERNEL"); }

bool conv2d_simd_supported(const ConvGeometry& g) { return g.sw == 1; }

int64_t conv2d_simd_scratch(const ConvGeometry& g) {
  return round_up(g.c_per_group() * padded_size(g).plane(), 16) + kSlack + g.o_per_group() * kBandRows * g.ow;
}

void conv2d_simd_forward_image(ConvPath path, const ConvGeometry& g, const float* x, const float* w, float* y,
                               float* scratch, const ConvEpilogue& epilogue) {
  float* padded = scratch;
  const int64_t rows = epilogue.max_pool_2x2 ? g.oh / 2 * 2 : g.oh;
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    pad_image(g, x + gi * g.c_per_group() * g.h * g.w, padded);
    const GroupArgs a = group_args(g, padded, w, y, epilogue, gi, 0, g.o_per_group());
    forward_rows(path, a, 0, rows, band_scratch(g, scratch),
                 pooled_output(g, y, epilogue, gi * g.o_per_group()));
  }
}

namespace {

// A part of one image's convolution: output channels [o_begin, o_end) of group `group`
// (counted within the group) over output rows [row_begin, row_end) (rows before pooling).
// Each output is the same sum in the same order whichever part computes it, so an image cut
// into parts gives the bits of the whole-image call.
struct ConvPart {
  int64_t group = 0, o_begin = 0, o_end = 0, row_begin = 0, row_end = 0;
};

// Below this many multiply-adds per image, waking a second thread for a part of it costs
// more than the part.
constexpr int64_t kMinSplitMacs = int64_t{1} << 18;

// Output rows a pooled image has before pooling (2 * floor(OH/2)), else OH: the rows parts cover.
int64_t part_rows(const ConvGeometry& g, const ConvEpilogue& epilogue) {
  return epilogue.max_pool_2x2 ? g.oh / 2 * 2 : g.oh;
}

// Parts start at multiples of the register tile's output channels, so cutting an image
// wastes no tile slots.
int64_t channel_align(ConvPath path) {
  return path == ConvPath::Avx512 ? kAvx512Rows : path == ConvPath::Avx2 ? kAvx2Rows : kPortableRows;
}

// Pads, into `scratch`, the rows of group `part.group` of image x (C, H, W) that `part` reads.
// Rows of the top or bottom padding are zero rows like any other: a padding taller than the
// window's reach leaves whole rows of zeros, never a row index outside the padded image.
void pad_part(const ConvGeometry& g, const float* x, const ConvPart& part, float* scratch) {
  const Padded p = padded_size(g);
  const int64_t first = part.row_begin * g.sh;
  const int64_t end = std::min(p.h, (part.row_end - 1) * g.sh + (g.kh - 1) * g.dh + 1);
  const float* xg = x + part.group * g.c_per_group() * g.h * g.w;
  for (int64_t c = 0; c < g.c_per_group(); ++c)
    for (int64_t py = first; py < end; ++py) {
      float* row = scratch + c * p.plane() + py * p.w;
      const int64_t iy = py - g.ph;
      if (iy < 0 || iy >= g.h) {
        std::fill(row, row + p.w, 0.0f);
        continue;
      }
      const float* src = xg + (c * g.h + iy) * g.w;
      std::fill(row, row + g.pw, 0.0f);
      for (int64_t ix = 0; ix < g.w; ++ix) row[g.pw + ix] = src[ix];
      std::fill(row + g.pw + g.w, row + p.w, 0.0f);
    }
  // A last segment's loads may run past the image: into zeros, as after pad_image.
  float* slack = scratch + g.c_per_group() * p.plane();
  std::fill(slack, slack + kSlack, 0.0f);
}

// One part of image y (as conv2d_simd_forward_image writes it), from the rows pad_part left
// in `scratch`.
void forward_part(ConvPath path, const ConvGeometry& g, const float* w, float* y, float* scratch,
                  const ConvEpilogue& epilogue, const ConvPart& part) {
  const GroupArgs a = group_args(g, scratch, w, y, epilogue, part.group, part.o_begin, part.o_end);
  forward_rows(path, a, part.row_begin, part.row_end, band_scratch(g, scratch),
               pooled_output(g, y, epilogue, part.group * g.o_per_group() + part.o_begin));
}

}  // namespace

bool conv2d_simd_forward_in_parts(const ConvGeometry& g, const ConvEpilogue& epilogue, int threads) {
  return threads > 1 && g.n < 2 * int64_t{threads} && part_rows(g, epilogue) > 0 &&
         g.o * g.patch() * g.out_plane() >= kMinSplitMacs;
}

void conv2d_simd_forward_parts(const ExecContext& ctx, ConvPath path, const ConvGeometry& g, const float* x,
                               const float* w, float* y, const ConvEpilogue& epilogue) {
  // Each image, group by group, cut into bands of output rows (fewest duplicated halo rows)
  // and, when bands are too few for a couple of tasks per thread, blocks of output channels;
  // the blocks of a band follow each other, so a thread that takes several pads its rows once.
  const int threads = ctx.pool->size();
  const int64_t rows = part_rows(g, epilogue), images = g.n * g.groups;
  const int64_t per_image = std::max<int64_t>(1, (2 * int64_t{threads} + images - 1) / images);
  const int64_t band_count = (rows + kBandRows - 1) / kBandRows;
  const int64_t block_count = (g.o_per_group() + channel_align(path) - 1) / channel_align(path);
  int64_t bands = std::max<int64_t>(1, std::min(band_count, per_image));
  int64_t blocks = std::max<int64_t>(1, std::min(block_count, (per_image + bands - 1) / bands));
  // A plane of fewer bands than parts wanted, with channel blocks enough, is cut by channels
  // alone: no band's halo rows are padded twice (workload C's 32->64 at 16x16, batch 1, 2
  // threads, loaded machine: 77.5 -> 73.5 us, 3 alternating runs; its 64-row first layer lost
  // 6-10 % cut that way, so taller planes keep their bands).
  if (band_count < per_image && block_count >= per_image) {
    bands = 1;
    blocks = per_image;
  }
  // Pooled bands split the rows evenly in pairs: aligned to kBandRows, workload C's 64-row
  // first layer cut in 4 ran 18/18/18/10 rows, one thread 36 and the other 28. Unpooled bands
  // stay at multiples of kBandRows, where the tiles group the segments as the whole image does
  // (other groupings changed the last bit of odd planes on the 8-lane paths).
  const int64_t row_align = epilogue.max_pool_2x2 ? 2 : kBandRows;
  const int64_t in_image = g.c * g.h * g.w;
  const int64_t out_image = g.o * (epilogue.max_pool_2x2 ? (g.oh / 2) * (g.ow / 2) : g.out_plane());
  // Which (image, group, band) each thread's scratch holds padded, -1 for none: kept here, not
  // in the scratch, so the scratch is exactly the per-image kernel's.
  std::vector<int64_t> held(static_cast<size_t>(threads), -1);
  const int64_t tasks = images * bands * blocks;
  ctx.pool->parallel_for(static_cast<int>(tasks), [&](int task, int thread) {
    const int64_t padded_rows = task / blocks, block = task % blocks;
    const int64_t band = padded_rows % bands, group = padded_rows / bands % g.groups;
    const int64_t n = padded_rows / bands / g.groups;
    ConvPart part;
    part.group = group;
    split_range(rows, static_cast<int>(bands), static_cast<int>(band), row_align, &part.row_begin, &part.row_end);
    split_range(g.o_per_group(), static_cast<int>(blocks), static_cast<int>(block), channel_align(path),
                &part.o_begin, &part.o_end);
    if (part.row_begin >= part.row_end || part.o_begin >= part.o_end) return;
    float* scratch = ctx.thread_scratch(thread);
    if (held[thread] != padded_rows) {
      pad_part(g, x + n * in_image, part, scratch);
      held[thread] = padded_rows;
    }
    forward_part(path, g, w, y + n * out_image, scratch, epilogue, part);
  });
}

}  // namespace gometal
