#include "backends/cpu/conv_winograd_grad_f4.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "backends/cpu/conv_simd.h"
#include "backends/cpu/conv_winograd_grad.h"
#include "backends/cpu/lane_transpose.h"
#include "runtime/finite.h"

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

constexpr int kPoints = 36;  // a 6x6 transformed tile
// Tiles whose transforms are kept at once, across the chunk's images (a 16x16 plane has 16):
// each point's products read 64 tiles' values while the sums stay in registers.
constexpr int64_t kBandTiles = 64;
constexpr int64_t kChannels = 8;  // input channels of a register tile
// A power of two between points (4 or 8 KB) put a tile's 36 points in one L1 set.
constexpr int64_t kPointSkew = 16;
// Inputs of 2^100 and more take F(2x2) as in the forward F(4x4) pass: the transforms add up to
// 100 (input) and 225 (dy) multiples of a value.
constexpr uint32_t kModerateBits = (127u + 100u) << 23;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Layout {
  int64_t tiles_h, tiles_w;  // tiles of 4x4 outputs
  int64_t cw, ow;            // input and output channels rounded up to 16 (any path's vectors)
  int64_t v_point, u_point;  // floats from one point to the next in the band's transforms
};

Layout layout_of(const ConvGeometry& g) {
  Layout l{};
  l.tiles_h = (g.oh + 3) / 4;
  l.tiles_w = (g.ow + 3) / 4;
  l.cw = round_up(g.c, 16);
  l.ow = round_up(g.o, 16);
  l.v_point = kBandTiles * l.cw + kPointSkew;
  l.u_point = kBandTiles * l.ow + kPointSkew;
  return l;
}

// The input as rows of cw channels, one per pixel of the padded (4 tiles_h + 2) x (4 tiles_w + 2)
// grid, and dy as rows of ow channels over (4 tiles_h) x (4 tiles_w): zero past the planes.
int64_t x_rows_floats(const Layout& l) { return (4 * l.tiles_h + 2) * (4 * l.tiles_w + 2) * l.cw; }
int64_t dy_rows_floats(const Layout& l) { return 16 * l.tiles_h * l.tiles_w * l.ow; }
int64_t sums_floats(const Layout& l) { return kPoints * l.cw * l.ow; }
int64_t chunk_images(const ConvGeometry& g) { return conv2d_winograd_grad_chunk_images(g); }
int64_t chunk_count(const ConvGeometry& g) { return conv2d_winograd_grad_chunk_count(g); }

// Planes (K, H, W) as rows of `width` floats, pixel (y, x) at grid pixel (y + oy, x + ox).
void to_pixel_rows(const float* src, int64_t k_count, int64_t h, int64_t w, int64_t grid_w, int64_t oy, int64_t ox,
                   int64_t width, float* rows) {
  const int64_t plane = h * w, whole_k = k_count / 8 * 8, whole_x = w / 8 * 8;
  for (int64_t k = 0; k < whole_k; k += 8)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < whole_x; x += 8)
        lanes::transpose_8x8(src + k * plane + y * w + x, plane, rows + ((y + oy) * grid_w + x + ox) * width + k,
                             width);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = x < whole_x ? whole_k : 0; k < k_count; ++k)
        rows[((y + oy) * grid_w + x + ox) * width + k] = src[k * plane + y * w + x];
}

// B^T d over six values, B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
// 0 2 -1 -2 1 0; 0 4 0 -5 0 1].
template <class Vec>
GOMETAL_SIMD_INLINE void input_six(const Vec (&d)[6], Vec (&r)[6]) {
  const Vec a = d[4] - d[2] * 4.0f, b = d[3] - d[1] * 4.0f;  // rows 1 and 2: a + b, a - b
  const Vec c = d[4] - d[2], e = (d[3] - d[1]) * 2.0f;       // rows 3 and 4: c + e, c - e
  r[0] = d[0] * 4.0f - d[2] * 5.0f + d[4];
  r[1] = a + b;
  r[2] = a - b;
  r[3] = c + e;
  r[4] = c - e;
  r[5] = d[1] * 4.0f - d[3] * 5.0f + d[5];
}

