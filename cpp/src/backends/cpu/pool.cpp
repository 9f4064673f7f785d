#include "backends/cpu/pool.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "backends/cpu/vec8.h"

namespace gometal {
namespace {

// Runs fn(p0, p1) over ranges of the (image, channel) planes, split across the pool.
template <class F>
void for_plane_ranges(const ExecContext& ctx, const ConvGeometry& g, F&& fn) {
  const int64_t planes = g.n * g.c;
  const int tasks = planes * g.h * g.w < (1 << 14) ? 1 : balanced_tasks(*ctx.pool, planes);
  ctx.pool->parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(planes, tasks, task, 1, &lo, &hi);
    fn(lo, hi);
  });
}

// The window of output (oy, ox), clipped to the input: [y0, y1) x [x0, x1).
struct Window {
  int64_t y0, y1, x0, x1;
};

Window window(const ConvGeometry& g, int64_t oy, int64_t ox) {
  const int64_t ys = oy * g.sh - g.ph, xs = ox * g.sw - g.pw;
  return {std::max<int64_t>(ys, 0), std::min(ys + g.kh, g.h), std::max<int64_t>(xs, 0), std::min(xs + g.kw, g.w)};
}

// Whether `v` replaces `best` as a window's maximum: a larger value, or any NaN. As in
// torch, a NaN anywhere makes the pooled value NaN and the gradient goes to the last NaN.
inline bool beats(float v, float best) { return v > best || v != v; }

// Index (within the plane) of the first maximum of a window, scanning rows then columns.
int64_t argmax_in(const ConvGeometry& g, const float* plane, const Window& w) {
  int64_t best = w.y0 * g.w + w.x0;
  for (int64_t iy = w.y0; iy < w.y1; ++iy)
    for (int64_t ix = w.x0; ix < w.x1; ++ix)
      if (beats(plane[iy * g.w + ix], plane[best])) best = iy * g.w + ix;
  return best;
}

// Without padding every window lies inside the input: no clipping, fixed trip counts.
int64_t argmax_unpadded(const ConvGeometry& g, const float* plane, int64_t oy, int64_t ox) {
  const int64_t y0 = oy * g.sh, x0 = ox * g.sw;
  int64_t best = y0 * g.w + x0;
  float best_value = plane[best];
  for (int64_t ky = 0; ky < g.kh; ++ky) {
    const float* row = plane + (y0 + ky) * g.w + x0;
    for (int64_t kx = 0; kx < g.kw; ++kx)
      if (beats(row[kx], best_value)) {
        best_value = row[kx];
        best = (y0 + ky) * g.w + x0 + kx;
      }
  }
  return best;
}

int64_t window_argmax(const ConvGeometry& g, const float* plane, int64_t oy, int64_t ox) {
  return g.ph == 0 && g.pw == 0 ? argmax_unpadded(g, plane, oy, ox) : argmax_in(g, plane, window(g, oy, ox));
}

// The common 2x2, stride 2, unpadded window gets branch-free loops: on ReLU outputs the
// comparisons are unpredictable, and a mispredicted branch per window dominates.
bool is_2x2_stride2(const ConvGeometry& g) {
  return g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
}

// Two eight-float vectors as sixteen lanes, split into even and odd lanes or interleaved
// back. GCC spells a two-vector shuffle __builtin_shuffle; Clang (Apple's too) only knows
// __builtin_shufflevector with constant lanes.
#if defined(__clang__)
#define GOMETAL_SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define GOMETAL_SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, Mask8{__VA_ARGS__})
#endif
inline Vec8 even_lanes(Vec8 a, Vec8 b) { return GOMETAL_SHUFFLE8(a, b, 0, 2, 4, 6, 8, 10, 12, 14); }
inline Vec8 odd_lanes(Vec8 a, Vec8 b) { return GOMETAL_SHUFFLE8(a, b, 1, 3, 5, 7, 9, 11, 13, 15); }
inline Vec8 interleave_low(Vec8 a, Vec8 b) { return GOMETAL_SHUFFLE8(a, b, 0, 8, 1, 9, 2, 10, 3, 11); }
inline Vec8 interleave_high(Vec8 a, Vec8 b) { return GOMETAL_SHUFFLE8(a, b, 4, 12, 5, 13, 6, 14, 7, 15); }

// The larger of x and y, or NaN when either is (torch's max pooling propagates NaN).
inline Vec8 max8(Vec8 x, Vec8 y) { return (x < y) | (y != y) ? y : x; }
inline float max1(float x, float y) { return (x < y) || (y != y) ? y : x; }


