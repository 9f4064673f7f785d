#include "backends/cpu/gemm_packed.h"

#include <algorithm>
#include <cstring>

#include "backends/cpu/elementwise_ops.h"

namespace gometal {
namespace {

using simd::accumulate_tile;
using simd::load;

// Below this many multiply-adds a product stays on one thread: waking the pool costs more.
constexpr int64_t kParallelMacs = 1 << 18;
// Products whose packed weights hold at most this many floats (256 KB), with at least this
// many row tiles per thread, split by rows only.
constexpr int64_t kRowSplitMaxFloats = int64_t{1} << 16;
constexpr int64_t kRowSplitMinBlocks = 8;

// Register tiles: AVX-512 6 rows x 4 vectors of 16 (24 accumulators + 4 loads of 32
// registers); AVX2 4 x 3 vectors of 8 (12 + 3 + 1 of 16); the portable path 4 x 2 of 8.
constexpr int kAvx512Rows = 6, kAvx512Vectors = 4;
// 7 or 8 rows in one tile of 8 x 2 vectors (16 accumulators): each half panel is read once for
// all rows, where 6 x 4 tiles read the whole panel twice, for 4 + 4 rows.
constexpr int kAvx512TallRows = 8, kAvx512TallVectors = 2;
constexpr int kAvx2Rows = 4, kAvx2Vectors = 3;
constexpr int kPortableRows = 4, kPortableVectors = 2;

struct Product {
  const float* a;  // M x K, row stride k
  const PackedWeights* b;
  float* c;  // M x N, row stride n
  const float* bias;
  DenseActivation activation;
  const float* residual;  // M x N, row stride n, or null
  HeadsLayout heads;
  int64_t m;
  bool backwards;
};

// Rows x (NV vectors of L) of C from one panel (K rows of NV * L floats, contiguous), then
// the epilogue: + bias, ReLU or GELU, or + bias + residual (rows of ldc floats, as C); only
// `cols` columns are stored (the rest is the panel's padding).
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void tile(const float* a, int64_t k, const float* panel, int64_t ldp, float* c, int64_t ldc,
                              int64_t cols, const float* bias, DenseActivation activation, const float* residual) {
  const bool relu = activation == DenseActivation::Relu;
  Vec acc[Rows][NV] = {};
  accumulate_tile<Vec, L, Rows, NV>(a, k, panel, ldp, acc);
  const bool whole = cols == NV * L;  // else a last panel's columns, some of them padding
  if (bias != nullptr && whole) {
    Vec bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = load<Vec>(bias + j * L);
    for (int r = 0; r < Rows; ++r)
      for (int j = 0; j < NV; ++j) acc[r][j] += bv[j];
    // After the bias, as the element-wise (x W + b) + residual rounds.
    if (residual != nullptr)
      for (int r = 0; r < Rows; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] += load<Vec>(residual + r * ldc + j * L);
  }
  if (relu && (bias == nullptr || whole)) {
    const Vec zero = {};
    for (int r = 0; r < Rows; ++r)
      for (int j = 0; j < NV; ++j) acc[r][j] = acc[r][j] < zero ? zero : acc[r][j];  // NaN stays NaN
  }
  for (int r = 0; r < Rows; ++r) {
    float* out = c + r * ldc;
    if (whole) {
      for (int j = 0; j < NV; ++j) std::memcpy(out + j * L, &acc[r][j], sizeof(Vec));
      // GELU on the row just stored, still in L1: a loop the compiler vectorizes.
      if (activation == DenseActivation::Gelu)
        for (int j = 0; j < NV * L; ++j) out[j] = ew::gelu(out[j]);
      continue;
    }
    float row[NV * L];
    std::memcpy(row, acc[r], sizeof row);
    // A partial panel with a bias adds it here, past the vectors, and only then takes the ReLU.
    for (int64_t j = 0; j < cols; ++j) {
      float v = row[j];
      if (bias != nullptr) {
        v += bias[j];
        if (relu) v = std::max(v, 0.0f);
      }
      if (residual != nullptr) v += residual[r * ldc + j];
      out[j] = activation == DenseActivation::Gelu ? ew::gelu(v) : v;
    }
  }
}

// Rows [row, row + rows) and columns [j0, j0 + cols) of C, `tile` (rows of ldt floats), stored
// in the heads layout: each row's columns in runs of at most d floats, one run a head.
void store_heads(const HeadsLayout& heads, const float* tile, int64_t ldt, int64_t row, int rows, int64_t j0,
                 int64_t cols, float* c) {
  for (int r = 0; r < rows; ++r) {
    const int64_t b = (row + r) / heads.t, t = (row + r) % heads.t;
    for (int64_t j = 0; j < cols;) {
      const int64_t h = (j0 + j) / heads.d, d = (j0 + j) % heads.d, run = std::min(heads.d - d, cols - j);
      std::memcpy(c + ((b * heads.heads + h) * heads.t + t) * heads.d + d, tile + r * ldt + j, run * sizeof(float));
      j += run;
    }
  }
}

// tile<..., rows, nv> for run-time rows <= Rows and nv <= NV (a last panel's few columns
// are not computed over its padding).
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void dispatch_tile(int rows, int nv, const float* a, int64_t k, const float* panel, int64_t ldp,
                                       float* c, int64_t ldc, int64_t cols, const float* bias,
                                       DenseActivation activation, const float* residual) {
  if constexpr (Rows >= 1 && NV >= 1) {
    if (rows < Rows)
      return dispatch_tile<Vec, L, Rows - 1, NV>(rows, nv, a, k, panel, ldp, c, ldc, cols, bias, activation,
                                                 residual);
    if (nv < NV)
      return dispatch_tile<Vec, L, Rows, NV - 1>(rows, nv, a, k, panel, ldp, c, ldc, cols, bias, activation,
                                                 residual);
    tile<Vec, L, Rows, NV>(a, k, panel, ldp, c, ldc, cols, bias, activation, residual);
  }
}

// Panels [p0, p1) against rows [i0, i1): each panel stays in cache while the row blocks go
// by. Rows are cut into blocks of near-equal height (8 rows: 4 + 4, not 6 + 2), so that no
// block is left with too few accumulators to hide the multiply-add latency.
template <class Vec, int L, int Rows, int NV>
GOMETAL_SIMD_INLINE void panels(const Product& o, int64_t p0, int64_t p1, int64_t i0, int64_t i1) {
  const PackedWeights& b = *o.b;
  const int64_t span = i1 - i0;
  if (span <= 0) return;
  const int64_t blocks = (span + Rows - 1) / Rows;
  // A panel is read NV * L columns at a time (the register tile's width).
  for (int64_t i = 0; i < p1 - p0; ++i) {
    const int64_t p = o.backwards ? p1 - 1 - i : p0 + i;
    for (int64_t sub = 0; sub < b.width; sub += NV * L) {
      const float* panel = b.panels.data() + p * b.k * b.width + sub;
      const int64_t j0 = p * b.width + sub;
      if (j0 >= b.n) break;
      const int64_t cols = std::min<int64_t>(NV * L, b.n - j0);
      const int nv = static_cast<int>((cols + L - 1) / L);
      const float* bias = o.bias == nullptr ? nullptr : o.bias + j0;
      const float* residual = o.residual == nullptr ? nullptr : o.residual + j0;
      for (int64_t blk = 0, row = i0; blk < blocks; ++blk) {
        const int rows = static_cast<int>((span - (row - i0) + (blocks - blk) - 1) / (blocks - blk));
        if (o.heads.t > 0) {
          // Through a tile-sized buffer in L1, then out in runs of a head's d floats.
          alignas(64) float stored[Rows * NV * L];
          dispatch_tile<Vec, L, Rows, NV>(rows, nv, o.a + row * b.k, b.k, panel, b.width, stored, NV * L, cols,
                                          bias, o.activation, nullptr);
          store_heads(o.heads, stored, NV * L, row, rows, j0, cols, o.c);
        } else {
          dispatch_tile<Vec, L, Rows, NV>(rows, nv, o.a + row * b.k, b.k, panel, b.width, o.c + row * b.n + j0,
                                          b.n, cols, bias, o.activation,
                                          residual == nullptr ? nullptr : residual + row * b.n);
        }
        row += rows;
      }
    }
  }
}

void panels_portable(const Product& o, int64_t p0, int64_t p1, int64_t i0, int64_t i1) {
  panels<Vec8f, 8, kPortableRows, kPortableVectors>(o, p0, p1, i0, i1);
}

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void panels_avx2(const Product& o, int64_t p0, int64_t p1, int64_t i0,
                                                      int64_t i1) {
  panels<Vec8f, 8, kAvx2Rows, kAvx2Vectors>(o, p0, p1, i0, i1);
}
__attribute__((target("avx512f,avx2,fma"))) void panels_avx512(const Product& o, int64_t p0, int64_t p1,
                                                                int64_t i0, int64_t i1) {
  if (i1 - i0 > kAvx512Rows && i1 - i0 <= kAvx512TallRows)
    return panels<Vec16f, 16, kAvx512TallRows, kAvx512TallVectors>(o, p0, p1, i0, i1);
  panels<Vec16f, 16, kAvx512Rows, kAvx512Vectors>(o, p0, p1, i0, i1);
}
#endif

void run_panels(const Product& o, int64_t p0, int64_t p1, int64_t i0, int64_t i1) {
  switch (o.b->path) {
#ifdef GOMETAL_SIMD_X86
    case SimdPath::Avx512: return panels_avx512(o, p0, p1, i0, i1);
    case SimdPath::Avx2: return panels_avx2(o, p0, p1, i0, i1);
#endif
    default: return panels_portable(o, p0, p1, i0, i1);
  }
}

int tile_rows(SimdPath path) {
  return path == SimdPath::Avx512 ? kAvx512Rows : path == SimdPath::Avx2 ? kAvx2Rows : kPortableRows;
}

}  // namespace

std::optional<SimdPath> choose_gemm_packed_path() {
  return choose_simd_path("matmul", "GOMETAL_GEMM_PACKED_KERNEL", "off");
}

int64_t packed_panel_width(SimdPath path) {
  switch (path) {
    case SimdPath::Avx512: return 16 * kAvx512Vectors;
    case SimdPath::Avx2: return 8 * kAvx2Vectors;
    default: return 8 * kPortableVectors;
  }
}

void pack_weights(SimdPath path, bool transpose_b, int64_t n, int64_t k, const float* b, PackedWeights* out) {
  const int64_t width = packed_panel_width(path);
  const int64_t count = (n + width - 1) / width;
  const size_t bytes = static_cast<size_t>(count * k * width) * sizeof(float);
  if (out->panels.bytes() != align_up(bytes)) out->panels = AlignedBuffer(bytes);
  out->path = path;
  out->n = n;
  out->k = k;
  out->width = width;
  float* dst = out->panels.data();
  for (int64_t p = 0; p < count; ++p) {
    const int64_t j0 = p * width, cols = std::min(width, n - j0);
    float* panel = dst + p * k * width;
    if (transpose_b) {
      // Row j of B (N x K) is column j of the panel. Panel rows are written in order, each
      // gathering one float from `cols` rows of B, whose cache lines stay in L1 meanwhile.
      const float* src = b + j0 * k;
      for (int64_t q = 0; q < k; ++q)
        for (int64_t j = 0; j < cols; ++j) panel[q * width + j] = src[j * k + q];
    } else {
      for (int64_t q = 0; q < k; ++q) std::memcpy(panel + q * width, b + q * n + j0, cols * sizeof(float));
    }
    if (cols < width)
      for (int64_t q = 0; q < k; ++q) std::fill(panel + q * width + cols, panel + (q + 1) * width, 0.0f);
  }
}

void gemm_packed(ThreadPool& pool, int64_t m, const float* a, const PackedWeights& b, float* c, const float* bias,
                 DenseActivation activation, bool backwards, const float* residual, HeadsLayout heads) {
  if (m < 1 || b.n < 1) return;
  const Product o{a, &b, c, bias, activation, residual, heads, m, backwards};
  const int64_t count = (b.n + b.width - 1) / b.width;
  const int64_t threads = m * b.n * b.k < kParallelMacs ? 1 : pool.size();
  if (threads <= 1) {
    run_panels(o, 0, count, 0, m);
    return;
  }
  // Panels first (each thread reads only its share of the weights); rows too when there are
  // fewer panels than threads and enough rows to share. Weights that fit a core's L2 twice
  // over split by rows alone: each thread then reads only its own rows of A, and writes the
  // rows of C that the next kernel reads on the same thread (the pool keeps each thread on
  // the same end of every region).
  const int64_t row_blocks = (m + tile_rows(b.path) - 1) / tile_rows(b.path);
  const bool rows_only = b.n * b.k <= kRowSplitMaxFloats && row_blocks >= threads * kRowSplitMinBlocks;
  const int64_t by_panels = rows_only ? 1 : std::min(threads, count);
  const int64_t by_rows = std::min((threads + by_panels - 1) / by_panels, row_blocks);
  const int parts = static_cast<int>(by_panels * by_rows);
  pool.parallel_for(parts, [&](int part, int) {
    int64_t p0, p1, i0, i1;
    split_range(count, static_cast<int>(by_panels), static_cast<int>(part % by_panels), 1, &p0, &p1);
    split_range(m, static_cast<int>(by_rows), static_cast<int>(part / by_panels), 1, &i0, &i1);
    if (p0 < p1 && i0 < i1) run_panels(o, p0, p1, i0, i1);
  });
}

}  // namespace gometal