// A e over four values, A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
template <class Vec>
GOMETAL_SIMD_INLINE void dy_six(const Vec (&e)[4], Vec (&r)[6]) {
  const Vec p = e[0] + e[2], q = e[1] + e[3];
  const Vec p2 = e[0] + e[2] * 4.0f, q2 = e[1] * 2.0f + e[3] * 8.0f;
  r[0] = e[0];
  r[1] = p + q;
  r[2] = p - q;
  r[3] = p2 + q2;
  r[4] = p2 - q2;
  r[5] = e[3];
}

// v[point][slot][c] = (B^T d B)[point] of the tile whose top left pixel row is at `x`.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void transform_input_tile(const float* x, int64_t grid_w, const Layout& l, float* v) {
  for (int64_t c0 = 0; c0 < l.cw; c0 += L) {
    Vec t[6][6];
    for (int j = 0; j < 6; ++j) {
      Vec d[6], r[6];
      for (int i = 0; i < 6; ++i) d[i] = load<Vec>(x + (i * grid_w + j) * l.cw + c0);
      input_six(d, r);
      for (int a = 0; a < 6; ++a) t[a][j] = r[a];
    }
    for (int a = 0; a < 6; ++a) {
      Vec r[6];
      input_six(t[a], r);
      for (int b = 0; b < 6; ++b) __builtin_memcpy(v + (a * 6 + b) * l.v_point + c0, &r[b], sizeof(Vec));
    }
  }
}

// u[point][slot][o] = (A e A^T)[point] of the 4x4 dy tile whose top left pixel row is at `dy`.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void transform_dy_tile(const float* dy, int64_t grid_w, const Layout& l, float* u) {
  for (int64_t o0 = 0; o0 < l.ow; o0 += L) {
    Vec t[6][4];
    for (int j = 0; j < 4; ++j) {
      Vec e[4], r[6];
      for (int i = 0; i < 4; ++i) e[i] = load<Vec>(dy + (i * grid_w + j) * l.ow + o0);
      dy_six(e, r);
      for (int a = 0; a < 6; ++a) t[a][j] = r[a];
    }
    for (int a = 0; a < 6; ++a) {
      Vec r[6];
      dy_six(t[a], r);
      for (int b = 0; b < 6; ++b) __builtin_memcpy(u + (a * 6 + b) * l.u_point + o0, &r[b], sizeof(Vec));
    }
  }
}