// Eight windows at a time: even and odd input columns are split with shuffles.
void max_pool_2x2(const ConvGeometry& g, const float* in, float* out) {
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    const float* r0 = in + 2 * oy * g.w;
    const float* r1 = r0 + g.w;
    float* o = out + oy * g.ow;
    int64_t ox = 0;
    for (; ox + 8 <= g.ow; ox += 8) {
      const Vec8 t0 = load8(r0 + 2 * ox), t1 = load8(r0 + 2 * ox + 8);
      const Vec8 b0 = load8(r1 + 2 * ox), b1 = load8(r1 + 2 * ox + 8);
      store8(o + ox, max8(max8(even_lanes(t0, t1), odd_lanes(t0, t1)),
                          max8(even_lanes(b0, b1), odd_lanes(b0, b1))));
    }
    for (; ox < g.ow; ++ox)
      o[ox] = max1(max1(r0[2 * ox], r0[2 * ox + 1]), max1(r1[2 * ox], r1[2 * ox + 1]));
  }
}

// Which of a window's values (a, b / c, d: top row, bottom row) gets the gradient, as
// torch: the first maximum in row-major order, or the last NaN when the window holds one.
// Planes without NaN (nearly all) take the plain rule; kNaN adds the NaN routing.
template <bool kNaN>
inline void route_first_max(Vec8 a, Vec8 b, Vec8 c, Vec8 d, Vec8 g, Vec8* ga, Vec8* gb, Vec8* gc, Vec8* gd) {
  const Vec8 zero = {};
  Mask8 nan_a = {}, nan_b = {}, nan_c = {}, nan_d = {}, finite = ~Mask8{};
  if constexpr (kNaN) {
    nan_d = d != d;
    nan_c = (c != c) & ~nan_d;
    nan_b = (b != b) & ~(nan_c | nan_d);
    nan_a = (a != a) & ~(nan_b | nan_c | nan_d);
    finite = ~(nan_a | nan_b | nan_c | nan_d);
  }
  const Mask8 first = finite & (a >= b) & (a >= c) & (a >= d);
  const Mask8 second = finite & ~first & (b >= c) & (b >= d);
  const Mask8 third = finite & ~first & ~second & (c >= d);
  const Mask8 fourth = finite & ~(first | second | third);
  *ga = (first | nan_a) ? g : zero;
  *gb = (second | nan_b) ? g : zero;
  *gc = (third | nan_c) ? g : zero;
  *gd = (fourth | nan_d) ? g : zero;
}

// Sends each output's gradient to the first maximum of its window (row-major), as torch;
// eight windows at a time, deinterleaving even and odd columns with shuffles.
// Returns whether the plane may hold a NaN (the plain rule routes such windows wrongly, so
// the caller then runs the plane again with kNaN). The test is a running sum of the inputs:
// a NaN anywhere makes it NaN, at three adds per eight windows; infinities of both signs
// (or an overflow to them) can make it NaN too, which costs only the second, exact run.
template <bool kNaN>
bool max_pool_2x2_grad_rows(const ConvGeometry& g, const float* in, const float* dy, float* dx) {
  Vec8 sum = {};
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    const float* r0 = in + 2 * oy * g.w;
    const float* r1 = r0 + g.w;
    float* d0 = dx + 2 * oy * g.w;
    float* d1 = d0 + g.w;
    const float* grad = dy + oy * g.ow;
    int64_t ox = 0;
    for (; ox + 8 <= g.ow; ox += 8) {
      const Vec8 t0 = load8(r0 + 2 * ox), t1 = load8(r0 + 2 * ox + 8);
      const Vec8 b0 = load8(r1 + 2 * ox), b1 = load8(r1 + 2 * ox + 8);
      if constexpr (!kNaN) sum += (t0 + t1) + (b0 + b1);
      Vec8 ga, gb, gc, gd;
      route_first_max<kNaN>(even_lanes(t0, t1), odd_lanes(t0, t1), even_lanes(b0, b1), odd_lanes(b0, b1),
                            load8(grad + ox), &ga, &gb, &gc, &gd);
      store8(d0 + 2 * ox, interleave_low(ga, gb));
      store8(d0 + 2 * ox + 8, interleave_high(ga, gb));
      store8(d1 + 2 * ox, interleave_low(gc, gd));
      store8(d1 + 2 * ox + 8, interleave_high(gc, gd));
    }
    for (; ox < g.ow; ++ox) {
      // The last windows of a row go through lane 0 of the same rule.
      const Vec8 a = {r0[2 * ox]}, b = {r0[2 * ox + 1]}, c = {r1[2 * ox]}, d = {r1[2 * ox + 1]};
      if constexpr (!kNaN) sum += (a + b) + (c + d);
      Vec8 ga, gb, gc, gd;
      route_first_max<kNaN>(a, b, c, d, Vec8{grad[ox]}, &ga, &gb, &gc, &gd);
      d0[2 * ox] = ga[0];
      d0[2 * ox + 1] = gb[0];
      d1[2 * ox] = gc[0];
      d1[2 * ox + 1] = gd[0];
    }
  }
  bool any = false;
  for (int lane = 0; lane < 8; ++lane) any |= sum[lane] != sum[lane];
  return any;
}

