#include "backends/cpu/conv_winograd.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include <vector>

#include "backends/cpu/conv_direct.h"
#include "backends/cpu/conv_winograd_f4.h"
#include "backends/cpu/lane_transpose.h"
#include "backends/cpu/packed_weight_cache.h"
#include "backends/cpu/simd_paths.h"
#include "runtime/finite.h"

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

constexpr int64_t kPoints = 16;       // a transformed 4x4 tile
constexpr int64_t kBlockTiles = 64;   // tiles transformed at once: a multiple of every chunk
constexpr int kWideRows = 8, kWideVectors = 2;      // AVX-512: 16 of the 32 zmm registers
constexpr int kNarrowRows = 6, kNarrowVectors = 2;  // AVX2 and portable: 12 of 16
constexpr int64_t kMostRows = 8, kMostChunk = 32;
// Output channels of the transformed weights, zero past O: every register tile reads whole rows.
constexpr int64_t kChannelPad = 24;  // a multiple of both paths' rows

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

int64_t tile_rows(const ConvGeometry& g) { return g.oh / 2; }
int64_t tile_cols(const ConvGeometry& g) { return g.ow / 2; }
int64_t tile_count(const ConvGeometry& g) { return tile_rows(g) * tile_cols(g); }
int64_t padded_outputs(const ConvGeometry& g) { return round_up(g.o, kChannelPad); }
int64_t chunk_of(ConvPath path) {
  return path == ConvPath::Avx512 ? kWideVectors * 16 : int64_t{kNarrowVectors} * 8;
}

// A padded input row split into its even and its odd columns, half_width floats each: tile
// column tx reads even[tx], odd[tx], even[tx + 1], odd[tx + 1], all as vectors across tiles.
int64_t half_width(const ConvGeometry& g) { return tile_cols(g) + 1; }
int64_t split_row_floats(const ConvGeometry& g) { return 2 * half_width(g); }
int64_t split_rows(const ConvGeometry& g) { return 2 * tile_rows(g) + 2; }  // padded rows read
int64_t split_floats(const ConvGeometry& g) { return round_up(g.c * split_rows(g) * split_row_floats(g), 16); }
int64_t block_floats(const ConvGeometry& g) { return kPoints * g.c * kBlockTiles; }
constexpr int64_t kSumsFloats = kPoints * kMostRows * kMostChunk;

bool geometry_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.oh >= 2 && g.ow >= 2;
}

// u[point][o][c] = (G w[o][c] G^T)[point], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
// (key: O rows, C columns), zero for the padding channels.
void transform_weights(const PackedWeightKey& key, const float* w, float* u) {
  const int64_t o_count = key.rows, c_count = key.columns, o_pad = round_up(o_count, kChannelPad);
  std::fill_n(u, kPoints * o_pad * c_count, 0.0f);
  for (int64_t o = 0; o < o_count; ++o)
    for (int64_t c = 0; c < c_count; ++c) {
      const float* k = w + (o * c_count + c) * 9;
      float rows[4][3];
      for (int j = 0; j < 3; ++j) {
        rows[0][j] = k[j];
        rows[1][j] = 0.5f * (k[j] + k[3 + j] + k[6 + j]);
        rows[2][j] = 0.5f * (k[j] - k[3 + j] + k[6 + j]);
        rows[3][j] = k[6 + j];
      }
      for (int a = 0; a < 4; ++a) {
        const float* r = rows[a];
        const float point[4] = {r[0], 0.5f * (r[0] + r[1] + r[2]), 0.5f * (r[0] - r[1] + r[2]), r[2]};
        for (int b = 0; b < 4; ++b) u[((a * 4 + b) * o_pad + o) * c_count + c] = point[b];
      }
    }
}

// flipped (C, O, 3, 3) = w (O, C, 3, 3) with its axes swapped and each window flipped: the
// forward weights of w's input gradient (key: C rows, O columns). Rows of 9 floats both ways.
void flip_weights(const PackedWeightKey& key, const float* w, float* flipped) {
  const int64_t c_count = key.rows, o_count = key.columns;
  for (int64_t c = 0; c < c_count; ++c)
    for (int64_t o = 0; o < o_count; ++o) {
      const float* src = w + (o * c_count + c) * 9;
      float* dst = flipped + (c * o_count + o) * 9;
      for (int t = 0; t < 9; ++t) dst[t] = src[8 - t];
    }
}

