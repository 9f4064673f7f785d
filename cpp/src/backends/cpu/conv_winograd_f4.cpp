#include "backends/cpu/conv_winograd_f4.h"

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "backends/cpu/lane_transpose.h"
#include "backends/cpu/packed_weight_cache.h"
#include "backends/cpu/simd_paths.h"

namespace gometal {
namespace {

using simd::load;

constexpr int64_t kPoints = 36;  // a transformed 6x6 tile
constexpr int64_t kMostBlockTiles = 32;
constexpr int kWideRows = 8, kWideVectors = 2;      // AVX-512 over blocks of 32 or 64 tiles
constexpr int kWideSingleRows = 16;                 // AVX-512 over blocks of 16 or 48 tiles: one vector
constexpr int kNarrowRows = 6, kNarrowVectors = 2;  // AVX2 and portable: 12 of 16 registers
// Output channels whose sums are kept at once: one register tile's rows (the sums of 16 rows
// over 64 tiles took a plan's per-thread scratch past the sample-tiled budget).
template <int R>
constexpr int64_t group_rows() {
  return R;
}
// Sums a point keeps: rows x tiles of a block, 8 x 32 or 16 x 16 on AVX-512, 6 x 32 else.
constexpr int64_t kMostPointSums = 256;
constexpr uint32_t kModerateBits = (127u + 100u) << 23;  // 2^100

// The largest |value| of n floats, as its bit pattern (Inf and NaN above every finite value).
uint32_t largest_magnitude_bits(const float* x, int64_t n) {
  uint32_t most = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    most = std::max(most, bits & 0x7fffffffu);
  }
  return most;
}

// Whether the tiles keep finite every sum of `terms` products of an input below x_bits' power
// of two and a weight below w_bits': the input transform grows values up to 100 times and the
// output transform sums up to 361 times (both together below 2^16), where a direct sum stays
// finite up to 2^128. Each operand below 2^100 alone is not enough: 2^97 by 2^22 overflows.
bool products_fit(uint32_t x_bits, uint32_t w_bits, int64_t terms) {
  if (x_bits >= kModerateBits || w_bits >= kModerateBits) return false;
  const int below_x = static_cast<int>(x_bits >> 23) - 126, below_w = static_cast<int>(w_bits >> 23) - 126;
  int terms_bits = 0;
  while ((int64_t{1} << terms_bits) < terms) ++terms_bits;
  return below_x + below_w + terms_bits + 16 < 128;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

int64_t tile_rows(const ConvGeometry& g) { return g.oh / 4; }
int64_t tile_cols(const ConvGeometry& g) { return g.ow / 4; }
int64_t tile_count(const ConvGeometry& g) { return tile_rows(g) * tile_cols(g); }
// Output channels of the transformed weights, zero past O: every register tile (6, 8 or 16
// rows) reads whole rows.
int64_t padded_outputs(int64_t o) { return std::max(round_up(o, 16), round_up(o, 6)); }
int64_t padded_outputs(const ConvGeometry& g) { return padded_outputs(g.o); }

// The padded input split into 4 x 6 parts per channel: part (rho, j) holds, for each tile row
// ty and tile column tx, the value at padded row 4 ty + rho, column 4 tx + j, at (ty * tile_cols
// + tx) = the tile's index. A tile's input row i (i < 6) lies in row i % 4 of tile row ty + i / 4,
// so value (i, j) of tile t is part (i % 4, j)[(i / 4) tile_cols + t]: a vector of consecutive
// tiles is one load wherever the tiles lie in the plane.
int64_t part_floats(const ConvGeometry& g) { return (tile_rows(g) + 1) * tile_cols(g); }
constexpr int64_t kSplitSlack = 32;  // a last vector of tiles reads up to a chunk past the parts
int64_t split_floats(const ConvGeometry& g) { return round_up(g.c * 24 * part_floats(g) + kSplitSlack, 16); }
// One padded row: 4 tile_cols + 2 columns, and a vector's reach past the last 8 tiles' start.
int64_t padded_row_floats(const ConvGeometry& g) { return round_up(4 * tile_cols(g) + 2 + 32, 16); }
int64_t split_rows(const ConvGeometry& g) { return 4 * tile_rows(g) + 2; }
// Tiles a block holds: a multiple of 16, each path's chunk of tiles (AVX-512 takes 32 where
// the block holds a multiple of 32).
int64_t block_tiles(const ConvGeometry& g) { return std::min(kMostBlockTiles, round_up(tile_count(g), 16)); }
// Floats from one point to the next in the block and in the sums: a power of two (4 KB or 8 KB)
// put a tile's 36 points in one set of the L1 cache, so each stride is one line longer.
constexpr int64_t kPointSkew = 16;
int64_t block_point_floats(const ConvGeometry& g) { return g.c * block_tiles(g) + kPointSkew; }
int64_t sums_point_floats(int64_t rows, int64_t tiles) { return rows * tiles + kPointSkew; }
int64_t block_floats(const ConvGeometry& g) { return kPoints * block_point_floats(g); }
int64_t sums_floats(const ConvGeometry&) { return kPoints * sums_point_floats(1, kMostPointSums); }

// Eight windows' values, one a lane: the weight transform runs over 8 input channels at once
// and stores each point's 8 values as one run of u's row.
typedef double Vec8d __attribute__((vector_size(64)));

// G w G^T with G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6;
// 0 0 1], in double and rounded once: the fractions are not exact in float32. Multiplications
// by the rounded fractions: a division per term made a training step's new weights cost a
// tenth of the pass.
void transform_windows(const Vec8d (&w)[9], Vec8d (&u)[kPoints]) {
  constexpr double kQuarter = 1.0 / 4, kSixth = 1.0 / 6, kTwelfth = 1.0 / 12, kTwentyFourth = 1.0 / 24;
  auto g6 = [&](Vec8d a, Vec8d b, Vec8d c, Vec8d(&out)[6]) {
    out[0] = a * kQuarter;
    out[1] = -(a + b + c) * kSixth;
    out[2] = -(a - b + c) * kSixth;
    out[3] = a * kTwentyFourth + b * kTwelfth + c * kSixth;
    out[4] = a * kTwentyFourth - b * kTwelfth + c * kSixth;
    out[5] = c;
  };
  Vec8d rows[6][3];
  for (int j = 0; j < 3; ++j) {
    Vec8d col[6];
    g6(w[j], w[3 + j], w[6 + j], col);
    for (int a = 0; a < 6; ++a) rows[a][j] = col[a];
  }
  for (int a = 0; a < 6; ++a) {
    Vec8d point[6];
    g6(rows[a][0], rows[a][1], rows[a][2], point);
    for (int b = 0; b < 6; ++b) u[a * 6 + b] = point[b];
  }
}

// u[point][o][c] (key: O rows, C columns), zero for the padding channels.
void transform_weights(const PackedWeightKey& key, const float* w, float* u, bool flipped) {
  const int64_t o_count = key.rows, c_count = key.columns, o_pad = padded_outputs(o_count);
  for (int64_t p = 0; p < kPoints; ++p)
    std::fill(u + (p * o_pad + o_count) * c_count, u + (p + 1) * o_pad * c_count, 0.0f);
  for (int64_t o = 0; o < o_count; ++o)
    for (int64_t c0 = 0; c0 < c_count; c0 += 8) {
      const int64_t lanes = std::min<int64_t>(8, c_count - c0);
      Vec8d windows[9] = {};
      for (int64_t l = 0; l < lanes; ++l) {
        // Flipped: w is the convolution's (key.columns, key.rows, 3, 3), each window reversed.
        const float* k = flipped ? w + ((c0 + l) * o_count + o) * 9 : w + (o * c_count + c0 + l) * 9;
        for (int t = 0; t < 9; ++t) windows[t][l] = k[flipped ? 8 - t : t];
      }
      Vec8d points[kPoints];
      transform_windows(windows, points);
      for (int64_t p = 0; p < kPoints; ++p) {
        float* dst = u + (p * o_pad + o) * c_count + c0;
        for (int64_t l = 0; l < lanes; ++l) dst[l] = static_cast<float>(points[p][l]);
      }
    }
}

void transform_plain(const PackedWeightKey& key, const float* w, float* u) {
  transform_weights(key, w, u, false);
}
void transform_flipped(const PackedWeightKey& key, const float* w, float* u) {
  transform_weights(key, w, u, true);
}

// Every padded row of every channel of image x into its parts, through `row` (one padded row
// of padded_row_floats): part j's value of tile column tx is row[4 tx + j], taken 8 tiles at a
// time by one two-vector shuffle. Returns the image's largest_magnitude_bits.
uint32_t split_image(const ConvGeometry& g, const float* x, float* split, float* row) {
  const int64_t tw = tile_cols(g), part = part_floats(g), used = std::min(g.w, 4 * tw + 2 - g.pw);
  uint32_t most = 0;
  std::fill_n(row, padded_row_floats(g), 0.0f);  // the padding columns stay zero
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t r = 0; r < split_rows(g); ++r) {
      float* parts = split + (c * 24 + (r % 4) * 6) * part + (r / 4) * tw;  // part j at parts + j * part
      const int64_t iy = r - g.ph;
      if (iy < 0 || iy >= g.h) {
        for (int j = 0; j < 6; ++j) std::fill_n(parts + j * part, tw, 0.0f);
        continue;
      }
      const float* image_row = x + (c * g.h + iy) * g.w;
      std::copy_n(image_row, used, row + g.pw);
      most = std::max(most, largest_magnitude_bits(image_row, g.w));
      for (int j = 0; j < 6; ++j) {
        const float* src = row + j;
        float* dst = parts + j * part;
        int64_t tx = 0;
        for (; tx + 8 <= tw; tx += 8) {
          const Vec16f lo = load<Vec16f>(src + 4 * tx), hi = load<Vec16f>(src + 4 * tx + 16);
          const Vec16f every_fourth = GOMETAL_LANE_SHUFFLE(lo, hi, lanes::Mask16, 0, 4, 8, 12, 16, 20, 24, 28,
                                                           0, 4, 8, 12, 16, 20, 24, 28);
          __builtin_memcpy(dst + tx, &every_fourth, 8 * sizeof(float));
        }
        for (; tx < tw; ++tx) dst[tx] = src[4 * tx];
      }
    }
  std::fill_n(split + g.c * 24 * part, kSplitSlack, 0.0f);
  return most;
}

// B^T d over six values, B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
// 0 2 -1 -2 1 0; 0 4 0 -5 0 1].
template <class T>
GOMETAL_SIMD_INLINE void input_6(T d0, T d1, T d2, T d3, T d4, T d5, T (&t)[6]) {
  const T a = d4 - 4.0f * d2, b = d3 - 4.0f * d1, c = d4 - d2, e = 2.0f * (d3 - d1);
  t[0] = 4.0f * d0 - 5.0f * d2 + d4;
  t[1] = a + b;
  t[2] = a - b;
  t[3] = c + e;
  t[4] = c - e;
  t[5] = 4.0f * d1 - 5.0f * d3 + d5;
}

// A^T m over six values, A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
template <class T>
GOMETAL_SIMD_INLINE void output_6(T m0, T m1, T m2, T m3, T m4, T m5, T (&o)[4]) {
  const T p = m1 + m2, q = m1 - m2, r = m3 + m4, s = m3 - m4;
  o[0] = m0 + p + r;
  o[1] = q + 2.0f * s;
  o[2] = p + 4.0f * r;
  o[3] = q + 8.0f * s + m5;
}

// B^T d B of the 6x6 tiles from tile t on, lanes of T: row i of the tiles' inputs from r[i], its
// value j `part` floats after value j - 1; each point stored at dst + point * point_stride.
template <class T>
GOMETAL_SIMD_INLINE void transform_input(const float* const (&r)[6], int64_t part, int64_t t, float* dst,
                                         int64_t point_stride) {
  T s[6][6];
  for (int j = 0; j < 6; ++j) {
    const int64_t at = j * part + t;
    T v[6];
    input_6(load<T>(r[0] + at), load<T>(r[1] + at), load<T>(r[2] + at), load<T>(r[3] + at),
            load<T>(r[4] + at), load<T>(r[5] + at), v);
    for (int a = 0; a < 6; ++a) s[a][j] = v[a];
  }
  for (int a = 0; a < 6; ++a) {
    T v[6];
    input_6(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], v);
    for (int b = 0; b < 6; ++b) __builtin_memcpy(dst + (a * 6 + b) * point_stride, &v[b], sizeof(T));
  }
}

