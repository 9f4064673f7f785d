#include "backends/cpu/conv_channel_forward.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "backends/cpu/conv_lane_packing.h"
#include "backends/cpu/conv_winograd.h"
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

int64_t padded_row(const ConvGeometry& g) { return g.w + 2 * g.pw; }
int64_t padded_plane(const ConvGeometry& g) { return (g.h + 2 * g.ph) * padded_row(g); }
int64_t packed_floats(const ConvGeometry& g) { return round_up(g.o, kMostLanes) * g.c * kTaps; }

void pack_weights(const PackedWeightKey& key, const float* w, float* packed) {
  conv_lanes::pack_3x3(key, w, /*input_gradient=*/false, packed);
}

// What one image's tiles read and write.
struct ImageArgs {
  const float* padded;  // x (C, rows, row), padded
  const float* packed;  // (blocks, C, 9, L)
  float* y;             // (O, OH, OW)
  const ConvEpilogue* epilogue;
  int64_t c, o, oh, ow, row, plane, block;
};

// y[b*L .. b*L + L)[oy][x0 .. x0 + L) for the channels below O: for each input channel and
// window row, the 3 weight vectors, then each input value of the row under the tile broadcast
// once and added to the pixels it reaches (pixel p takes q = p + kj).
template <class Vec, int L>
GOMETAL_SIMD_INLINE void tile(const ImageArgs& a, int64_t b, int64_t oy, int64_t x0) {
  Vec acc[L] = {};
  const float* wp = a.packed + b * a.block;
  const float* src = a.padded + oy * a.row + x0;
  for (int64_t c = 0; c < a.c; ++c, src += a.plane) {
    const float* in = src;
    // Rolled over the window's rows, the row's values addressed from one opaque pointer:
    // unrolled, GCC keeps an offset per (row, value) and reloads them from the stack.
#pragma GCC unroll 1
    for (int ki = 0; ki < 3; ++ki, in += a.row, wp += 3 * L) {
      keep_opaque(in);
      const Vec w0 = load<Vec>(wp), w1 = load<Vec>(wp + L), w2 = load<Vec>(wp + 2 * L);
#pragma GCC unroll 32
      for (int q = 0; q < L + 2; ++q) {
        const Vec s = broadcast<Vec, L>(in + q);
        if (q < L) acc[q] += w0 * s;
        if (q >= 1 && q <= L) acc[q - 1] += w1 * s;
        if (q >= 2) acc[q - 2] += w2 * s;
      }
    }
  }
  lanes::transpose<Vec, L>(acc);
  const ConvEpilogue& e = *a.epilogue;
  const int64_t channels = std::min<int64_t>(L, a.o - b * L);
  for (int64_t l = 0; l < channels; ++l) {
    const int64_t o = b * L + l;
    const Vec v = conv_epilogue_channel(acc[l], e, o);
    __builtin_memcpy(a.y + (o * a.oh + oy) * a.ow + x0, &v, sizeof v);
  }
}

// Every row's tiles of every block: L-pixel tiles from the left, the last one moved left to
// end at the row's end (its overlap recomputed, giving the same bits).
template <class Vec, int L>
GOMETAL_SIMD_INLINE void run_image(const ImageArgs& a) {
  const int64_t blocks = (a.o + L - 1) / L;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t oy = 0; oy < a.oh; ++oy)
      for (int64_t x0 = 0; x0 < a.ow; x0 += L) tile<Vec, L>(a, b, oy, std::min<int64_t>(x0, a.ow - L));
}

// AVX2 and portable: 8 channels x 8 pixels (8 sums, 3 weights and a broadcast of 16
// registers); AVX-512: 16 x 16 (16 sums, 3 weights and a broadcast of 32).
void image_portable(const ImageArgs& a) { run_image<Vec8f, 8>(a); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void image_avx2(const ImageArgs& a) { run_image<Vec8f, 8>(a); }
__attribute__((target("avx512f,avx2,fma"))) void image_avx512(const ImageArgs& a) { run_image<Vec16f, 16>(a); }
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

bool conv2d_channel_forward_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.ph <= 1 && g.pw <= 1 && g.ow >= kMostLanes;
}

namespace {

// Whether GOMETAL_CONV_CHANNEL_FORWARD allows this kernel (unset or always) or not (never).
bool allowed_by_environment() {
  const char* forced = std::getenv("GOMETAL_CONV_CHANNEL_FORWARD");
  if (forced == nullptr || forced[0] == '\0') return true;
  const std::string_view value = forced;
  if (value == "always") return true;
  if (value == "never") return false;
  throw std::invalid_argument(std::string("[conv2d] GOMETAL_CONV_CHANNEL_FORWARD must be always or never, got '") +
                              forced + "'");
}

}  // namespace

bool conv2d_channel_forward_chosen(const ConvGeometry& g, const ConvEpilogue& epilogue) {
  return !epilogue.max_pool_2x2 && conv2d_channel_forward_supported(g) && allowed_by_environment();
}

int64_t conv2d_channel_forward_scratch(const ConvGeometry& g) {
  allowed_by_environment();  // an unknown value is refused here, on the compiling thread
  if (!conv2d_channel_forward_supported(g)) return 0;
  const int64_t winograd = conv2d_winograd_unpooled_chosen(g) ? conv2d_winograd_scratch(g) : 0;
  return std::max(round_up(g.c * padded_plane(g) + kSlack, 16), winograd);
}

void conv2d_channel_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0,
                                    int64_t n1, float* scratch, const ConvEpilogue& epilogue) {
  if (conv2d_winograd_unpooled_chosen(g))
    return conv2d_winograd_forward_samples(g, x, w, y, n0, n1, scratch, epilogue);
  const ConvPath path = choose_conv_path();
  const int64_t lanes = path == ConvPath::Avx512 ? 16 : 8;
  const PackedWeightKey key{"conv_channel_forward", g.o, g.c, lanes};
  float* padded = scratch;
  ImageArgs a{};
  a.padded = padded;
  a.packed = cached_packed_weights(key, w, g.o * g.c * kTaps, packed_floats(g), pack_weights);
  a.epilogue = &epilogue;
  a.c = g.c;
  a.o = g.o;
  a.oh = g.oh;
  a.ow = g.ow;
  a.row = padded_row(g);
  a.plane = padded_plane(g);
  a.block = g.c * kTaps * lanes;
  const int64_t padded_floats = g.c * padded_plane(g);
  for (int64_t n = n0; n < n1; ++n) {
    pad_planes(x + n * g.c * g.h * g.w, g.c, g.h, g.w, g.ph, g.pw, padded);
    std::fill(padded + padded_floats, padded + padded_floats + kSlack, 0.0f);
    a.y = y + n * g.o * g.out_plane();
    run_image(path, a);
  }
}

}  // namespace gometal