// The input gradient's transformed weights straight from w (key: C rows, O columns).
void transform_flipped_weights(const PackedWeightKey& key, const float* w, float* u) {
  std::vector<float> flipped(key.rows * key.columns * 9);
  flip_weights(key, w, flipped.data());
  transform_weights(key, flipped.data(), u);
}

// Transformed once per thread and reused while the weights' bytes stay the same.
const float* transformed_weights(const ConvGeometry& g, const float* w) {
  const PackedWeightKey key{"conv_winograd_f2x2", g.o, g.c, 1};
  return cached_packed_weights(key, w, g.o * g.c * 9, kPoints * padded_outputs(g) * g.c, transform_weights);
}

// Image columns [0, columns) (a multiple of 16) of one row into its split halves, 8 of each
// a step: padded column q = x + pw goes to even[q / 2] or odd[q / 2]. Returns `columns`.
int64_t split_in_vectors(const float* image_row, int64_t columns, int64_t pw, float* even, float* odd) {
  // An odd padding puts the image's even columns in the odd half and the odd ones in the even.
  float* to_even_columns = pw % 2 == 0 ? even + pw / 2 : odd + (pw - 1) / 2;
  float* to_odd_columns = pw % 2 == 0 ? odd + pw / 2 : even + (pw + 1) / 2;
  for (int64_t x = 0; x < columns; x += 16) {
    const Vec8f a = load<Vec8f>(image_row + x), b = load<Vec8f>(image_row + x + 8);
    const Vec8f evens = GOMETAL_LANE_SHUFFLE(a, b, lanes::Mask8i, 0, 2, 4, 6, 8, 10, 12, 14);
    const Vec8f odds = GOMETAL_LANE_SHUFFLE(a, b, lanes::Mask8i, 1, 3, 5, 7, 9, 11, 13, 15);
    __builtin_memcpy(to_even_columns + x / 2, &evens, sizeof evens);
    __builtin_memcpy(to_odd_columns + x / 2, &odds, sizeof odds);
  }
  return columns;
}

// Padded rows [r0, r1) of every channel of image x, each split into even and odd columns.
// Returns whether every value copied is finite and below 2^120 (runtime/finite.h).
bool split_image_rows(const ConvGeometry& g, const float* x, int64_t r0, int64_t r1, float* split) {
  const int64_t half = half_width(g), row_floats = split_row_floats(g);
  // Columns 2k - pw (even) and 2k + 1 - pw (odd) inside the image.
  const int64_t even_begin = (g.pw + 1) / 2, even_end = std::min(half, (g.w - 1 + g.pw) / 2 + 1);
  const int64_t odd_begin = g.pw / 2;
  const int64_t odd_end = g.w - 2 + g.pw >= 0 ? std::min(half, (g.w - 2 + g.pw) / 2 + 1) : 0;
  // Image columns the rows take in whole 16-column vectors: inside the image and the split row.
  const int64_t vector_columns = std::min(g.w, 2 * half - g.pw) / 16 * 16;
  bool finite = true;
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t r = r0; r < r1; ++r) {
      float* even = split + (c * split_rows(g) + r) * row_floats;
      float* odd = even + half;
      std::fill_n(even, row_floats, 0.0f);
      const int64_t iy = r - g.ph;
      if (iy < 0 || iy >= g.h) continue;
      const float* image_row = x + (c * g.h + iy) * g.w;
      const int64_t from = split_in_vectors(image_row, vector_columns, g.pw, even, odd);
      const float* src = image_row - g.pw;
      for (int64_t k = std::max(even_begin, (from + g.pw + 1) / 2); k < even_end; ++k) even[k] = src[2 * k];
      for (int64_t k = std::max(odd_begin, (from + g.pw) / 2); k < odd_end; ++k) odd[k] = src[2 * k + 1];
      // The image's row, as integer bits, which vectorise; the split row just stored would wait
      // for its stores. A value past the last tile only sends the image to the direct sums.
      finite &= all_moderate(image_row, g.w);
    }
  return finite;
}


