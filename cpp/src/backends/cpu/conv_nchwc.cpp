#include "backends/cpu/conv_nchwc.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "backends/cpu/layout.h"
#include "backends/cpu/packed_weight_cache.h"
#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

// The widest block (AVX-512): scratch is sized for it, so one size serves every path.
constexpr int64_t kMostLanes = 16;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

int64_t lanes_of(ConvPath path) { return path == ConvPath::Avx512 ? 16 : 8; }

bool is_pointwise(const ConvGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

int64_t channel_stride(const ConvGeometry& g) { return round_up(g.o, kMostLanes); }
int64_t epilogue_floats(const ConvGeometry& g) { return 3 * channel_stride(g); }
int64_t padded_width(const ConvGeometry& g) { return g.w + 2 * g.pw; }
int64_t padded_plane(const ConvGeometry& g) { return (g.h + 2 * g.ph) * padded_width(g); }
bool needs_padding(const ConvGeometry& g) { return g.ph != 0 || g.pw != 0; }
int64_t padded_floats(const ConvGeometry& g) { return needs_padding(g) ? round_up(g.c * padded_plane(g), 16) : 0; }
// The tap offsets (int64_t each) and the channels-last outputs of one image.
int64_t tap_table_floats(const ConvGeometry& g) { return round_up(2 * g.patch(), 16); }
int64_t channels_last_floats(const ConvGeometry& g) { return g.out_plane() * channel_stride(g); }

// The weights (O, C, KH, KW) as blocks of `lanes` output channels, block b holding
// packed[b][tap][l] = w[b * lanes + l][tap] (zeros past O): one vector per tap and block
// (key: O rows, C * KH * KW columns).
void pack_weights(const PackedWeightKey& key, const float* w, float* packed) {
  const int64_t o_count = key.rows, taps = key.columns, lanes = key.lanes;
  const int64_t blocks = (o_count + lanes - 1) / lanes;
  for (int64_t b = 0; b < blocks; ++b) {
    float* block = packed + b * taps * lanes;
    for (int64_t l = 0; l < lanes; ++l) {
      const int64_t o = b * lanes + l;
      if (o >= o_count) {
        for (int64_t t = 0; t < taps; ++t) block[t * lanes + l] = 0.0f;
        continue;
      }
      const float* src = w + o * taps;
      for (int64_t t = 0; t < taps; ++t) block[t * lanes + l] = src[t];
    }
  }
}

// Packed once per thread and reused while the weights' bytes stay the same: sample-tiled runs
// call once per image.
const float* packed_weights(const ConvGeometry& g, int64_t lanes, const float* w) {
  const PackedWeightKey key{"conv_nchwc", g.o, g.patch(), lanes};
  return cached_packed_weights(key, w, g.o * g.patch(), round_up(g.o, lanes) * g.patch(), pack_weights);
}

void pack_epilogue(const ConvGeometry& g, const ConvEpilogue& e, float* params) {
  const int64_t stride = channel_stride(g);
  std::fill(params, params + epilogue_floats(g), 0.0f);
  if (e.bias) std::copy(e.bias, e.bias + g.o, params);
  if (e.scale) std::copy(e.scale, e.scale + g.o, params + stride);
  if (e.shift) std::copy(e.shift, e.shift + g.o, params + 2 * stride);
}

// What one image's tiles read and write.
struct ImageArgs {
  const float* input;       // (C, rows, row_stride): padded, or x itself without padding
  const float* packed;      // blocks of (taps, L)
  const float* params;      // bias, scale, shift, channel_stride floats each
  const int64_t* tap_off;   // each tap's (c, ki, kj) offset in the input
  float* channels_last;     // (OH*OW, channel_stride): the finished outputs, pixel by pixel
  float* y;                 // (O, outputs)
  int64_t row_stride, sh, sw, taps, window, o, stride;  // window: taps per input channel
  int64_t oh, ow;
  bool bias, scale, shift, relu, pool;
};

// Input offsets of the pixels first.. of a tile of P before `end`; returns how many exist.
// Pixels past the end repeat the first one's offset (computed, never stored).
template <int P>
GOMETAL_SIMD_INLINE int tile_offsets(const ImageArgs& a, int64_t first, int64_t end, int64_t* in_off) {
  const int count = static_cast<int>(std::min<int64_t>(P, end - first));
  for (int i = 0; i < P; ++i) {
    const int64_t pixel = first + (i < count ? i : 0);
    in_off[i] = pixel / a.ow * a.sh * a.row_stride + pixel % a.ow * a.sw;
  }
  return count;
}

// The epilogue on one vector of channels from o0.
template <class Vec>
GOMETAL_SIMD_INLINE Vec finish(Vec v, const ImageArgs& a, int64_t o0) {
  if (a.bias) v += load<Vec>(a.params + o0);
  if (a.scale) v *= load<Vec>(a.params + a.stride + o0);
  if (a.shift) v += load<Vec>(a.params + 2 * a.stride + o0);
  if (a.relu) {
    const Vec zero = {};
    v = v < zero ? zero : v;  // NaN stays NaN, as the element-wise relu keeps it
  }
  return v;
}

// Which outputs and taps one pass covers: pixels [first, end) of the image and taps
// [t0, t1) (whole input channels); the sums of earlier taps wait in channels_last.
struct PassRange {
  int64_t first, end, t0, t1;
  bool first_taps, last_taps;
};

// Blocks b0..b0+RB-1 of the range's pixels, P pixels a tile: acc[rb][p] += the sum over the
// range's taps of the block's weights times the input under pixel p, stored channels-last
// (finished after the last taps). Taps keep their order, so chunking changes no bit.
template <class Vec, int L, int RB, int P>
GOMETAL_SIMD_INLINE void block_pass(const ImageArgs& a, int64_t b0, const PassRange& r) {
  const int64_t block = a.taps * L;
  for (int64_t first = r.first; first < r.end; first += P) {
    int64_t in_off[P];
    const int count = tile_offsets<P>(a, first, r.end, in_off);
    // Loops over P with `p < count` inside, fully unrolled, keep acc in registers.
    Vec acc[RB][P] = {};
    if (!r.first_taps) {
#pragma GCC unroll 4
      for (int rb = 0; rb < RB; ++rb)
#pragma GCC unroll 12
        for (int p = 0; p < P; ++p)
          acc[rb][p] = load<Vec>(a.channels_last + (first + (p < count ? p : 0)) * a.stride + (b0 + rb) * L);
    }
    // Each pixel's own pointer, so a broadcast addresses pointer + tap offset in one operand.
    const float* pixel_input[P];
    for (int p = 0; p < P; ++p) pixel_input[p] = a.input + in_off[p];
    const float* wp = a.packed + b0 * block + r.t0 * L;
    for (int64_t t = r.t0; t < r.t1; ++t, wp += L) {
      const int64_t tap = a.tap_off[t];
      Vec wv[RB];
#pragma GCC unroll 4
      for (int rb = 0; rb < RB; ++rb) wv[rb] = load<Vec>(wp + rb * block);
#pragma GCC unroll 12
      for (int p = 0; p < P; ++p) {
        const Vec s = broadcast<Vec, L>(pixel_input[p] + tap);
#pragma GCC unroll 4
        for (int rb = 0; rb < RB; ++rb) acc[rb][p] += wv[rb] * s;
      }
    }
#pragma GCC unroll 4
    for (int rb = 0; rb < RB; ++rb) {
      const int64_t o0 = (b0 + rb) * L;
#pragma GCC unroll 12
      for (int p = 0; p < P; ++p) {
        if (p >= count) break;
        const Vec v = r.last_taps ? finish(acc[rb][p], a, o0) : acc[rb][p];
        __builtin_memcpy(a.channels_last + (first + p) * a.stride + o0, &v, sizeof v);
      }
    }
  }
}

// Stores L channels from o0 of one output (NCHW position `at`), fewer past O.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void store_lanes(const ImageArgs& a, Vec v, int64_t o0, int64_t plane, int64_t at) {
  float lanes[L];
  __builtin_memcpy(lanes, &v, sizeof v);
  const int64_t n = std::min<int64_t>(L, a.o - o0);
  for (int64_t l = 0; l < n; ++l) a.y[(o0 + l) * plane + at] = lanes[l];
}