// block[point][c][j] for tiles b0 + j, j < lanes: past b1 - b0 the lanes hold values of other
// tiles (moderate, as every input here), whose sums are never stored.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void transform_block(const ConvGeometry& g, const float* split, int64_t b0, int64_t lanes,
                                         float* block) {
  const int64_t tw = tile_cols(g), part = part_floats(g);
  const int64_t channel_stride = block_tiles(g), point_stride = block_point_floats(g);
  for (int64_t c = 0; c < g.c; ++c) {
    const float* parts = split + c * 24 * part;
    const float* r[6];
    for (int i = 0; i < 6; ++i) r[i] = parts + (i % 4) * 6 * part + (i / 4) * tw;
    float* out = block + c * channel_stride;
    for (int64_t t = 0; t < lanes; t += L) transform_input<Vec>(r, part, b0 + t, out + t, point_stride);
  }
}

struct BlockArgs {
  const float* u;  // transformed weights (point, padded O, C)
  float* block;    // transformed tiles (point, C, block_tiles)
  float* sums;     // one group of output channels' transformed sums (point, group rows, block_tiles)
  float* y;        // the image's outputs (O, OH, OW)
  int64_t o, o_pad, c, plane, tiles, block_tiles, block_point;
  int64_t first_tile, tile_cols, ow;
  ConvEpilogue epilogue;
};