// B^T d B of the 4x4 tiles whose rows r[0..3] (split rows) start at column tx, lanes of T:
// out[point] = the transformed value. Additions only, so every lane width gives the same bits.
template <class T>
GOMETAL_SIMD_INLINE void transform_input(const float* const (&r)[4], int64_t half, int64_t tx, T (&out)[16]) {
  T d[4][4];
  for (int i = 0; i < 4; ++i) {
    d[i][0] = load<T>(r[i] + tx);
    d[i][1] = load<T>(r[i] + half + tx);
    d[i][2] = load<T>(r[i] + tx + 1);
    d[i][3] = load<T>(r[i] + half + tx + 1);
  }
  T s[4][4];
  for (int j = 0; j < 4; ++j) {
    s[0][j] = d[0][j] - d[2][j];
    s[1][j] = d[1][j] + d[2][j];
    s[2][j] = d[2][j] - d[1][j];
    s[3][j] = d[1][j] - d[3][j];
  }
  for (int a = 0; a < 4; ++a) {
    out[a * 4 + 0] = s[a][0] - s[a][2];
    out[a * 4 + 1] = s[a][1] + s[a][2];
    out[a * 4 + 2] = s[a][2] - s[a][1];
    out[a * 4 + 3] = s[a][1] - s[a][3];
  }
}

// block[point][c][j] for tiles b0 + j, j < b1 - b0, zeros up to `lanes`.
template <class Vec, int L>
GOMETAL_SIMD_INLINE void transform_block(const ConvGeometry& g, const float* split, int64_t b0, int64_t b1,
                                         int64_t lanes, float* block) {
  const int64_t tw = tile_cols(g), half = half_width(g), row_floats = split_row_floats(g);
  const int64_t channel_stride = kBlockTiles, point_stride = g.c * kBlockTiles;
  for (int64_t c = 0; c < g.c; ++c) {
    const float* plane = split + c * split_rows(g) * row_floats;
    float* out = block + c * channel_stride;
    for (int64_t t = b0; t < b1;) {
      const int64_t ty = t / tw, tx0 = t % tw, tx1 = std::min(tw, tx0 + (b1 - t));
      const float* const r[4] = {plane + (2 * ty) * row_floats, plane + (2 * ty + 1) * row_floats,
                                 plane + (2 * ty + 2) * row_floats, plane + (2 * ty + 3) * row_floats};
      float* dst = out + (t - b0) - tx0;
      int64_t tx = tx0;
      for (; tx + L <= tx1; tx += L) {
        Vec v[16];
        transform_input(r, half, tx, v);
        for (int p = 0; p < 16; ++p) __builtin_memcpy(dst + p * point_stride + tx, &v[p], sizeof(Vec));
      }
      if constexpr (L > 8) {  // rows of 8 to 15 tiles (a 16- to 31-wide plane) in half vectors
        for (; tx + 8 <= tx1; tx += 8) {
          Vec8f v[16];
          transform_input(r, half, tx, v);
          for (int p = 0; p < 16; ++p) __builtin_memcpy(dst + p * point_stride + tx, &v[p], sizeof(Vec8f));
        }
      }
      for (; tx < tx1; ++tx) {
        float v[16];
        transform_input(r, half, tx, v);
        for (int p = 0; p < 16; ++p) dst[p * point_stride + tx] = v[p];
      }
      t += tx1 - tx0;
    }
    for (int p = 0; p < 16; ++p) std::fill(out + p * point_stride + (b1 - b0), out + p * point_stride + lanes, 0.0f);
  }
}

// NaN wins, as torch's max pooling propagates it.
template <class Vec>
GOMETAL_SIMD_INLINE Vec pool_max(Vec best, Vec v) {
  return (v > best) | (v != v) ? v : best;
}