// The channels-last outputs to y (O, outputs), 2x2-pooled first with the pooling epilogue:
// each window's maximum in the order pool.cpp takes it, NaN propagating.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void store_nchw(const ImageArgs& a) {
  if (!a.pool) {
    const int64_t plane = a.oh * a.ow;
    for (int64_t pixel = 0; pixel < plane; ++pixel)
      for (int64_t o0 = 0; o0 < a.o; o0 += L)
        store_lanes<Vec, L>(a, load<Vec>(a.channels_last + pixel * a.stride + o0), o0, plane, pixel);
    return;
  }
  const int64_t pooled_h = a.oh / 2, pooled_w = a.ow / 2;
  for (int64_t pr = 0; pr < pooled_h; ++pr)
    for (int64_t pc = 0; pc < pooled_w; ++pc) {
      const float* corner = a.channels_last + (2 * pr * a.ow + 2 * pc) * a.stride;
      const int64_t window[3] = {a.stride, a.ow * a.stride, (a.ow + 1) * a.stride};
      for (int64_t o0 = 0; o0 < a.o; o0 += L) {
        Vec best = load<Vec>(corner + o0);
        for (int64_t offset : window) {
          const Vec v = load<Vec>(corner + offset + o0);
          best = (v > best) | (v != v) ? v : best;
        }
        store_lanes<Vec, L>(a, best, o0, pooled_h * pooled_w, pr * pooled_w + pc);
      }
    }
}

