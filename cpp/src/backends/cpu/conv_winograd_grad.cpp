#include "backends/cpu/conv_winograd_grad.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "backends/cpu/conv_simd.h"
#include "backends/cpu/conv_winograd_grad_f4.h"
#include "backends/cpu/lane_transpose.h"
#include "runtime/finite.h"

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

constexpr int kPoints = 16;  // a 4x4 transformed tile
// The images of one chunk: how many chunks a batch has is fixed by its size alone.
constexpr int64_t kChunks = 8;
// Input channels a register tile takes (the transformed input has a multiple of them, the
// rest zero), and the most tiles of a band, whose sums are added to the chunk's at its end:
// shorter chains of rounding (workload B's 16->32 layer, batch 2: largest error / sqrt(terms)
// 2.2e-6 with bands of 256 tiles, 1.2e-6 of 64, against torch in float64; 2-3 % slower).
constexpr int64_t kChannels = 8;
constexpr int64_t kBandTiles = 64;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Sizes of one image's buffers. The input is padded to 2 * tile rows + 2 rows and columns
// (zeros past the convolution's own padding) and split into its even and odd columns, so
// that 8 consecutive tiles of a row read each of their 4 columns as one vector; dy is
// transposed to rows of `width` output channels, one per pixel of 2 * tile rows and columns.
struct Layout {
  int64_t tiles_h, tiles_w;  // tiles of 2x2 outputs
  int64_t rows;              // padded input rows
  int64_t half;              // floats of one row's even (or odd) columns, with a vector of slack
  int64_t width;             // output channels rounded up to whole vectors of any path
  int64_t channels;          // input channels rounded up to whole register tiles
  int64_t band_rows, band;   // tile rows of a band, and its tiles
  int64_t stride;            // floats between channels of the transformed input (a band and slack)
};

Layout layout_of(const ConvGeometry& g) {
  Layout l{};
  l.tiles_h = (g.oh + 1) / 2;
  l.tiles_w = (g.ow + 1) / 2;
  l.rows = 2 * l.tiles_h + 2;
  l.half = round_up(l.tiles_w, 8) + 8;
  l.width = round_up(g.o, 16);
  l.channels = round_up(g.c, kChannels);
  l.band_rows = std::clamp<int64_t>(kBandTiles / l.tiles_w, 1, l.tiles_h);
  l.band = l.band_rows * l.tiles_w;
  l.stride = round_up(l.band, 8) + 8;
  return l;
}

int64_t padded_floats(const ConvGeometry& g, const Layout& l) { return g.c * l.rows * 2 * l.half; }
int64_t dy_rows_floats(const Layout& l) { return 4 * l.tiles_h * l.tiles_w * l.width; }
int64_t v_floats(const Layout& l) { return kPoints * l.channels * l.stride; }
int64_t sums_floats(const Layout& l) { return kPoints * l.channels * l.width; }

int64_t chunk_images(const ConvGeometry& g) { return conv2d_winograd_grad_chunk_images(g); }
int64_t chunk_count(const ConvGeometry& g) { return conv2d_winograd_grad_chunk_count(g); }

// One image's input (C, H, W) as padded rows of even columns then odd columns.
GOMETAL_SIMD_INLINE void split_image(const ConvGeometry& g, const Layout& l, const float* x, float* padded) {
  std::fill_n(padded, padded_floats(g, l), 0.0f);
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t y = 0; y < g.h; ++y) {
      const float* src = x + (c * g.h + y) * g.w;
      float* even = padded + ((c * l.rows + y + g.ph) * 2) * l.half;
      float* odd = even + l.half;
      // even[k] = src[2k - pw] and odd[k] = src[2k + 1 - pw] where those columns exist:
      // loops GCC turns into vector shuffles.
      for (int64_t k = (g.pw + 1) / 2; 2 * k - g.pw < g.w; ++k) even[k] = src[2 * k - g.pw];
      for (int64_t k = g.pw / 2; 2 * k + 1 - g.pw < g.w; ++k) odd[k] = src[2 * k + 1 - g.pw];
    }
}