// What one block of tiles of one image computes with.
struct BlockArgs {
  const float* u;      // transformed weights (point, padded O, C)
  float* block;        // transformed tiles (point, C, kBlockTiles)
  float* sums;         // one register tile's transformed sums (point, R, NV * L)
  float* y;            // the image's pooled outputs (O, tiles), at the block's first tile; unpooled
                       // (O, OH, OW), at its first output
  int64_t o, o_pad, c, plane, tiles;
  int64_t first_tile, tile_cols, ow;  // unpooled: the block's first tile, tiles a row, outputs a row
  ConvEpilogue epilogue;
};

// sums[point][r][lane] = sum over c of u[point][o0 + r][c] * block[point][c][lane], for the NV
// vectors of tiles from `lane0`.
template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void transformed_sums(const BlockArgs& a, int64_t o0, int64_t lane0) {
  for (int64_t p = 0; p < kPoints; ++p) {
    Vec acc[R][NV] = {};
    const float* u = a.u + (p * a.o_pad + o0) * a.c;
    const float* v = a.block + p * a.c * kBlockTiles + lane0;
    for (int64_t c = 0; c < a.c; ++c) {
      Vec b[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) b[j] = load<Vec>(v + c * kBlockTiles + j * L);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const Vec s = broadcast<Vec, L>(u + r * a.c + c);
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[r][j] += s * b[j];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < NV; ++j) __builtin_memcpy(a.sums + ((p * R + r) * NV + j) * L, &acc[r][j], sizeof(Vec));
  }
}

// A^T m A of the 4x4 sums of row r, vector j, then the epilogue: each tile's 2x2 outputs.
template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void tile_outputs(const BlockArgs& a, int r, int j, int64_t o, Vec* y00, Vec* y01,
                                      Vec* y10, Vec* y11) {
  Vec m[16];
  for (int p = 0; p < 16; ++p) m[p] = load<Vec>(a.sums + ((p * R + r) * NV + j) * L);
  Vec top[4], bottom[4];
  for (int b = 0; b < 4; ++b) {
    top[b] = m[b] + m[4 + b] + m[8 + b];
    bottom[b] = m[4 + b] - m[8 + b] - m[12 + b];
  }
  const ConvEpilogue& e = a.epilogue;
  *y00 = conv_epilogue_channel(top[0] + top[1] + top[2], e, o);
  *y01 = conv_epilogue_channel(top[1] - top[2] - top[3], e, o);
  *y10 = conv_epilogue_channel(bottom[0] + bottom[1] + bottom[2], e, o);
  *y11 = conv_epilogue_channel(bottom[1] - bottom[2] - bottom[3], e, o);
}

// The outputs of tile_outputs, then the maximum of the 2x2 outputs: the pooled
// outputs of channels o0 .. o0 + rows for the tiles from lane0 (`valid` of them in the block).
template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void pooled_outputs(const BlockArgs& a, int64_t o0, int rows, int64_t lane0) {
  for (int r = 0; r < rows; ++r) {
    const int64_t o = o0 + r;
    float* out = a.y + o * a.plane + lane0;
    for (int j = 0; j < NV; ++j) {
      const int64_t count = std::min<int64_t>(L, a.tiles - lane0 - j * L);
      if (count <= 0) break;
      Vec y00, y01, y10, y11;
      tile_outputs<Vec, L, R, NV>(a, r, j, o, &y00, &y01, &y10, &y11);
      const Vec v = pool_max(pool_max(y00, y01), pool_max(y10, y11));
      if (count == L) {
        __builtin_memcpy(out + j * L, &v, sizeof v);
      } else {
        float lanes[L];
        __builtin_memcpy(lanes, &v, sizeof v);
        for (int64_t i = 0; i < count; ++i) out[j * L + i] = lanes[i];
      }
    }
  }
}

// n floats, 8 at a time where they can (a copy of a run-time length calls memcpy).
GOMETAL_SIMD_INLINE void copy_floats(const float* src, int64_t n, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) __builtin_memcpy(dst + k, src + k, 8 * sizeof(float));
  for (; k < n; ++k) dst[k] = src[k];
}