// Input channels a chunk of taps takes: its weights for one register tile's Wide blocks fit
// in kChunkWeightBytes, so a band of tiles reads them from L1 instead of the whole layer's
// weights from L2 every tile (1 thread, batch 256, kernel alone, 32->64 at 8x8: 5.7 -> 5.35 ms
// with 16 channels a chunk; 8 channels: 5.5, their partial sums' round trips showing).
constexpr int64_t kChunkWeightBytes = 36 * 1024;
// Pixels a band takes: its channels-last sums, read and written once per chunk, stay in L1.
constexpr int64_t kBandBytes = 16 * 1024;

int64_t chunk_channels(const ImageArgs& a, int64_t block_bytes) {
  return std::max<int64_t>(1, kChunkWeightBytes / (a.window * block_bytes));
}

int64_t band_pixels(const ImageArgs& a, int64_t tile) {
  return std::max<int64_t>(1, kBandBytes / (a.stride * static_cast<int64_t>(sizeof(float)) * tile)) * tile;
}

// The register tiles: RB blocks x P pixels of accumulators, the most blocks first; bands of
// pixels, each over chunks of input channels.
template <class Vec, int L, int Wide, int WideP, int Narrow, int NarrowP>
GOMETAL_SIMD_INLINE void forward_image(const ImageArgs& a) {
  const int64_t blocks = (a.o + L - 1) / L, pixels = a.oh * a.ow;
  const int64_t chunk = chunk_channels(a, std::min<int64_t>(Wide, blocks) * L * sizeof(float)) * a.window;
  const int64_t band = band_pixels(a, 12);
  for (int64_t first = 0; first < pixels; first += band)
    for (int64_t t0 = 0; t0 < a.taps; t0 += chunk) {
      const int64_t t1 = std::min(a.taps, t0 + chunk);
      const PassRange r{first, std::min(pixels, first + band), t0, t1, t0 == 0, t1 == a.taps};
      int64_t b0 = 0;
      for (; b0 + Wide <= blocks; b0 += Wide) block_pass<Vec, L, Wide, WideP>(a, b0, r);
      for (; b0 + Narrow <= blocks; b0 += Narrow) block_pass<Vec, L, Narrow, NarrowP>(a, b0, r);
      for (; b0 < blocks; ++b0) block_pass<Vec, L, 1, 12>(a, b0, r);
    }
  store_nchw<Vec, L>(a);
}

// AVX-512: 4 blocks x 6 pixels or 2 x 12 (24 of 32 zmm); AVX2 and portable: 2 x 6 (12 of 16).
void forward_image_portable(const ImageArgs& a) { forward_image<Vec8f, 8, 2, 6, 2, 6>(a); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void forward_image_avx2(const ImageArgs& a) {
  forward_image<Vec8f, 8, 2, 6, 2, 6>(a);
}
__attribute__((target("avx512f,avx2,fma"))) void forward_image_avx512(const ImageArgs& a) {
  forward_image<Vec16f, 16, 4, 6, 2, 12>(a);
}
#endif

void forward_image(ConvPath path, const ImageArgs& a) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512: return forward_image_avx512(a);
    case ConvPath::Avx2: return forward_image_avx2(a);
#endif
    default: return forward_image_portable(a);
  }
}

// Scratch of one thread: the packed epilogue and tap offsets (shared by the threads of a
// whole-batch run), then its own padded image and channels-last outputs.
struct Scratch {
  const float* packed;
  float *params, *padded, *channels_last;
  int64_t* tap_off;
};

Scratch split_scratch(const ConvGeometry& g, float* scratch) {
  Scratch s;
  s.packed = nullptr;
  s.params = scratch;
  float* taps = s.params + epilogue_floats(g);
  s.tap_off = reinterpret_cast<int64_t*>(taps);
  s.padded = taps + tap_table_floats(g);
  s.channels_last = s.padded + padded_floats(g);
  return s;
}

void prepare(ConvPath path, const ConvGeometry& g, const float* w, const ConvEpilogue& e, Scratch& s) {
  s.packed = packed_weights(g, lanes_of(path), w);
  pack_epilogue(g, e, s.params);
  const int64_t plane = needs_padding(g) ? padded_plane(g) : g.h * g.w, row_stride = padded_width(g);
  int64_t* off = s.tap_off;
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) *off++ = c * plane + ki * g.dh * row_stride + kj * g.dw;
}