// One image's dy (O, OH, OW) as rows of `width` floats, one per pixel of the tiles' grid
// (2 * tiles_h, 2 * tiles_w): zero past O and at the pixels past an odd output size.
GOMETAL_SIMD_INLINE void transpose_dy(const ConvGeometry& g, const Layout& l, const float* dy, float* rows) {
  const int64_t pixels = g.out_plane(), grid_w = 2 * l.tiles_w, whole_o = g.o / 8 * 8, whole_x = g.ow / 8 * 8;
  // 8 channels' planes at a time, each read in order.
  for (int64_t o = 0; o < whole_o; o += 8)
    for (int64_t y = 0; y < g.oh; ++y)
      for (int64_t x = 0; x < whole_x; x += 8)
        lanes::transpose_8x8(dy + o * pixels + y * g.ow + x, pixels, rows + (y * grid_w + x) * l.width + o,
                             l.width);
  for (int64_t y = 0; y < g.oh; ++y) {
    float* row = rows + y * grid_w * l.width;
    const float* src = dy + y * g.ow;
    for (int64_t x = 0; x < g.ow; ++x) {
      for (int64_t o = x < whole_x ? whole_o : 0; o < g.o; ++o) row[x * l.width + o] = src[o * pixels + x];
      std::fill(row + x * l.width + g.o, row + (x + 1) * l.width, 0.0f);
    }
    if (g.ow % 2 != 0) std::fill_n(row + g.ow * l.width, l.width, 0.0f);
  }
  if (g.oh % 2 != 0) std::fill_n(rows + g.oh * grid_w * l.width, grid_w * l.width, 0.0f);
}

// v[point][c][t] = (B^T x B)[point] of the band's tiles, 8 tiles of a row at a time (the
// lanes past the row's last tile are overwritten by the next row, or land in the slack).
GOMETAL_SIMD_INLINE void transform_input(const ConvGeometry& g, const Layout& l, const float* padded, int64_t ty0,
                                         int64_t ty1, float* v) {
  const int64_t plane = l.channels * l.stride;
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < l.tiles_w; tx += 8) {
        Vec8f h[4][4];
        for (int i = 0; i < 4; ++i) {
          const float* even = padded + ((c * l.rows + 2 * ty + i) * 2) * l.half + tx;
          const float* odd = even + l.half;
          const Vec8f d0 = load<Vec8f>(even), d1 = load<Vec8f>(odd);
          const Vec8f d2 = load<Vec8f>(even + 1), d3 = load<Vec8f>(odd + 1);
          h[i][0] = d0 - d2;
          h[i][1] = d1 + d2;
          h[i][2] = d2 - d1;
          h[i][3] = d1 - d3;
        }
        float* out = v + c * l.stride + (ty - ty0) * l.tiles_w + tx;
        for (int j = 0; j < 4; ++j) {
          const Vec8f r[4] = {h[0][j] - h[2][j], h[1][j] + h[2][j], h[2][j] - h[1][j], h[1][j] - h[3][j]};
          for (int i = 0; i < 4; ++i) __builtin_memcpy(out + (i * 4 + j) * plane, &r[i], sizeof(Vec8f));
        }
      }
}

// The transformed dy of one tile at point (I, J), (A d A^T)[I][J], read from its 2x2 pixels
// (d the top left one's vector of channels; `right` and `down` floats to the others) as
// it is needed instead of stored: A's rows (1, 0), (1, 1), (1, -1), (0, 1), the last one's
// sign left to the output transform.
template <class Vec, int I>
GOMETAL_SIMD_INLINE Vec column_pair(const float* d, int64_t down) {
  if constexpr (I == 0) return load<Vec>(d);
  else if constexpr (I == 1) return load<Vec>(d) + load<Vec>(d + down);
  else if constexpr (I == 2) return load<Vec>(d) - load<Vec>(d + down);
  else return load<Vec>(d + down);
}