// sums[point][o0 - group + r][lane0 + lane] = sum over c of u[point][o0 + r][c] *
// block[point][c][lane0 + lane], one register tile of R rows x NV vectors.
template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void transformed_sums(const BlockArgs& a, int64_t p, int64_t group, int64_t o0,
                                          int64_t lane0) {
  // simd::accumulate_tile's loop, with rows unrolled by 16: unrolled by 8, the 16-row tile
  // of a 16-tile plane kept its accumulators in memory.
  Vec acc[R][NV] = {};
  const float* u = a.u + (p * a.o_pad + o0) * a.c;
  const float* v = a.block + p * a.block_point + lane0;
  for (int64_t c = 0; c < a.c; ++c) {
    Vec b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) b[j] = load<Vec>(v + c * a.block_tiles + j * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Vec s = simd::broadcast<Vec, L>(u + r * a.c + c);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] += s * b[j];
    }
  }
  float* out =
      a.sums + p * sums_point_floats(group_rows<R>(), a.block_tiles) + (o0 - group) * a.block_tiles + lane0;
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) __builtin_memcpy(out + r * a.block_tiles + j * L, &acc[r][j], sizeof(Vec));
}

// Four vectors of tiles' outputs (column k of each tile's output row) interleaved into that
// row's outputs: out[q] holds tiles q L/4 .. (q + 1) L/4 - 1, four floats each.
template <class Vec>
GOMETAL_SIMD_INLINE void interleave_4(const Vec (&y)[4], Vec (&out)[4]) {
  const Vec lo01 = lanes::interleave_low(y[0], y[1]), hi01 = lanes::interleave_high(y[0], y[1]);
  const Vec lo23 = lanes::interleave_low(y[2], y[3]), hi23 = lanes::interleave_high(y[2], y[3]);
  if constexpr (sizeof(Vec) == 64) {
#define GOMETAL_PAIRS_LOW 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23
#define GOMETAL_PAIRS_HIGH 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31
    out[0] = GOMETAL_LANE_SHUFFLE(lo01, lo23, lanes::Mask16, GOMETAL_PAIRS_LOW);
    out[1] = GOMETAL_LANE_SHUFFLE(lo01, lo23, lanes::Mask16, GOMETAL_PAIRS_HIGH);
    out[2] = GOMETAL_LANE_SHUFFLE(hi01, hi23, lanes::Mask16, GOMETAL_PAIRS_LOW);
    out[3] = GOMETAL_LANE_SHUFFLE(hi01, hi23, lanes::Mask16, GOMETAL_PAIRS_HIGH);
#undef GOMETAL_PAIRS_LOW
#undef GOMETAL_PAIRS_HIGH
  } else {
    out[0] = GOMETAL_LANE_SHUFFLE(lo01, lo23, lanes::Mask8i, 0, 1, 8, 9, 2, 3, 10, 11);
    out[1] = GOMETAL_LANE_SHUFFLE(lo01, lo23, lanes::Mask8i, 4, 5, 12, 13, 6, 7, 14, 15);
    out[2] = GOMETAL_LANE_SHUFFLE(hi01, hi23, lanes::Mask8i, 0, 1, 8, 9, 2, 3, 10, 11);
    out[3] = GOMETAL_LANE_SHUFFLE(hi01, hi23, lanes::Mask8i, 4, 5, 12, 13, 6, 7, 14, 15);
  }
}