ImageArgs image_args(const ConvGeometry& g, const ConvEpilogue& e, const Scratch& shared) {
  ImageArgs a{};
  a.packed = shared.packed;
  a.params = shared.params;
  a.tap_off = shared.tap_off;
  a.row_stride = padded_width(g);
  a.sh = g.sh;
  a.sw = g.sw;
  a.taps = g.patch();
  a.window = g.kh * g.kw;
  a.o = g.o;
  a.stride = channel_stride(g);
  a.oh = g.oh;
  a.ow = g.ow;
  a.pool = e.max_pool_2x2;
  a.bias = e.bias != nullptr;
  a.scale = e.scale != nullptr;
  a.shift = e.shift != nullptr;
  a.relu = e.relu;
  return a;
}

// Images [n0, n1) with the weights packed as `base` says, in this thread's scratch `own`.
void run_images(ConvPath path, const ConvGeometry& g, const ImageArgs& base, const float* x, float* y, int64_t n0,
                int64_t n1, const Scratch& own) {
  const int64_t in_image = g.c * g.h * g.w;
  const int64_t out_image = g.o * (base.pool ? (g.oh / 2) * (g.ow / 2) : g.out_plane());
  for (int64_t n = n0; n < n1; ++n) {
    ImageArgs a = base;
    if (needs_padding(g)) {
      pad_planes(x + n * in_image, g.c, g.h, g.w, g.ph, g.pw, own.padded);
      a.input = own.padded;
    } else {
      a.input = x + n * in_image;
    }
    a.channels_last = own.channels_last;
    a.y = y + n * out_image;
    forward_image(path, a);
  }
}

// Planes narrower than one 16-float vector leave the pixel-lane kernel's lanes idle: with
// 3x3 windows, ReLU and pooling fused (1 thread, batch 256, loaded machine, ms, pixel lanes
// -> channel lanes) 32->64 at 8x8 23.9 -> 13.4, and 5.09 with the taps in chunks
// (onnxruntime 4.51). Wider planes of 16 and more input channels gain 3-12 % per layer at
// batch 256 with the chunks, but workload C as a whole ran no faster, and there the
// whole-image split takes a batch of 1 to one thread and a training plan's convolutions
// from the faster channel-lane forward (conv_channel_forward.cpp): they stay off.
bool chosen_by_shape(const ConvGeometry& g) {
  if (!conv2d_nchwc_supported(g) || is_pointwise(g) || g.o < 16) return false;
  return g.ow < 16;
}

}  // namespace

bool conv2d_nchwc_supported(const ConvGeometry& g) { return g.groups == 1; }

bool conv2d_nchwc_chosen(const ConvGeometry& g) {
  const char* forced = std::getenv("GOMETAL_CONV_NCHWC");
  if (forced == nullptr || forced[0] == '\0') return chosen_by_shape(g);
  const std::string_view value = forced;
  if (value == "always") return conv2d_nchwc_supported(g);
  if (value == "never") return false;
  throw std::invalid_argument(std::string("[conv2d] GOMETAL_CONV_NCHWC must be always or never, got '") + forced +
                              "'");
}

int64_t conv2d_nchwc_scratch(const ConvGeometry& g) {
  if (!conv2d_nchwc_supported(g)) return 0;
  return epilogue_floats(g) + tap_table_floats(g) + padded_floats(g) + channels_last_floats(g);
}

void conv2d_nchwc_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0,
                                  int64_t n1, float* scratch, const ConvEpilogue& epilogue) {
  const ConvPath path = choose_conv_path();
  Scratch s = split_scratch(g, scratch);
  prepare(path, g, w, epilogue, s);
  run_images(path, g, image_args(g, epilogue, s), x, y, n0, n1, s);
}

void conv2d_nchwc_forward(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* w, float* y,
                          const ConvEpilogue& epilogue) {
  const ConvPath path = choose_conv_path();
  // The epilogue and tap offsets go to thread 0's scratch and the weights are packed (or found
  // packed) once: every thread reads them, and works in its own scratch.
  Scratch shared = split_scratch(g, ctx.thread_scratch(0));
  prepare(path, g, w, epilogue, shared);
  const ImageArgs base = image_args(g, epilogue, shared);
  const int tasks = balanced_tasks(*ctx.pool, g.n);
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    int64_t lo, hi;
    split_range(g.n, tasks, task, 1, &lo, &hi);
    run_images(path, g, base, x, y, lo, hi, split_scratch(g, ctx.thread_scratch(thread)));
  });
}

}  // namespace gometal
