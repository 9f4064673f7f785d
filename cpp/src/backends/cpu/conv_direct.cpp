#include "backends/cpu/conv_direct.h"

#include <algorithm>

#include "backends/cpu/layout.h"

namespace gometal {
namespace {

constexpr int64_t kSlack = 32;  // floats after the padded image: the last row's vectors may overrun

// Pins a vector in registers (otherwise GCC folds a fresh load into every FMA). "x" names an
// SSE/AVX register and a Vec8 needs a 256-bit one, so only x86 with AVX (a native build) takes
// the hint; portable x86 builds and other CPUs keep the compiler's own choice.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__AVX__)
#define GOMETAL_KEEP_IN_REGISTER(v) asm("" : "+x"(v))
#else
#define GOMETAL_KEEP_IN_REGISTER(v) ((void)(v))
#endif

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Padded {
  int64_t h, w;  // padded height and width
  int64_t plane() const { return h * w; }
};

Padded padded_size(const ConvGeometry& g) { return {g.h + 2 * g.ph, g.w + 2 * g.pw}; }

// One group's channels of one image, zero-padded: (C/groups, H + 2ph, W + 2pw).
void pad_image(const ConvGeometry& g, const float* x, float* padded) {
  const int64_t floats = g.c_per_group() * padded_size(g).plane();
  pad_planes(x, g.c_per_group(), g.h, g.w, g.ph, g.pw, padded);
  std::fill(padded + floats, padded + floats + kSlack, 0.0f);
}

// One group's padded channels, rounded up to whole vectors.
int64_t padded_group_floats(const ConvGeometry& g) {
  return round_up(g.c_per_group() * padded_size(g).plane() + kSlack, 16);
}

// Weight gradient: RO output channels x RT taps of dw, each summed over pixels in L lanes
// kept in memory across images (lanes[weight][L]), added across lanes once at the end.
// AVX2 and portable: 3 x 4 of 8 floats, 12 accumulators + 3 dy vectors + 1 input vector, all
// 16 registers. AVX-512: 4 x 6 of 16 floats, 24 + 4 + 1 of its 32.
template <class Vec>
GOMETAL_SIMD_INLINE void keep_in_register(Vec& v) {
#ifdef GOMETAL_SIMD_X86
  if constexpr (sizeof(Vec) == 64) {
    asm("" : "+v"(v));
    return;
  }
#endif
  GOMETAL_KEEP_IN_REGISTER(v);
}

// Where the tiles of one image read, and the offsets of every tap.
struct GradArgs {
  const float* dy;      // the first of the tile's output channels of this image
  const float* padded;  // this group's padded channels of this image
  const int64_t* offsets;
  int64_t padded_w, oh, ow, sh, plane, ld;
};

// lanes[r][t] += dy[r] * x at tap t over the image's pixels, for r < RO, t < RT;
// `offsets[t]` is tap t's place in the padded image relative to the output row's start.
template <class Vec, int L, int RO, int RT>
GOMETAL_SIMD_INLINE void weight_grad_tile(const GradArgs& a, const int64_t* offsets, float* lanes) {
  Vec acc[RO][RT];
  for (int r = 0; r < RO; ++r)
    for (int t = 0; t < RT; ++t) acc[r][t] = simd::load<Vec>(lanes + (r * a.ld + t) * L);
  for (int64_t oy = 0; oy < a.oh; ++oy) {
    const float* x_row = a.padded + oy * a.sh * a.padded_w;
    const float* dy_row = a.dy + oy * a.ow;
    for (int64_t ox = 0; ox < a.ow; ox += L) {
      Vec d[RO];
      for (int r = 0; r < RO; ++r) {
        d[r] = simd::load<Vec>(dy_row + r * a.plane + ox);
        keep_in_register(d[r]);
      }
#pragma GCC unroll 6
      for (int t = 0; t < RT; ++t) {
        Vec xv = simd::load<Vec>(x_row + offsets[t] + ox);
        keep_in_register(xv);
        for (int r = 0; r < RO; ++r) acc[r][t] += d[r] * xv;
      }
    }
  }
  for (int r = 0; r < RO; ++r)
    for (int t = 0; t < RT; ++t) __builtin_memcpy(lanes + (r * a.ld + t) * L, &acc[r][t], sizeof(Vec));
}

// weight_grad_tile<..., rows, count> for run-time rows <= RO and count <= RT.
template <class Vec, int L, int RO, int RT>
GOMETAL_SIMD_INLINE void dispatch_grad_tile(const GradArgs& a, int rows, int count, const int64_t* offsets,
                                            float* lanes) {
  if constexpr (RO >= 1 && RT >= 1) {
    if (rows < RO) return dispatch_grad_tile<Vec, L, RO - 1, RT>(a, rows, count, offsets, lanes);
    if (count < RT) return dispatch_grad_tile<Vec, L, RO, RT - 1>(a, rows, count, offsets, lanes);
    weight_grad_tile<Vec, L, RO, RT>(a, offsets, lanes);
  }
}

struct GradRange {
  const ConvGeometry* g;
  const float* padded;  // every image, padded, one after another
  const float* dy;
  int64_t o_begin, o_end;
  const int64_t* offsets;
  float* lanes;
};

// Output channels [o_begin, o_end) over the whole batch, images in order.
template <class Vec, int L, int RO, int RT>
GOMETAL_SIMD_INLINE void weight_grad_range(const GradRange& r) {
  const ConvGeometry& g = *r.g;
  const int64_t taps = g.patch(), out_image = g.o * g.out_plane();
  GradArgs a{};
  a.offsets = r.offsets;
  a.padded_w = padded_size(g).w;
  a.oh = g.oh;
  a.ow = g.ow;
  a.sh = g.sh;
  a.plane = g.out_plane();
  a.ld = taps;
  for (int64_t n = 0; n < g.n; ++n) {
    const float* padded_image = r.padded + n * g.groups * padded_group_floats(g);
    for (int64_t gi = r.o_begin / g.o_per_group(); gi < g.groups && gi * g.o_per_group() < r.o_end; ++gi) {
      a.padded = padded_image + gi * padded_group_floats(g);
      const int64_t first = std::max(r.o_begin, gi * g.o_per_group());
      const int64_t last = std::min(r.o_end, (gi + 1) * g.o_per_group());
      for (int64_t o0 = first; o0 < last; o0 += RO) {
        const int rows = static_cast<int>(std::min<int64_t>(RO, last - o0));
        a.dy = r.dy + n * out_image + o0 * g.out_plane();
        for (int64_t k0 = 0; k0 < taps; k0 += RT) {
          const int count = static_cast<int>(std::min<int64_t>(RT, taps - k0));
          dispatch_grad_tile<Vec, L, RO, RT>(a, rows, count, r.offsets + k0,
                                             r.lanes + ((o0 - r.o_begin) * taps + k0) * L);
        }
      }
    }
  }
}

void weight_grad_portable(const GradRange& r) { weight_grad_range<Vec8f, 8, 3, 4>(r); }

#ifdef GOMETAL_SIMD_X86
__attribute__((target("avx2,fma"))) void weight_grad_avx2(const GradRange& r) {
  weight_grad_range<Vec8f, 8, 3, 4>(r);
}
__attribute__((target("avx512f,avx2,fma"))) void weight_grad_avx512(const GradRange& r) {
  if (r.g->ow % 16 == 0)
    weight_grad_range<Vec16f, 16, 4, 6>(r);
  else
    weight_grad_range<Vec8f, 8, 4, 6>(r);
}
#endif

}  // namespace

bool conv2d_direct_weight_grad_supported(const ConvGeometry& g) { return g.sw == 1 && g.ow % 8 == 0; }

int64_t conv2d_direct_padded_image_floats(const ConvGeometry& g) { return g.groups * padded_group_floats(g); }

void conv2d_direct_pad_image(const ConvGeometry& g, const float* x, float* padded) {
  for (int64_t gi = 0; gi < g.groups; ++gi)
    pad_image(g, x + gi * g.c_per_group() * g.h * g.w, padded + gi * padded_group_floats(g));
}

int64_t conv2d_direct_weight_grad_scratch(const ConvGeometry& g) {
  return g.patch() * 2;  // the taps' offsets (int64: two floats each)
}

WeightGradTiles conv2d_direct_weight_grad_tiles(ConvPath path, const ConvGeometry& g) {
  if (path == ConvPath::Avx512) return {4, g.ow % 16 == 0 ? 16 : 8};
  return {3, 8};
}

void conv2d_direct_weight_grad(ConvPath path, const ConvGeometry& g, const float* padded, const float* dy,
                               int64_t o_begin, int64_t o_end, float* lanes, float* scratch) {
  const Padded p = padded_size(g);
  const int64_t taps = g.patch(), window = g.kh * g.kw;
  auto* offsets = reinterpret_cast<int64_t*>(scratch);
  for (int64_t k = 0; k < taps; ++k) {
    const int64_t c = k / window, ki = k % window / g.kw, kj = k % g.kw;
    offsets[k] = c * p.plane() + ki * g.dh * p.w + kj * g.dw;
  }
  const GradRange range{&g, padded, dy, o_begin, o_end, offsets, lanes};
  switch (path) {
#ifdef GOMETAL_SIMD_X86
    case ConvPath::Avx512: return weight_grad_avx512(range);
    case ConvPath::Avx2: return weight_grad_avx2(range);
#endif
    default: return weight_grad_portable(range);
  }
}

void sum_lanes(const float* lanes, int64_t weights, int64_t lane_count, float* dw) {
  for (int64_t i = 0; i < weights; ++i) {
    float sum = 0.0f;
    for (int64_t lane = 0; lane < lane_count; ++lane) sum += lanes[i * lane_count + lane];
    dw[i] = sum;
  }
}

bool input_grad_as_forward(const ConvGeometry& g, ConvGeometry* f) {
  const int64_t reach_h = g.dh * (g.kh - 1), reach_w = g.dw * (g.kw - 1);
  if (g.sh != 1 || g.sw != 1 || g.ph > reach_h || g.pw > reach_w) return false;
  *f = g;
  f->c = g.o;
  f->h = g.oh;
  f->w = g.ow;
  f->o = g.c;
  f->ph = reach_h - g.ph;
  f->pw = reach_w - g.pw;
  f->oh = g.h;
  f->ow = g.w;
  return true;
}

}  // namespace gometal