// A^T m A of output channel o's sums for the vector of tiles from `first`, the epilogue, and
// each tile's 4x4 outputs stored where they lie.
template <class Vec, int L, int64_t G>
GOMETAL_SIMD_INLINE void tile_outputs(const BlockArgs& a, int64_t group, int64_t o, int64_t first) {
  const int64_t count = std::min<int64_t>(L, a.tiles - first);
  const float* sums = a.sums + (o - group) * a.block_tiles + first;
  const int64_t point_stride = sums_point_floats(G, a.block_tiles);
  Vec t[4][6];
  for (int b = 0; b < 6; ++b) {
    Vec m[6];
    for (int k = 0; k < 6; ++k) m[k] = load<Vec>(sums + (k * 6 + b) * point_stride);
    Vec col[4];
    output_6(m[0], m[1], m[2], m[3], m[4], m[5], col);
    for (int i = 0; i < 4; ++i) t[i][b] = col[i];
  }
  float* plane = a.y + o * a.plane;
  // Each quarter of the vector (L / 4 tiles) lies in one row of tiles when rows hold whole
  // quarters: then its outputs are one whole vector of an output row.
  const bool whole = count == L && a.tile_cols % (L / 4) == 0;
  float* base[4];
  for (int q = 0; q < 4; ++q) {
    const int64_t tile = a.first_tile + first + q * (L / 4), ty = tile / a.tile_cols, tx = tile % a.tile_cols;
    base[q] = plane + 4 * ty * a.ow + 4 * tx;
  }
  for (int i = 0; i < 4; ++i) {
    Vec y[4];
    output_6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], y);
    for (int k = 0; k < 4; ++k) y[k] = conv_epilogue_channel(y[k], a.epilogue, o);
    Vec out[4];
    interleave_4(y, out);
    if (whole) {
      for (int q = 0; q < 4; ++q) __builtin_memcpy(base[q] + i * a.ow, &out[q], sizeof(Vec));
      continue;
    }
    float row[4 * L];
    for (int q = 0; q < 4; ++q) __builtin_memcpy(row + q * L, &out[q], sizeof(Vec));
    for (int64_t k = 0; k < count; ++k) {
      const int64_t tile = a.first_tile + first + k, ty = tile / a.tile_cols, tx = tile % a.tile_cols;
      __builtin_memcpy(plane + (4 * ty + i) * a.ow + 4 * tx, row + 4 * k, 4 * sizeof(float));
    }
  }
}