void max_pool_2x2_grad(const ConvGeometry& g, const float* in, const float* dy, float* dx) {
  if (max_pool_2x2_grad_rows<false>(g, in, dy, dx)) max_pool_2x2_grad_rows<true>(g, in, dy, dx);
}

}  // namespace

void max_pool2d_planes(const ConvGeometry& g, const float* x, float* y, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* in = x + p * g.h * g.w;
    float* out = y + p * g.oh * g.ow;
    if (is_2x2_stride2(g)) {
      max_pool_2x2(g, in, out);
      continue;
    }
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) out[oy * g.ow + ox] = in[window_argmax(g, in, oy, ox)];
  }
}

void max_pool2d_grad_planes(const ConvGeometry& g, const float* x, const float* dy, float* dx, int64_t p0,
                            int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* in = x + p * g.h * g.w;
    const float* grad = dy + p * g.oh * g.ow;
    float* out = dx + p * g.h * g.w;
    if (is_2x2_stride2(g)) {
      // Windows tile the plane; only an odd last row or column is left for the zero fill.
      if (g.h != 2 * g.oh || g.w != 2 * g.ow) std::fill(out, out + g.h * g.w, 0.0f);
      max_pool_2x2_grad(g, in, grad, out);
      continue;
    }
    std::fill(out, out + g.h * g.w, 0.0f);
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) out[window_argmax(g, in, oy, ox)] += grad[oy * g.ow + ox];
  }
}

void avg_pool2d_planes(const ConvGeometry& g, const float* x, float* y, int64_t p0, int64_t p1) {
  // Padding counts in the divisor, as torch's default count_include_pad=True.
  const float scale = 1.0f / static_cast<float>(g.kh * g.kw);
  for (int64_t p = p0; p < p1; ++p) {
    const float* in = x + p * g.h * g.w;
    float* out = y + p * g.oh * g.ow;
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        const Window w = window(g, oy, ox);
        float sum = 0.0f;
        for (int64_t iy = w.y0; iy < w.y1; ++iy)
          for (int64_t ix = w.x0; ix < w.x1; ++ix) sum += in[iy * g.w + ix];
        out[oy * g.ow + ox] = sum * scale;
      }
  }
}

void avg_pool2d_grad_planes(const ConvGeometry& g, const float* dy, float* dx, int64_t p0, int64_t p1) {
  const float scale = 1.0f / static_cast<float>(g.kh * g.kw);
  for (int64_t p = p0; p < p1; ++p) {
    const float* grad = dy + p * g.oh * g.ow;
    float* out = dx + p * g.h * g.w;
    std::fill(out, out + g.h * g.w, 0.0f);
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        const Window w = window(g, oy, ox);
        const float share = grad[oy * g.ow + ox] * scale;
        for (int64_t iy = w.y0; iy < w.y1; ++iy)
          for (int64_t ix = w.x0; ix < w.x1; ++ix) out[iy * g.w + ix] += share;
      }
  }
}

void max_pool2d(const ExecContext& ctx, const ConvGeometry& g, const float* x, float* y) {
  for_plane_ranges(ctx, g, [&](int64_t p0, int64_t p1) { max_pool2d_planes(g, x, y, p0, p1); });
}

void max_pool2d_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy, float* dx) {
  for_plane_ranges(ctx, g, [&](int64_t p0, int64_t p1) { max_pool2d_grad_planes(g, x, dy, dx, p0, p1); });
}

void avg_pool2d(const ExecContext& ctx, const ConvGeometry& g, const float* x, float* y) {
  for_plane_ranges(ctx, g, [&](int64_t p0, int64_t p1) { avg_pool2d_planes(g, x, y, p0, p1); });
}

void avg_pool2d_grad(const ExecContext& ctx, const ConvGeometry& g, const float* dy, float* dx) {
  for_plane_ranges(ctx, g, [&](int64_t p0, int64_t p1) { avg_pool2d_grad_planes(g, dy, dx, p0, p1); });
}

}  // namespace gometal