// Without pooling: the 2x2 outputs of each tile stored where they lie, a row's tiles
// interleaved back into two output rows (a vector of tiles may run over into the next row).
template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void full_outputs(const BlockArgs& a, int64_t o0, int rows, int64_t lane0) {
  for (int r = 0; r < rows; ++r) {
    const int64_t o = o0 + r;
    for (int j = 0; j < NV; ++j) {
      const int64_t first = lane0 + j * L, count = std::min<int64_t>(L, a.tiles - first);
      if (count <= 0) break;
      Vec y00, y01, y10, y11;
      tile_outputs<Vec, L, R, NV>(a, r, j, o, &y00, &y01, &y10, &y11);
      const Vec rows_out[4] = {lanes::interleave_low(y00, y01), lanes::interleave_high(y00, y01),
                               lanes::interleave_low(y10, y11), lanes::interleave_high(y10, y11)};
      float* plane = a.y + o * a.plane;
      if (count == L && a.tile_cols % (L / 2) == 0) {
        // Blocks and chunks start on whole vectors of tiles: each half vector lies in one row
        // of tiles, and its outputs are two whole vectors, stored where they lie.
        for (int h = 0; h < 2; ++h) {
          const int64_t t = a.first_tile + first + h * (L / 2), ty = t / a.tile_cols, tx = t % a.tile_cols;
          float* dst = plane + 2 * ty * a.ow + 2 * tx;
          __builtin_memcpy(dst, &rows_out[h], sizeof(Vec));
          __builtin_memcpy(dst + a.ow, &rows_out[2 + h], sizeof(Vec));
        }
        continue;
      }
      float upper[2 * L], lower[2 * L];  // the tiles' two output rows, 2 floats a tile
      __builtin_memcpy(upper, &rows_out[0], sizeof(Vec));
      __builtin_memcpy(upper + L, &rows_out[1], sizeof(Vec));
      __builtin_memcpy(lower, &rows_out[2], sizeof(Vec));
      __builtin_memcpy(lower + L, &rows_out[3], sizeof(Vec));
      for (int64_t i = 0; i < count;) {
        const int64_t t = a.first_tile + first + i, ty = t / a.tile_cols, tx = t % a.tile_cols;
        const int64_t run = std::min(count - i, a.tile_cols - tx);
        float* dst = plane + 2 * ty * a.ow + 2 * tx;
        copy_floats(upper + 2 * i, 2 * run, dst);
        copy_floats(lower + 2 * i, 2 * run, dst + a.ow);
        i += run;
      }
    }
  }
}

// Tiles b0 .. b1 of one image: transformed, then every block of output channels over every
// chunk of tiles (a block's transformed weights stay in L1 across the chunks).
template <class Vec, int L, int R, int NV>
GOMETAL_SIMD_INLINE void forward_block(const ConvGeometry& g, const float* split, int64_t b0, int64_t b1,
                                       BlockArgs a) {
  constexpr int64_t chunk = NV * L;
  a.tiles = b1 - b0;
  transform_block<Vec, L>(g, split, b0, b1, round_up(a.tiles, chunk), a.block);
  const bool pooled = a.epilogue.max_pool_2x2;
  if (pooled) a.y += b0;
  a.first_tile = b0;
  for (int64_t o0 = 0; o0 < a.o; o0 += R)
    for (int64_t lane0 = 0; lane0 < a.tiles; lane0 += chunk) {
      transformed_sums<Vec, L, R, NV>(a, o0, lane0);
      const int rows = static_cast<int>(std::min<int64_t>(R, a.o - o0));
      if (pooled)
        pooled_outputs<Vec, L, R, NV>(a, o0, rows, lane0);
      else
        full_outputs<Vec, L, R, NV>(a, o0, rows, lane0);
    }
}

void forward_block_portable(const ConvGeometry& g, const float* split, int64_t b0, int64_t b1, const BlockArgs& a) {
  forward_block<Vec8f, 8, kNarrowRows, kNarrowVectors>(g, split, b0, b1, a);
}

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void forward_block_avx2(const ConvGeometry& g, const float* split, int64_t b0,
                                                             int64_t b1, const BlockArgs& a) {
  forward_block<Vec8f, 8, kNarrowRows, kNarrowVectors>(g, split, b0, b1, a);
}
__attribute__((target("avx512f,avx2,fma"))) void forward_block_avx512(const ConvGeometry& g, const float* split,
                                                                      int64_t b0, int64_t b1, const BlockArgs& a) {
  forward_block<Vec16f, 16, kWideRows, kWideVectors>(g, split, b0, b1, a);
}
#endif