template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void forward_block(const ConvGeometry& g, const float* split, int64_t b0, int64_t b1,
                                       BlockArgs a) {
  constexpr int64_t chunk = NV * L;
  a.tiles = b1 - b0;
  a.first_tile = b0;
  transform_block<Vec, L>(g, split, b0, round_up(a.tiles, chunk), a.block);
  // A register tile's rows at a time: each point's products over the whole block, then the
  // rows' output transforms.
  constexpr int64_t G = group_rows<R>();
  for (int64_t group = 0; group < a.o; group += G) {
    const int64_t group_end = std::min(a.o, group + G);
    for (int64_t p = 0; p < kPoints; ++p)
      for (int64_t o0 = group; o0 < group_end; o0 += R)
        for (int64_t lane0 = 0; lane0 < a.tiles; lane0 += chunk)
          transformed_sums<Vec, L, R, NV>(a, p, group, o0, lane0);
    for (int64_t o = group; o < group_end; ++o)
      for (int64_t first = 0; first < a.tiles; first += L) tile_outputs<Vec, L, G>(a, group, o, first);
  }
}

void forward_block_portable(const ConvGeometry& g, const float* split, int64_t b0, int64_t b1,
                            const BlockArgs& a) {
  forward_block<Vec8f, 8, kNarrowRows, kNarrowVectors>(g, split, b0, b1, a);
}

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void forward_block_avx2(const ConvGeometry& g, const float* split,
                                                            int64_t b0, int64_t b1, const BlockArgs& a) {
  forward_block<Vec8f, 8, kNarrowRows, kNarrowVectors>(g, split, b0, b1, a);
}
__attribute__((target("avx512f,avx2,fma"))) void forward_block_avx512(const ConvGeometry& g,
                                                                      const float* split, int64_t b0,
                                                                      int64_t b1, const BlockArgs& a) {
  if (block_tiles(g) % 32 == 0)
    forward_block<Vec16f, 16, kWideRows, kWideVectors>(g, split, b0, b1, a);
  else
    forward_block<Vec16f, 16, kWideSingleRows, 1>(g, split, b0, b1, a);
}
#endif

