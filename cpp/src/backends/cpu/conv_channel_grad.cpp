#include "backends/cpu/conv_channel_grad.h"

#include <algorithm>

#include "backends/cpu/conv_direct.h"
#include "backends/cpu/lane_transpose.h"

namespace gometal {
namespace {

using simd::broadcast;
using simd::load;

constexpr int kTaps = 9;  // a 3x3 window
// A band of output rows whose dy rows (of one block of output channels) fit in L1 next to
// the input rows, so every block of input channels reads them from there.
constexpr int64_t kBandBytes = 24 * 1024;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Where one tile reads one image, and where its sums go.
struct TileArgs {
  const float* x;   // the tile's first input channel of the padded image
  const float* dy;  // the tile's first output channel of the image's dy rows
  float* sums;      // its first output channel of its first tap in the dw rows
  int64_t plane, row, width, ow, sh, sw;
};

GOMETAL_SIMD_INLINE void keep_opaque(const float*& p) { asm("" : "+r"(p)); }

// The 9 taps of channel C at one pixel: acc[v][tap] += d[v] * x[ki * row + kj].
template <class Vec, int L, int V, int KC, int C>
GOMETAL_SIMD_INLINE void channel_taps(const float* x, int64_t row, const Vec (&d)[V],
                                      Vec (&acc)[V][KC * kTaps]) {
#pragma GCC unroll 3
  for (int ki = 0; ki < 3; ++ki)
#pragma GCC unroll 3
    for (int kj = 0; kj < 3; ++kj) {
      const Vec b = broadcast<Vec, L>(x + ki * row + kj);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[v][C * kTaps + ki * 3 + kj] += d[v] * b;
    }
}

// sums[tap (c, ki, kj)][o] += dy[pixel][o] * x[c][pixel's row + ki][pixel's column + kj] over
// the pixels of output rows [oy0, oy1), for V vectors of o and KC channels c; `fresh`
// starts from zero instead of the stored sums.
template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE void channel_tile(const TileArgs& a, int64_t oy0, int64_t oy1, bool fresh) {
  Vec acc[V][KC * kTaps];
  // Every loop over acc unrolled in full, or GCC keeps acc in memory.
#pragma GCC unroll 32
  for (int t = 0; t < KC * kTaps; ++t)
    for (int v = 0; v < V; ++v) acc[v][t] = fresh ? Vec{} : load<Vec>(a.sums + t * a.width + v * L);
  const int64_t row = a.row;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const float* x[KC];
    for (int c = 0; c < KC; ++c) x[c] = a.x + c * a.plane + oy * a.sh * row;
    const float* dy = a.dy + oy * a.ow * a.width;
    for (int64_t ox = 0; ox < a.ow; ++ox, dy += a.width) {
      Vec d[V];
      for (int v = 0; v < V; ++v) d[v] = load<Vec>(dy + v * L);
      // An opaque pointer per channel: the taps then address it as base + row * {0, 4, 8}
      // bytes + column, where GCC would otherwise keep (and spill) one offset per tap.
      for (int c = 0; c < KC; ++c) keep_opaque(x[c]);
      // Channel by channel, each a template: GCC leaves a run-time loop over them rolled.
      channel_taps<Vec, L, V, KC, 0>(x[0], row, d, acc);
      if constexpr (KC > 1) channel_taps<Vec, L, V, KC, 1>(x[1], row, d, acc);
      if constexpr (KC > 2) channel_taps<Vec, L, V, KC, 2>(x[2], row, d, acc);
      for (int c = 0; c < KC; ++c) x[c] += a.sw;
    }
  }
#pragma GCC unroll 32
  for (int t = 0; t < KC * kTaps; ++t)
    for (int v = 0; v < V; ++v) __builtin_memcpy(a.sums + t * a.width + v * L, &acc[v][t], sizeof(Vec));
}

// channel_tile<..., vectors, channels> for run-time vectors <= V and channels <= KC.
template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE void dispatch_tile(const TileArgs& a, int vectors, int channels, int64_t oy0, int64_t oy1,
                                       bool fresh) {
  if constexpr (V >= 1 && KC >= 1) {
    if (vectors < V) return dispatch_tile<Vec, L, V - 1, KC>(a, vectors, channels, oy0, oy1, fresh);
    if (channels < KC) return dispatch_tile<Vec, L, V, KC - 1>(a, vectors, channels, oy0, oy1, fresh);
    channel_tile<Vec, L, V, KC>(a, oy0, oy1, fresh);
  }
}

// One image's dy (O, pixels) as (pixels, width) rows, the lanes past O zero.
GOMETAL_SIMD_INLINE void transpose_dy(const ConvGeometry& g, const float* dy, int64_t width, float* dy_rows) {
  const int64_t pixels = g.out_plane(), whole_o = g.o / 8 * 8, whole_p = pixels / 8 * 8;
  for (int64_t o = 0; o < whole_o; o += 8)
    for (int64_t p = 0; p < whole_p; p += 8)
      lanes::transpose_8x8(dy + o * pixels + p, pixels, dy_rows + p * width + o, width);
  for (int64_t p = 0; p < pixels; ++p) {
    float* row = dy_rows + p * width;
    for (int64_t o = p < whole_p ? whole_o : 0; o < g.o; ++o) row[o] = dy[o * pixels + p];
    std::fill(row + g.o, row + width, 0.0f);
  }
}

// The images of one chunk: how many chunks a batch has is fixed by its size alone.
constexpr int64_t kChunks = 8;
int64_t chunk_images(const ConvGeometry& g) { return (g.n + kChunks - 1) / kChunks; }
int64_t chunk_count(const ConvGeometry& g) { return (g.n + chunk_images(g) - 1) / chunk_images(g); }
// One chunk's sums: (taps, output channels rounded up to whole vectors of any path).
int64_t rows_floats(const ConvGeometry& g) { return g.c * kTaps * round_up(g.o, 16); }

struct ChunkArgs {
  const ConvGeometry* g;
  const float* x;   // the batch's input (N, C, H, W)
  const float* dy;  // the batch's dy (N, O, OH, OW)
  int64_t chunk;
  float* scratch;   // one padded image, then its dy rows
  float* dw_rows;   // the chunk's (taps, width)
};

// Each image of the chunk in order: padded and its dy transposed into the scratch (where the
// tiles then find them in cache), then a band of rows at a time, every tile on that band.
template <class Vec, int L, int V, int KC>
GOMETAL_SIMD_INLINE void chunk_sums(const ChunkArgs& r) {
  const ConvGeometry& g = *r.g;
  const int64_t width = round_up(g.o, L), vectors = width / L, pixels = g.out_plane();
  const int64_t o_blocks = (vectors + V - 1) / V, channel_blocks = (g.c + KC - 1) / KC;
  const int64_t band = std::max<int64_t>(1, kBandBytes / (g.ow * V * L * int64_t{sizeof(float)}));
  float* padded = r.scratch;
  float* dy_rows = r.scratch + round_up(conv2d_direct_padded_image_floats(g), 16);
  TileArgs a{};
  a.row = g.w + 2 * g.pw;
  a.plane = (g.h + 2 * g.ph) * a.row;
  a.width = width;
  a.ow = g.ow;
  a.sh = g.sh;
  a.sw = g.sw;
  const int64_t n_begin = r.chunk * chunk_images(g), n_end = std::min(g.n, n_begin + chunk_images(g));
  for (int64_t n = n_begin; n < n_end; ++n) {
    conv2d_direct_pad_image(g, r.x + n * g.c * g.h * g.w, padded);
    transpose_dy(g, r.dy + n * g.o * pixels, width, dy_rows);
    for (int64_t oy0 = 0; oy0 < g.oh; oy0 += band)
      for (int64_t ob = 0; ob < o_blocks; ++ob)
        for (int64_t cb = 0; cb < channel_blocks; ++cb) {
          const int64_t o0 = ob * V * L, c0 = cb * KC;
          a.x = padded + c0 * a.plane;
          a.dy = dy_rows + o0;
          a.sums = r.dw_rows + c0 * kTaps * width + o0;
          const int vecs = static_cast<int>(std::min<int64_t>(V, vectors - ob * V));
          const int chans = static_cast<int>(std::min<int64_t>(KC, g.c - c0));
          const bool fresh = n == n_begin && oy0 == 0;
          dispatch_tile<Vec, L, V, KC>(a, vecs, chans, oy0, std::min(g.oh, oy0 + band), fresh);
        }
  }
}

// AVX2 and portable: 1 vector x 9 taps (10 of 16 registers; a second vector would need 19).
void chunk_portable(const ChunkArgs& r) { chunk_sums<Vec8f, 8, 1, 1>(r); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void chunk_avx2(const ChunkArgs& r) { chunk_sums<Vec8f, 8, 1, 1>(r); }
// AVX-512: one vector of output channels takes three input channels (27 sums + 1 of 32
// registers); more output channels go two vectors x one input channel (18 + 2), which loads
// one broadcast per two FMAs.
__attribute__((target("avx512f,avx2,fma"))) void chunk_avx512(const ChunkArgs& r) {
  if (round_up(r.g->o, 16) == 16)
    chunk_sums<Vec16f, 16, 1, 3>(r);
  else
    chunk_sums<Vec16f, 16, 2, 1>(r);
}
#endif

}  // namespace

bool conv2d_channel_weight_grad_supported(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.dh == 1 && g.dw == 1 && g.groups == 1;
}

int64_t conv2d_channel_weight_grad_scratch(const ConvGeometry& g) {
  return round_up(conv2d_direct_padded_image_floats(g), 16) + g.out_plane() * round_up(g.o, 16);
}

int64_t conv2d_channel_weight_grad_shared(const ConvGeometry& g) { return chunk_count(g) * rows_floats(g); }

void conv2d_channel_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy,
                                float* dw) {
  const ConvPath path = choose_conv_path();
  ctx.pool->parallel_for(static_cast<int>(chunk_count(g)), [&](int chunk, int thread) {
    float* sums = ctx.shared + chunk * rows_floats(g);
    const ChunkArgs args{&g, x, dy, chunk, ctx.thread_scratch(thread), sums};
    switch (path) {
#ifdef GOMETAL_SIMD_X86
      case ConvPath::Avx512: return chunk_avx512(args);
      case ConvPath::Avx2: return chunk_avx2(args);
#endif
      default: return chunk_portable(args);
    }
  });
  // dw (O, C, 3, 3): the chunks' rows added in chunk order, transposed; blocks of taps split
  // across the threads, which would otherwise wait for one to add 8 x O x taps floats.
  const int64_t width = round_up(g.o, path == ConvPath::Avx512 ? 16 : 8), taps = g.c * kTaps;
  const int tasks = balanced_tasks(*ctx.pool, (taps + 15) / 16);
  ctx.pool->parallel_for(tasks, [&](int task, int) {
    int64_t t_begin, t_end;
    split_range(taps, tasks, task, 16, &t_begin, &t_end);
    for (int64_t o = 0; o < g.o; ++o)
      for (int64_t t = t_begin; t < t_end; ++t) {
        float sum = ctx.shared[t * width + o];
        for (int64_t k = 1; k < chunk_count(g); ++k) sum += ctx.shared[k * rows_floats(g) + t * width + o];
        dw[o * taps + t] = sum;
      }
  });
}

}  // namespace gometal
