#include "backends/cpu/conv_channel_input_grad.h"

#include <algorithm>

#include "backends/cpu/conv_lane_packing.h"
#include "backends/cpu/lane_transpose.h"
#include "backends/cpu/layout.h"
#include "backends/cpu/packed_weight_cache.h"
#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

using conv_lanes::keep_opaque;
using conv_lanes::kMostLanes;
using conv_lanes::kSlack;
using conv_lanes::kTaps;
using conv_lanes::round_up;

constexpr int kNarrowestTile = 8;  // pixels of the smallest tile any path runs

// dy's padding as the forward convolution of dx reads it.
int64_t pad_rows(const ConvGeometry& g) { return 2 - g.ph; }
int64_t pad_cols(const ConvGeometry& g) { return 2 - g.pw; }
int64_t padded_row(const ConvGeometry& g) { return g.ow + 2 * pad_cols(g); }
int64_t padded_plane(const ConvGeometry& g) { return (g.oh + 2 * pad_rows(g)) * padded_row(g); }
int64_t packed_floats(const ConvGeometry& g) { return round_up(g.c, kMostLanes) * g.o * kTaps; }

void pack_weights(const PackedWeightKey& key, const float* w, float* packed) {
  conv_lanes::pack_3x3(key, w, /*input_gradient=*/true, packed);
}

// One image's dy with zeros around each plane: only the border is written.
void pad_dy(const ConvGeometry& g, const float* dy, float* padded) {
  pad_planes(dy, g.o, g.oh, g.ow, pad_rows(g), pad_cols(g), padded);
  std::fill(padded + g.o * padded_plane(g), padded + g.o * padded_plane(g) + kSlack, 0.0f);
}

// What one image's tiles read and write.
struct ImageArgs {
  const float* padded;  // dy (O, rows, row), padded
  const float* packed;  // (blocks, O, 9, L)
  float* dx;            // (C, H, W)
  int64_t o, c, h, w, row, plane, block;
};

// dx[c0 .. c0 + V*L)[y][x0 .. x0 + P) for the channels below C: for each dy channel and window
// row, the 3 weight vectors of each block, then each dy value of the row under the tile
// broadcast once and added to the pixels it reaches (pixel p takes q = p + kj).
template <class Vec, int L, int V, int P>
GOMETAL_SIMD_INLINE void tile(const ImageArgs& a, int64_t b0, int64_t y, int64_t x0) {
  Vec acc[V][P] = {};
  const float* wp = a.packed + b0 * a.block;
  const float* src = a.padded + y * a.row + x0;
  for (int64_t o = 0; o < a.o; ++o, src += a.plane) {
    const float* in = src;
    // Rolled over the window's rows, the row's dy values addressed from one opaque pointer:
    // unrolled, GCC keeps an offset per (row, value) and reloads them from the stack.
#pragma GCC unroll 1
    for (int ki = 0; ki < 3; ++ki, in += a.row, wp += 3 * L) {
      keep_opaque(in);
      Vec wv[3][V];
#pragma GCC unroll 3
      for (int kj = 0; kj < 3; ++kj)
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) wv[kj][v] = load<Vec>(wp + v * a.block + kj * L);
#pragma GCC unroll 32
      for (int q = 0; q < P + 2; ++q) {
        const Vec b = broadcast<Vec, L>(in + q);
#pragma GCC unroll 3
        for (int kj = 0; kj < 3; ++kj) {
          const int p = q - kj;
          if (p < 0 || p >= P) continue;
#pragma GCC unroll 2
          for (int v = 0; v < V; ++v) acc[v][p] += wv[kj][v] * b;
        }
      }
    }
  }
  const int64_t channels = std::min<int64_t>(V * L, a.c - b0 * L);
  if constexpr (V == 1 && P == L) {
    // A square tile: transposed in registers, each channel's pixels stored as one vector.
    lanes::transpose<Vec, L>(acc[0]);
    for (int64_t cl = 0; cl < channels; ++cl)
      __builtin_memcpy(a.dx + (b0 * L + cl) * a.h * a.w + y * a.w + x0, &acc[0][cl], sizeof(Vec));
    return;
  }
  // Else stored channel by channel: 16 scalar moves per pixel against 9 * O FMAs.
  alignas(64) float out[P][V * L];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) __builtin_memcpy(&out[p][v * L], &acc[v][p], sizeof(Vec));
  for (int64_t cl = 0; cl < channels; ++cl) {
    float* dst = a.dx + (b0 * L + cl) * a.h * a.w + y * a.w + x0;
    for (int p = 0; p < P; ++p) dst[p] = out[p][cl];
  }
}