template <class Vec, int I, int J>
GOMETAL_SIMD_INLINE Vec dy_point(const float* d, int64_t right, int64_t down) {
  if constexpr (J == 0) return column_pair<Vec, I>(d, down);
  else if constexpr (J == 1) return column_pair<Vec, I>(d, down) + column_pair<Vec, I>(d + right, down);
  else if constexpr (J == 2) return column_pair<Vec, I>(d, down) - column_pair<Vec, I>(d + right, down);
  else return column_pair<Vec, I>(d + right, down);
}

// Where one band's products read and add.
struct BandArgs {
  const float* dy;  // the band's first tile's top left pixel in the dy rows
  const float* v;   // the band's transformed input (points, channels, stride)
  float* sums;      // the chunk's (points, channels, width)
  int64_t band_rows, tiles_w, width, stride, channels, vectors;
};

// sums[p][c][o] += sum over the band's tiles t of v[p][c][t] * dy_point(t)[o], for V vectors
// of o and KC channels c at point p = (I, J). The band's sum starts from zero and is added
// at the end: two shorter chains of rounding.
template <class Vec, int L, int V, int KC, int I, int J>
GOMETAL_SIMD_INLINE void product_tile(const BandArgs& a, int64_t o0, int64_t c0) {
  constexpr int p = I * 4 + J;
  const int64_t right = a.width, down = 2 * a.tiles_w * a.width;
  const float* v = a.v + (p * a.channels + c0) * a.stride;
  Vec acc[KC][V] = {};
  int64_t t = 0;
  for (int64_t ty = 0; ty < a.band_rows; ++ty) {
    const float* d = a.dy + ty * 2 * down + o0;
    for (int64_t tx = 0; tx < a.tiles_w; ++tx, ++t, d += 2 * right) {
      Vec b[V];
      for (int j = 0; j < V; ++j) b[j] = dy_point<Vec, I, J>(d + j * L, right, down);
#pragma GCC unroll 16
      for (int k = 0; k < KC; ++k) {
        const Vec s = broadcast<Vec, L>(v + k * a.stride + t);
        for (int j = 0; j < V; ++j) acc[k][j] += s * b[j];
      }
    }
  }
  float* sums = a.sums + (p * a.channels + c0) * a.width + o0;
#pragma GCC unroll 16
  for (int k = 0; k < KC; ++k)
    for (int j = 0; j < V; ++j) {
      const Vec sum = load<Vec>(sums + k * a.width + j * L) + acc[k][j];
      __builtin_memcpy(sums + k * a.width + j * L, &sum, sizeof(Vec));
    }
}

// Every register tile of point (I, J): blocks of V vectors of o (the last one maybe fewer)
// by KC channels.
template <class Vec, int L, int V, int KC, int I, int J>
GOMETAL_SIMD_INLINE void point_products(const BandArgs& a) {
  for (int64_t ob = 0; ob < a.vectors; ob += V)
    for (int64_t c0 = 0; c0 < a.channels; c0 += KC) {
      if constexpr (V > 1)
        if (a.vectors - ob < V) {
          product_tile<Vec, L, 1, KC, I, J>(a, ob * L, c0);
          continue;
        }
      product_tile<Vec, L, V, KC, I, J>(a, ob * L, c0);
    }
}

template <class Vec, int L, int V, int KC, int P = 0>
GOMETAL_SIMD_INLINE void band_products(const BandArgs& a) {
  point_products<Vec, L, V, KC, P / 4, P % 4>(a);
  if constexpr (P + 1 < kPoints) band_products<Vec, L, V, KC, P + 1>(a);
}