void forward_block(ConvPath path, const ConvGeometry& g, const float* split, int64_t b0, int64_t b1,
                   const BlockArgs& a) {
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512: return forward_block_avx512(g, split, b0, b1, a);
    case ConvPath::Avx2: return forward_block_avx2(g, split, b0, b1, a);
#endif
    default: return forward_block_portable(g, split, b0, b1, a);
  }
}

// Outputs a channel of one image: pooled, one a tile.
int64_t output_plane(const ConvGeometry& g, const ConvEpilogue& epilogue) {
  return epilogue.max_pool_2x2 ? tile_count(g) : g.out_plane();
}

// Tiles [t_begin, t_end) summed directly from the split rows, one product at a time. With an
// infinite input or weight the transforms' differences give Inf - Inf = NaN where the direct sum
// (and torch) gives Inf, and values near the float32 maximum overflow in the transforms' sums
// where the direct sum stays finite, so such tiles take this path.
void direct_tiles(const ConvGeometry& g, const float* w, const float* split, int64_t t_begin, int64_t t_end, float* y,
                  const ConvEpilogue& epilogue) {
  const int64_t tw = tile_cols(g), half = half_width(g), row_floats = split_row_floats(g);
  const int64_t plane = output_plane(g, epilogue);
  for (int64_t o = 0; o < g.o; ++o)
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t ty = t / tw, tx = t % tw;
      float out[2][2];
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          float sum = 0.0f;
          for (int64_t c = 0; c < g.c; ++c)
            for (int ky = 0; ky < 3; ++ky) {
              const float* row = split + (c * split_rows(g) + 2 * ty + i + ky) * row_floats;
              for (int kx = 0; kx < 3; ++kx) {
                const int64_t q = 2 * tx + j + kx;  // padded column: even or odd half of the row
                sum += w[((o * g.c + c) * 3 + ky) * 3 + kx] * row[(q % 2) * half + q / 2];
              }
            }
          out[i][j] = conv_epilogue_channel(sum, epilogue, o);
        }
      if (epilogue.max_pool_2x2) {
        y[o * plane + t] = pool_max(pool_max(out[0][0], out[0][1]), pool_max(out[1][0], out[1][1]));
      } else {
        float* dst = y + o * plane + 2 * ty * g.ow + 2 * tx;
        dst[0] = out[0][0], dst[1] = out[0][1], dst[g.ow] = out[1][0], dst[g.ow + 1] = out[1][1];
      }
    }
}

// The outputs (pooled or not) of tiles [t_begin, t_end) of image x into image y, in the
// thread's scratch; directly summed where an input or weight is not finite or not below 2^120.
// With `unflipped` (an input gradient's weights), w is unused: the direct sums flip those into
// the scratch after the tiles' buffers when they run.
void forward_tiles(ConvPath path, const ConvGeometry& g, const float* u, const float* w, bool weights_finite,
                   const float* x, float* y, int64_t t_begin, int64_t t_end, float* scratch,
                   const ConvEpilogue& epilogue, const float* unflipped = nullptr) {
  float* split = scratch;
  BlockArgs a{};
  a.u = u;
  a.block = split + split_floats(g);
  a.sums = a.block + block_floats(g);
  a.y = y;
  a.o = g.o;
  a.o_pad = padded_outputs(g);
  a.c = g.c;
  a.plane = output_plane(g, epilogue);
  a.tile_cols = tile_cols(g);
  a.ow = g.ow;
  a.epilogue = epilogue;
  const int64_t tw = tile_cols(g);
  const bool finite = split_image_rows(g, x, 2 * (t_begin / tw), 2 * ((t_end - 1) / tw) + 4, split);
  if (!finite || !weights_finite) {
    if (unflipped != nullptr) {
      float* flipped = scratch + conv2d_winograd_scratch(g);
      flip_weights(PackedWeightKey{"", g.o, g.c, 1}, unflipped, flipped);
      w = flipped;
    }
    return direct_tiles(g, w, split, t_begin, t_end, y, epilogue);
  }
  for (int64_t b0 = t_begin; b0 < t_end; b0 += kBlockTiles)
    forward_block(path, g, split, b0, std::min(t_end, b0 + kBlockTiles), a);
}