// Every row's tiles of blocks [b0, b0 + V): P-pixel tiles from the left, the last one moved
// left to end at the row's end (its overlap recomputed, giving the same bits).
template <class Vec, int L, int V, int P>
GOMETAL_SIMD_INLINE void blocks_pass(const ImageArgs& a, int64_t b0) {
  for (int64_t y = 0; y < a.h; ++y)
    for (int64_t x0 = 0; x0 < a.w; x0 += P) tile<Vec, L, V, P>(a, b0, y, std::min<int64_t>(x0, a.w - P));
}

// One vector of channels per tile: P pixels when the rows have them, else 8.
template <class Vec, int L, int P>
GOMETAL_SIMD_INLINE void single_block(const ImageArgs& a, int64_t b0) {
  if (a.w >= P)
    blocks_pass<Vec, L, 1, P>(a, b0);
  else
    blocks_pass<Vec, L, 1, kNarrowestTile>(a, b0);
}

// AVX2 and portable: 1 vector x 8 pixels (8 sums, 3 weights and a broadcast of 16 registers).
template <class Vec, int L>
GOMETAL_SIMD_INLINE void image_narrow(const ImageArgs& a) {
  const int64_t blocks = (a.c + L - 1) / L;
  for (int64_t b = 0; b < blocks; ++b) blocks_pass<Vec, L, 1, kNarrowestTile>(a, b);
}

void image_portable(const ImageArgs& a) { image_narrow<Vec8f, 8>(a); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void image_avx2(const ImageArgs& a) { image_narrow<Vec8f, 8>(a); }

// AVX-512: pairs of blocks x 8 pixels (16 sums, 6 weights, 1 broadcast of 32 registers), a
// last odd block 1 x 16.
__attribute__((target("avx512f,avx2,fma"))) void image_avx512(const ImageArgs& a) {
  const int64_t blocks = (a.c + 15) / 16;
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) blocks_pass<Vec16f, 16, 2, 8>(a, b);
  if (b < blocks) single_block<Vec16f, 16, 16>(a, b);
}
#endif

void run_image(ConvPath path, const ImageArgs& a) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512: return image_avx512(a);
    case ConvPath::Avx2: return image_avx2(a);
#endif
    default: return image_portable(a);
  }
}

}  // namespace

bool conv2d_channel_input_grad_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.ph <= 2 && g.pw <= 2 && g.w >= kNarrowestTile;
}

int64_t conv2d_channel_input_grad_scratch(const ConvGeometry& g) {
  return round_up(g.o * padded_plane(g) + kSlack, 16);
}

void conv2d_channel_input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, float* dx, int64_t n0,
                                       int64_t n1, float* scratch) {
  const ConvPath path = choose_conv_path();
  const int64_t lanes = path == ConvPath::Avx512 ? 16 : 8;
  const PackedWeightKey key{"conv_channel_input_grad", g.o, g.c, lanes};
  float* padded = scratch;
  ImageArgs a{};
  a.padded = padded;
  a.packed = cached_packed_weights(key, w, g.o * g.c * kTaps, packed_floats(g), pack_weights);
  a.o = g.o;
  a.c = g.c;
  a.h = g.h;
  a.w = g.w;
  a.row = padded_row(g);
  a.plane = padded_plane(g);
  a.block = g.o * kTaps * lanes;
  for (int64_t n = n0; n < n1; ++n) {
    pad_dy(g, dy + n * g.o * g.out_plane(), padded);
    a.dx = dx + n * g.c * g.h * g.w;
    run_image(path, a);
  }
}

}  // namespace gometal