void forward_block(ConvPath path, const ConvGeometry& g, const float* split, int64_t b0, int64_t b1,
                   const BlockArgs& a) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512:
      return forward_block_avx512(g, split, b0, b1, a);
    case ConvPath::Avx2:
      return forward_block_avx2(g, split, b0, b1, a);
#endif
    default:
      return forward_block_portable(g, split, b0, b1, a);
  }
}

// 1 thread, batch 32, bench_conv.py --ab GOMETAL_CONV_WINOGRAD_F4=never, CPU ms, F(2x2, 3x3) /
// these tiles: forward 16->32 at 32x32 2.31 / 1.81, 32->64 at 16x16 2.07 / 1.46, input
// gradients 16<-32 at 32x32 2.78 / 2.22, 32<-64 at 16x16 2.34 / 1.72. Three input channels
// (3->16 at 64x64, forced) stay on the channel lanes: 2.19 there against 2.51.
bool chosen_by_shape(const ConvGeometry& g) { return g.c >= 16 && g.o >= 16; }

}  // namespace

bool conv2d_winograd_f4_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.oh >= 4 && g.ow >= 4 && g.oh % 4 == 0 && g.ow % 4 == 0;
}

bool conv2d_winograd_f4_chosen(const ConvGeometry& g) {
  const char* forced = std::getenv("GOMETAL_CONV_WINOGRAD_F4");
  if (forced == nullptr || forced[0] == '\0') return conv2d_winograd_f4_supported(g) && chosen_by_shape(g);
  const std::string_view value = forced;
  if (value == "always") return conv2d_winograd_f4_supported(g);
  if (value == "never") return false;
  throw std::invalid_argument(
      std::string("[conv2d] GOMETAL_CONV_WINOGRAD_F4 must be always or never, got '") + forced + "'");
}

int64_t conv2d_winograd_f4_scratch(const ConvGeometry& g) {
  (void)conv2d_winograd_f4_chosen(g);  // a bad value raises while the plan is built
  if (!conv2d_winograd_f4_supported(g)) return 0;
  return split_floats(g) + block_floats(g) + sums_floats(g) + padded_row_floats(g);
}

void conv2d_winograd_f4_samples(const ConvGeometry& g, const float* x, const float* w, bool flipped, float* y,
                                int64_t n0, int64_t n1, float* scratch, const ConvEpilogue& epilogue,
                                const std::function<void(int64_t)>& fallback) {
  // Images whose values with the weights' could overflow the tiles (products_fit), and every
  // image when the weights hold 2^100 or more (Inf, NaN), take F(2x2, 3x3).
  const uint32_t w_bits = largest_magnitude_bits(w, g.o * g.c * 9);
  if (w_bits >= kModerateBits) {
    for (int64_t n = n0; n < n1; ++n) fallback(n);
    return;
  }
  // w (O, C, 3, 3), or flipped an input gradient's (C, O, 3, 3) seen from its forward geometry.
  const PackedWeightKey key{flipped ? "conv_winograd_f4x4_flipped" : "conv_winograd_f4x4", g.o, g.c, 1};
  auto weights = [&] {
    return cached_packed_weights(key, w, g.o * g.c * 9, kPoints * padded_outputs(g) * g.c,
                                 flipped ? transform_flipped : transform_plain);
  };
  const ConvPath path = choose_conv_path();
  const float* u = weights();
  BlockArgs a{};
  a.block = scratch + split_floats(g);
  a.sums = a.block + block_floats(g);
  a.o = g.o;
  a.o_pad = padded_outputs(g);
  a.c = g.c;
  a.plane = g.out_plane();
  a.block_tiles = block_tiles(g);
  a.block_point = block_point_floats(g);
  a.tile_cols = tile_cols(g);
  a.ow = g.ow;
  a.epilogue = epilogue;
  const int64_t tiles = tile_count(g);
  for (int64_t n = n0; n < n1; ++n) {
    const uint32_t x_bits = split_image(g, x + n * g.c * g.h * g.w, scratch, a.sums + sums_floats(g));
    if (!products_fit(x_bits, w_bits, g.c * 9)) {
      fallback(n);
      u = weights();  // the cache keeps a pointer valid only until this thread's next call
      continue;
    }
    a.u = u;
    a.y = y + n * g.o * g.out_plane();
    for (int64_t b0 = 0; b0 < tiles; b0 += a.block_tiles)
      forward_block(path, g, scratch, b0, std::min(tiles, b0 + a.block_tiles), a);
  }
}

}  // namespace gometal