struct ChunkArgs {
  const ConvGeometry* g;
  const float* x;   // the batch's input (N, C, H, W)
  const float* dy;  // the batch's dy (N, O, OH, OW)
  int64_t chunk;
  float* scratch;   // the split image, dy rows, then the band's transformed input
  float* sums;      // the chunk's (points, channels, width)
};

template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE void chunk_sums(const ChunkArgs& r) {
  static_assert(KC == kChannels);
  const ConvGeometry& g = *r.g;
  const Layout l = layout_of(g);
  float* padded = r.scratch;
  float* rows = padded + round_up(padded_floats(g, l), 16);
  float* v = rows + round_up(dy_rows_floats(l), 16);
  std::fill_n(r.sums, sums_floats(l), 0.0f);
  std::fill_n(v, v_floats(l), 0.0f);  // the channels past C stay zero
  BandArgs a{};
  a.v = v;
  a.sums = r.sums;
  a.tiles_w = l.tiles_w;
  a.width = l.width;
  a.stride = l.stride;
  a.channels = l.channels;
  a.vectors = l.width / L;
  const int64_t n_begin = r.chunk * chunk_images(g), n_end = std::min(g.n, n_begin + chunk_images(g));
  for (int64_t n = n_begin; n < n_end; ++n) {
    split_image(g, l, r.x + n * g.c * g.h * g.w, padded);
    transpose_dy(g, l, r.dy + n * g.o * g.out_plane(), rows);
    for (int64_t ty0 = 0; ty0 < l.tiles_h; ty0 += l.band_rows) {
      const int64_t ty1 = std::min(l.tiles_h, ty0 + l.band_rows);
      transform_input(g, l, padded, ty0, ty1, v);
      a.dy = rows + ty0 * 4 * l.tiles_w * l.width;
      a.band_rows = ty1 - ty0;
      band_products<Vec, L, V, KC>(a);
    }
  }
}