// sums[p][c][o] += sum over the band's `tiles` of v[p][t][c] * u[p][t][o]: a register tile of
// KC channels by V vectors of o, summed from zero and added at the end.
template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE void product_tile(const Layout& l, const float* v, const float* u, int64_t tiles, float* sums,
                                      int64_t o0, int64_t c0) {
  Vec acc[KC][V] = {};
  for (int64_t t = 0; t < tiles; ++t) {
    Vec b[V];
    for (int j = 0; j < V; ++j) b[j] = load<Vec>(u + t * l.ow + o0 + j * L);
#pragma GCC unroll 16
    for (int k = 0; k < KC; ++k) {
      const Vec s = broadcast<Vec, L>(v + t * l.cw + c0 + k);
      for (int j = 0; j < V; ++j) acc[k][j] += s * b[j];
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < KC; ++k)
    for (int j = 0; j < V; ++j) {
      float* dst = sums + (c0 + k) * l.ow + o0 + j * L;
      const Vec sum = load<Vec>(dst) + acc[k][j];
      __builtin_memcpy(dst, &sum, sizeof(Vec));
    }
}

template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE void band_products(const ConvGeometry& g, const Layout& l, const float* v, const float* u,
                                       int64_t tiles, float* sums) {
  const int64_t vectors = l.ow / L, channels = round_up(g.c, KC);
  for (int p = 0; p < kPoints; ++p) {
    const float* vp = v + p * l.v_point;
    const float* up = u + p * l.u_point;
    float* sp = sums + p * l.cw * l.ow;
    for (int64_t ob = 0; ob < vectors; ob += V)
      for (int64_t c0 = 0; c0 < channels; c0 += KC) {
        if constexpr (V > 1)
          if (vectors - ob < V) {
            product_tile<Vec, L, 1, KC>(l, vp, up, tiles, sp, ob * L, c0);
            continue;
          }
        product_tile<Vec, L, V, KC>(l, vp, up, tiles, sp, ob * L, c0);
      }
  }
}

struct ChunkArgs {
  const ConvGeometry* g;
  const float* x;
  const float* dy;
  int64_t chunk;
  float* scratch;  // x rows, dy rows, the band's v and u
  float* sums;     // the chunk's (points, cw, ow)
};

// False, leaving the sums unfinished, where an image holds a value of 2^100 or more (or Inf, NaN).
template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE bool chunk_sums(const ChunkArgs& r) {
  const ConvGeometry& g = *r.g;
  const Layout l = layout_of(g);
  const int64_t xg_w = 4 * l.tiles_w + 2, dg_w = 4 * l.tiles_w;
  float* xg = r.scratch;
  float* dg = xg + round_up(x_rows_floats(l), 16);
  float* v = dg + round_up(dy_rows_floats(l), 16);
  float* u = v + round_up(kPoints * l.v_point, 16);
  std::fill_n(r.sums, sums_floats(l), 0.0f);
  std::fill_n(xg, x_rows_floats(l), 0.0f);  // padding pixels and channels stay zero
  std::fill_n(dg, dy_rows_floats(l), 0.0f);
  int64_t slot = 0;
  const int64_t n_begin = r.chunk * chunk_images(g), n_end = std::min(g.n, n_begin + chunk_images(g));
  for (int64_t n = n_begin; n < n_end; ++n) {
    const float* x = r.x + n * g.c * g.h * g.w;
    const float* dy = r.dy + n * g.o * g.out_plane();
    if (!magnitudes_below<uint32_t>(x, g.c * g.h * g.w, kModerateBits) ||
        !magnitudes_below<uint32_t>(dy, g.o * g.out_plane(), kModerateBits))
      return false;
    to_pixel_rows(x, g.c, g.h, g.w, xg_w, g.ph, g.pw, l.cw, xg);
    to_pixel_rows(dy, g.o, g.oh, g.ow, dg_w, 0, 0, l.ow, dg);
    for (int64_t ty = 0; ty < l.tiles_h; ++ty)
      for (int64_t tx = 0; tx < l.tiles_w; ++tx) {
        transform_input_tile<Vec, L>(xg + (4 * ty * xg_w + 4 * tx) * l.cw, xg_w, l, v + slot * l.cw);
        transform_dy_tile<Vec, L>(dg + (4 * ty * dg_w + 4 * tx) * l.ow, dg_w, l, u + slot * l.ow);
        if (++slot == kBandTiles) {
          band_products<Vec, L, V, KC>(g, l, v, u, slot, r.sums);
          slot = 0;
        }
      }
  }
  if (slot > 0) band_products<Vec, L, V, KC>(g, l, v, u, slot, r.sums);
  return true;
}

bool chunk_portable(const ChunkArgs& r) { return chunk_sums<Vec8f, 8, 1, kChannels>(r); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) bool chunk_avx2(const ChunkArgs& r) {
  return chunk_sums<Vec8f, 8, 1, kChannels>(r);
}
// AVX-512: 2 vectors x 8 channels (16 sums, the dy vectors and a broadcast of 32 registers).
__attribute__((target("avx512f,avx2,fma"))) bool chunk_avx512(const ChunkArgs& r) {
  return chunk_sums<Vec16f, 16, 2, kChannels>(r);
}
#endif

// dw[o][c] = G^T M G in double, G^T = [1/4 -1/6 -1/6 1/24 1/24 0; 0 -1/6 1/6 1/12 -1/12 0;
// 0 -1/6 -1/6 1/6 1/6 1]: the fractions are not exact in float32.
void output_transform(const ConvGeometry& g, const Layout& l, const float* sums, int64_t c, float* dw) {
  constexpr double kG[3][6] = {{1.0 / 4, -1.0 / 6, -1.0 / 6, 1.0 / 24, 1.0 / 24, 0.0},
                               {0.0, -1.0 / 6, 1.0 / 6, 1.0 / 12, -1.0 / 12, 0.0},
                               {0.0, -1.0 / 6, -1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0}};
  for (int64_t o = 0; o < g.o; ++o) {
    double m[6][6], t[3][6];
    for (int p = 0; p < kPoints; ++p) m[p / 6][p % 6] = sums[(p * l.cw + c) * l.ow + o];
    for (int i = 0; i < 3; ++i)
      for (int b = 0; b < 6; ++b) {
        double s = 0.0;
        for (int a = 0; a < 6; ++a) s += kG[i][a] * m[a][b];
        t[i][b] = s;
      }
    float* out = dw + (o * g.c + c) * 9;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        double s = 0.0;
        for (int b = 0; b < 6; ++b) s += t[i][b] * kG[j][b];
        out[i * 3 + j] = static_cast<float>(s);
      }
  }
}