// Below this many multiply-adds per image, waking a second thread for a part costs more than it.
constexpr int64_t kMinSplitMacs = int64_t{1} << 18;

// bench_conv.py --layers, 1 thread, batch 256, CPU ms, loaded machine (onnxruntime / pixel
// lanes / channel lanes / these tiles): 3->16 at 64x64 19.3 / 16.1 / 29.8 / 12.9, 16->32 at
// 32x32 30.4 / 27.9 / 28.5 / 18.4, 32->64 at 16x16 25.3 / 26.2 / 24.6 / 15.6, 3->16 at 32x32
// 4.9 / 3.9 / 4.7 / 3.0, 16->32 at 16x16 7.4 / 8.1 / 7.4 / 5.3; but 32->64 at 8x8 5.7 / 16.5 /
// 6.3 / 12.4: 16 tiles leave half of a 32-tile chunk idle, so planes of fewer tiles stay off.
bool chosen_by_shape(const ConvGeometry& g) { return tile_count(g) >= kMostChunk && g.o >= 16; }

// Unpooled (training's forward passes, whose outputs the backward pass reads), 1 thread,
// batch 32, CPU ms, loaded machine, channel lanes / these tiles: 16->32 at 32x32 3.2 / 2.9,
// 32->64 at 16x16 3.0 / 2.1-2.5; but 3->16 at 64x64 1.7 / 2.1-2.3, where three input channels
// leave the output transform and its stores most of the work.
bool unpooled_chosen_by_shape(const ConvGeometry& g) { return chosen_by_shape(g) && g.c >= 16; }

}  // namespace

bool conv2d_winograd_unpooled_chosen(const ConvGeometry& g) {
  if (!geometry_supported(g) || g.oh % 2 != 0 || g.ow % 2 != 0) return false;
  const char* forced = std::getenv("GOMETAL_CONV_WINOGRAD");
  if (forced == nullptr || forced[0] == '\0') return unpooled_chosen_by_shape(g);
  return conv2d_winograd_chosen(g, ConvEpilogue{.max_pool_2x2 = true});  // always / never, or the error
}

bool conv2d_winograd_supported(const ConvGeometry& g, const ConvEpilogue& epilogue) {
  return epilogue.max_pool_2x2 && geometry_supported(g);
}

bool conv2d_winograd_chosen(const ConvGeometry& g, const ConvEpilogue& epilogue) {
  const char* forced = std::getenv("GOMETAL_CONV_WINOGRAD");
  if (forced == nullptr || forced[0] == '\0') return conv2d_winograd_supported(g, epilogue) && chosen_by_shape(g);
  const std::string_view value = forced;
  if (value == "always") return conv2d_winograd_supported(g, epilogue);
  if (value == "never") return false;
  throw std::invalid_argument(std::string("[conv2d] GOMETAL_CONV_WINOGRAD must be always or never, got '") + forced +
                              "'");
}

int64_t conv2d_winograd_scratch(const ConvGeometry& g) {
  if (!geometry_supported(g)) return 0;
  return std::max(split_floats(g) + block_floats(g) + kSumsFloats, conv2d_winograd_f4_scratch(g));
}