// AVX2 and portable: 1 vector x 8 channels (8 sums, the dy vectors and a broadcast of 16
// registers).
void chunk_portable(const ChunkArgs& r) { chunk_sums<Vec8f, 8, 1, 8>(r); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void chunk_avx2(const ChunkArgs& r) { chunk_sums<Vec8f, 8, 1, 8>(r); }
// AVX-512: 2 vectors x 8 channels (16 sums, the dy vectors and a broadcast of 32 registers).
__attribute__((target("avx512f,avx2,fma"))) void chunk_avx512(const ChunkArgs& r) {
  chunk_sums<Vec16f, 16, 2, 8>(r);
}
#endif

// dw[o][c] = G^T M G of the chunks' sums M (added in chunk order), with the sign A's last
// row left out: G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1].
void output_transform(const ConvGeometry& g, const Layout& l, const float* sums, int64_t c, float* m, float* dw) {
  for (int p = 0; p < kPoints; ++p) {
    const float sign = (p / 4 == 3) != (p % 4 == 3) ? -1.0f : 1.0f;
    for (int64_t o = 0; o < g.o; ++o) m[o * kPoints + p] = sign * sums[(p * l.channels + c) * l.width + o];
  }
  for (int64_t o = 0; o < g.o; ++o) {
    const float* s = m + o * kPoints;
    float t[3][4];
    for (int b = 0; b < 4; ++b) {
      t[0][b] = s[b] + 0.5f * (s[4 + b] + s[8 + b]);
      t[1][b] = 0.5f * (s[4 + b] - s[8 + b]);
      t[2][b] = 0.5f * (s[4 + b] + s[8 + b]) + s[12 + b];
    }
    float* out = dw + (o * g.c + c) * 9;
    for (int i = 0; i < 3; ++i) {
      out[i * 3 + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
      out[i * 3 + 1] = 0.5f * (t[i][1] - t[i][2]);
      out[i * 3 + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
    }
  }
}

bool geometry_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.oh >= 1 && g.ow >= 1;
}

}  // namespace

int64_t conv2d_winograd_grad_chunk_images(const ConvGeometry& g) { return (g.n + kChunks - 1) / kChunks; }

int64_t conv2d_winograd_grad_chunk_count(const ConvGeometry& g) {
  return (g.n + conv2d_winograd_grad_chunk_images(g) - 1) / conv2d_winograd_grad_chunk_images(g);
}

void conv2d_winograd_grad_add_chunks(const ExecContext& ctx, int64_t floats, int64_t chunks) {
  const int tasks = balanced_tasks(*ctx.pool, floats / 1024 + 1);
  ctx.pool->parallel_for(tasks, [&](int task, int) {
    int64_t begin, end;
    split_range(floats, tasks, task, 16, &begin, &end);
    for (int64_t k = 1; k < chunks; ++k) {
      const float* part = ctx.shared + k * floats;
      for (int64_t i = begin; i < end; ++i) ctx.shared[i] += part[i];
    }
  });
}

bool conv2d_winograd_weight_grad_chosen(const ConvGeometry& g) {
  if (!geometry_supported(g)) return false;
  const char* forced = std::getenv("GOMETAL_CONV_WINOGRAD_GRAD");
  if (forced == nullptr || forced[0] == '\0') return g.c >= 16 && g.o >= 16;
  const std::string_view value = forced;
  if (value == "always") return true;
  if (value == "never") return false;
  throw std::invalid_argument(
      std::string("[conv2d_weight_grad] GOMETAL_CONV_WINOGRAD_GRAD must be always or never, got '") + forced + "'");
}

int64_t conv2d_winograd_weight_grad_scratch(const ConvGeometry& g) {
  if (!geometry_supported(g)) return 0;
  (void)conv2d_winograd_weight_grad_f4_chosen(g);  // a bad value raises while the plan is built
  const Layout l = layout_of(g);
  const int64_t chunk = round_up(padded_floats(g, l), 16) + round_up(dy_rows_floats(l), 16) + v_floats(l);
  // the output transform's (O, points), and F(3x3, 4x4)'s, which a plan may switch to
  return std::max({chunk, kPoints * l.width, conv2d_winograd_weight_grad_f4_scratch(g)});
}

int64_t conv2d_winograd_weight_grad_shared(const ConvGeometry& g) {
  if (!geometry_supported(g)) return 0;
  return std::max(chunk_count(g) * sums_floats(layout_of(g)), conv2d_winograd_weight_grad_f4_shared(g));
}

bool conv2d_winograd_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy,
                                 float* dw) {
  if (conv2d_winograd_weight_grad_f4_chosen(g)) {
    const WinogradGradF4Result result = conv2d_winograd_weight_grad_f4(ctx, g, x, dy, dw);
    if (result != WinogradGradF4Result::kLargeInput) return result == WinogradGradF4Result::kFinite;
  }
  const ConvPath path = choose_conv_path();
  const Layout l = layout_of(g);
  ctx.pool->parallel_for(static_cast<int>(chunk_count(g)), [&](int chunk, int thread) {
    const ChunkArgs args{&g, x, dy, chunk, ctx.thread_scratch(thread), ctx.shared + chunk * sums_floats(l)};
    switch (path) {
#ifdef GOMETAL_SIMD_X86
      case ConvPath::Avx512: return chunk_avx512(args);
      case ConvPath::Avx2: return chunk_avx2(args);
#endif
      default: return chunk_portable(args);
    }
  });
  conv2d_winograd_grad_add_chunks(ctx, sums_floats(l), chunk_count(g));
  const int tasks = balanced_tasks(*ctx.pool, g.c);
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    int64_t c_begin, c_end;
    split_range(g.c, tasks, task, 1, &c_begin, &c_end);
    for (int64_t c = c_begin; c < c_end; ++c) output_transform(g, l, ctx.shared, c, ctx.thread_scratch(thread), dw);
  });
  return all_finite(dw, g.o * g.c * 9, DType::F32);
}

}  // namespace gometal