bool geometry_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.oh >= 1 && g.ow >= 1;
}

// Unforced: 16+ channels each way, output planes of 8+ both ways whose 6x6 tiles take at most
// 0.6 of the products of F(3x3, 2x2)'s (tiles past the plane are products of zeros). 1 thread,
// batch 32, bench_conv.py --ab GOMETAL_CONV_WINOGRAD_GRAD_F4=never, F(3x3, 4x4)'s speed-up:
// 64<-64 at 4x4 (0.56 of the products) 1.00x (0.93..1.06), 6x6 (1.0) 0.82x (0.78..0.89), 8x8
// (0.56) 1.10x (0.99..1.20); 64<-32 at 16x16 1.40x, 32<-16 at 32x32 1.40x, 16<-16 at 64x64 1.24x.
bool chosen_by_shape(const ConvGeometry& g) {
  const int64_t f4 = 36 * ((g.oh + 3) / 4) * ((g.ow + 3) / 4), f2 = 16 * ((g.oh + 1) / 2) * ((g.ow + 1) / 2);
  return g.c >= 16 && g.o >= 16 && g.oh >= 8 && g.ow >= 8 && 5 * f4 <= 3 * f2;
}

}  // namespace

bool conv2d_winograd_weight_grad_f4_chosen(const ConvGeometry& g) {
  const char* forced = std::getenv("GOMETAL_CONV_WINOGRAD_GRAD_F4");
  if (forced == nullptr || forced[0] == '\0') return geometry_supported(g) && chosen_by_shape(g);
  const std::string_view value = forced;
  if (value == "always") return geometry_supported(g);
  if (value == "never") return false;
  throw std::invalid_argument(
      std::string("[conv2d_weight_grad] GOMETAL_CONV_WINOGRAD_GRAD_F4 must be always or never, got '") + forced +
      "'");
}

int64_t conv2d_winograd_weight_grad_f4_scratch(const ConvGeometry& g) {
  if (!geometry_supported(g)) return 0;
  const Layout l = layout_of(g);
  return round_up(x_rows_floats(l), 16) + round_up(dy_rows_floats(l), 16) + round_up(kPoints * l.v_point, 16) +
         kPoints * l.u_point;
}

int64_t conv2d_winograd_weight_grad_f4_shared(const ConvGeometry& g) {
  if (!geometry_supported(g)) return 0;
  return chunk_count(g) * sums_floats(layout_of(g));
}

WinogradGradF4Result conv2d_winograd_weight_grad_f4(const ExecContext& ctx, const ConvGeometry& g, const float* x,
                                                    const float* dy, float* dw) {
  const ConvPath path = choose_conv_path();
  const Layout l = layout_of(g);
  std::atomic<bool> moderate{true};
  ctx.pool->parallel_for(static_cast<int>(chunk_count(g)), [&](int chunk, int thread) {
    const ChunkArgs args{&g, x, dy, chunk, ctx.thread_scratch(thread), ctx.shared + chunk * sums_floats(l)};
    bool ok;
    switch (path) {
#ifdef GOMETAL_SIMD_X86
      case ConvPath::Avx512: ok = chunk_avx512(args); break;
      case ConvPath::Avx2: ok = chunk_avx2(args); break;
#endif
      default: ok = chunk_portable(args);
    }
    if (!ok) moderate.store(false, std::memory_order_relaxed);
  });
  if (!moderate.load()) return WinogradGradF4Result::kLargeInput;
  conv2d_winograd_grad_add_chunks(ctx, sums_floats(l), chunk_count(g));
  const int tasks = balanced_tasks(*ctx.pool, g.c);
  ctx.pool->parallel_for(tasks, [&](int task, int) {
    int64_t c_begin, c_end;
    split_range(g.c, tasks, task, 1, &c_begin, &c_end);
    for (int64_t c = c_begin; c < c_end; ++c) output_transform(g, l, ctx.shared, c, dw);
  });
  return all_finite(dw, g.o * g.c * 9, DType::F32) ? WinogradGradF4Result::kFinite : WinogradGradF4Result::kNotFinite;
}

}  // namespace gometal