void conv2d_winograd_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0,
                                     int64_t n1, float* scratch, const ConvEpilogue& epilogue) {
  const ConvPath path = choose_conv_path();
  const bool weights_finite = all_moderate(w, g.o * g.c * 9);
  const int64_t in_image = g.c * g.h * g.w, out_image = g.o * output_plane(g, epilogue);
  auto images = [&](int64_t from, int64_t to) {  // F(4x4, 3x3) calls it for one image at a time
    const float* u = transformed_weights(g, w);
    for (int64_t n = from; n < to; ++n)
      forward_tiles(path, g, u, w, weights_finite, x + n * in_image, y + n * out_image, 0, tile_count(g), scratch,
                    epilogue);
  };
  if (!epilogue.max_pool_2x2 && conv2d_winograd_f4_chosen(g))
    return conv2d_winograd_f4_samples(g, x, w, false, y, n0, n1, scratch, epilogue,
                                      [&](int64_t n) { images(n, n + 1); });
  images(n0, n1);
}

void conv2d_winograd_forward(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* w,
                             float* y, const ConvEpilogue& epilogue) {
  const ConvPath path = choose_conv_path();
  // Transformed (or found transformed) once on this thread; every task reads them.
  const float* u = transformed_weights(g, w);
  const bool weights_finite = all_moderate(w, g.o * g.c * 9);
  const int64_t tiles = tile_count(g), threads = ctx.pool->size();
  const int64_t chunk = chunk_of(path);
  int64_t parts = 1;
  if (threads > 1 && g.n < 2 * threads && g.o * g.patch() * g.out_plane() >= kMinSplitMacs)
    parts = std::min((2 * threads + g.n - 1) / g.n, (tiles + chunk - 1) / chunk);
  const int64_t in_image = g.c * g.h * g.w, out_image = g.o * output_plane(g, epilogue);
  ctx.pool->parallel_for(static_cast<int>(g.n * parts), [&](int task, int thread) {
    const int64_t n = task / parts;
    int64_t t_begin, t_end;
    split_range(tiles, static_cast<int>(parts), static_cast<int>(task % parts), chunk, &t_begin, &t_end);
    if (t_begin >= t_end) return;
    forward_tiles(path, g, u, w, weights_finite, x + n * in_image, y + n * out_image, t_begin, t_end,
                  ctx.thread_scratch(thread), epilogue);
  });
}

// An input gradient (g the convolution's geometry) as these tiles over dy with the flipped
// weights wherever the unpooled rule takes the flipped convolution (16+ input channels): 1
// thread, batch 32, CPU ms, alternating windows, channel lanes / these tiles: 32<-64 at 16x16
// 2.97-3.20 / 2.54-2.72 (1.16-1.18x); 16<-32 at 32x32 3.03 / 2.53 (1.19x) since the tiles' row
// split and stores in whole vectors (it tied before).
bool conv2d_winograd_input_grad_chosen(const ConvGeometry& g) {
  ConvGeometry f;
  return input_grad_as_forward(g, &f) && conv2d_winograd_unpooled_chosen(f);
}

int64_t conv2d_winograd_input_grad_scratch(const ConvGeometry& g) {
  ConvGeometry f;
  if (!input_grad_as_forward(g, &f) || !geometry_supported(f)) return 0;
  return conv2d_winograd_scratch(f) + g.o * g.c * 9;
}

void conv2d_winograd_input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, float* dx,
                                        int64_t n0, int64_t n1, float* scratch) {
  ConvGeometry f;
  input_grad_as_forward(g, &f);
  const ConvPath path = choose_conv_path();
  const PackedWeightKey key{"conv_winograd_f2x2_input_grad", g.c, g.o, 1};
  const bool weights_finite = all_moderate(w, g.o * g.c * 9);
  auto images = [&](int64_t from, int64_t to) {
    const float* u = cached_packed_weights(key, w, g.o * g.c * 9, kPoints * padded_outputs(f) * f.c,
                                           transform_flipped_weights);
    for (int64_t n = from; n < to; ++n)
      forward_tiles(path, f, u, nullptr, weights_finite, dy + n * f.c * f.h * f.w, dx + n * f.o * f.out_plane(),
                    0, tile_count(f), scratch, ConvEpilogue{}, w);
  };
  if (conv2d_winograd_f4_chosen(f))
    return conv2d_winograd_f4_samples(f, dy, w, true, dx, n0, n1, scratch, ConvEpilogue{},
                                      [&](int64_t n) { images(n, n + 1); });
  images(n0, n1);
}

}  // namespace gometal
