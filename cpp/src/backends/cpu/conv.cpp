#include "backends/cpu/conv.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backends/cpu/conv_channel_forward.h"
#include "backends/cpu/conv_channel_grad.h"
#include "backends/cpu/conv_channel_input_grad.h"
#include "backends/cpu/conv_direct.h"
#include "backends/cpu/conv_nchwc.h"
#include "backends/cpu/conv_simd.h"
#include "backends/cpu/conv_winograd.h"
#include "backends/cpu/conv_winograd_grad.h"
#include "backends/cpu/gemm.h"
#include "runtime/finite.h"

namespace gometal {
namespace {

// A 1x1 convolution with unit stride and no padding reads its input as the im2col matrix.
bool is_pointwise(const ConvGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

// col (patch, oh*ow) from one group's channels of one image (C/groups, H, W).
void im2col(const ConvGeometry& g, const float* x, float* col) {
  const int64_t plane = g.out_plane();
  for (int64_t c = 0; c < g.c_per_group(); ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        float* row = col + ((c * g.kh + ki) * g.kw + kj) * plane;
        const float* xc = x + c * g.h * g.w;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ki * g.dh;
          float* out = row + oy * g.ow;
          if (iy < 0 || iy >= g.h) {
            std::fill(out, out + g.ow, 0.0f);
            continue;
          }
          const float* xr = xc + iy * g.w;
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            const int64_t ix = ox * g.sw - g.pw + kj * g.dw;
            out[ox] = ix >= 0 && ix < g.w ? xr[ix] : 0.0f;
          }
        }
      }
}

// The adjoint of im2col: accumulates col back into one group's channels of dx.
void col2im(const ConvGeometry& g, const float* col, float* dx) {
  const int64_t plane = g.out_plane();
  for (int64_t c = 0; c < g.c_per_group(); ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const float* row = col + ((c * g.kh + ki) * g.kw + kj) * plane;
        float* dc = dx + c * g.h * g.w;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ki * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          float* dr = dc + iy * g.w;
          const float* in = row + oy * g.ow;
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            const int64_t ix = ox * g.sw - g.pw + kj * g.dw;
            if (ix >= 0 && ix < g.w) dr[ix] += in[ox];
          }
        }
      }
}

// The gemm operand for one group of one image: the input itself for a pointwise conv,
// else its im2col matrix, written to `scratch`.
const float* group_columns(const ConvGeometry& g, const float* xg, float* scratch) {
  if (is_pointwise(g)) return xg;
  im2col(g, xg, scratch);
  return scratch;
}

// Runs fn(image, thread) over the batch, each image a task claimed by the next free thread.
template <class F>
void for_each_image(const ExecContext& ctx, int64_t images, F&& fn) {
  ctx.pool->parallel_for(static_cast<int>(images), [&](int n, int thread) { fn(n, thread); });
}

// The direct kernels matched or beat im2col + BLAS on every unit-stride shape measured (up
// to 1.5x on the small-channel layers of a CNN); a pointwise convolution is a plain gemm.
// The forward pass and the stride-1 input gradient run conv_simd's register tiles.
bool use_direct(const ConvGeometry& g) { return !is_pointwise(g) && conv2d_simd_supported(g); }

// The direct weight gradient wins on planes of 1,024 pixels and more (1.2-1.3x at 32x32
// with 16->32 channels, 2 threads), where BLAS gets a long, thin product; on small planes
// with many channels BLAS's blocking keeps more in cache, so it stays on im2col + gemm
// (AVX-512's 4x6 tiles only tie with it on 16x16 planes with 32->64 channels).
bool use_direct_weight_grad(const ConvGeometry& g) {
  return !is_pointwise(g) && conv2d_direct_weight_grad_supported(g) && g.out_plane() >= 1024;
}

// The channel-lane weight gradient (output channels across the vector lanes) beat both on
// 3x3 layers of more than 16 output channels (1 thread, CPU ms: 16->32 at 32x32 3.4 -> 2.4,
// 32->64 at 16x16 4.1 -> 2.6); with one vector of channels it ties the direct kernel.
bool use_channel_weight_grad(const ConvGeometry& g) {
  return conv2d_channel_weight_grad_supported(g) && (g.o > 16 || !use_direct_weight_grad(g));
}

// The im2col + BLAS weight gradient sums its images in this many fixed chunks, each a
// task with its own partial, added in chunk order: results do not depend on which thread
// ran which chunk.
constexpr int64_t kWeightGradChunks = 8;

int64_t weight_grad_chunks(const ConvGeometry& g) { return std::min<int64_t>(kWeightGradChunks, g.n); }

// Scratch a weight-gradient task uses: the direct kernel's tap offsets and lane sums for
// its output channels, or im2col columns.
int64_t fallback_work_floats(const ConvGeometry& g) {
  if (use_channel_weight_grad(g)) return conv2d_channel_weight_grad_scratch(g);
  if (use_direct_weight_grad(g)) return conv2d_direct_weight_grad_scratch(g);
  return is_pointwise(g) ? 0 : g.patch() * g.out_plane();
}

// Winograd's tiles (conv_winograd_grad.h) fall back on the kernel the shape would take else.
// Plans size their scratch for every kernel a shape may run, whether or not it is chosen now:
// the choice reads GOMETAL_CONV_WINOGRAD(_GRAD) at each run, and a variable set between two
// runs of one plan must not let a kernel write past scratch sized for another.
int64_t weight_grad_work_floats(const ConvGeometry& g) {
  return std::max(conv2d_winograd_weight_grad_scratch(g), fallback_work_floats(g));
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The weights of the forward convolution that computes g's input gradient (see
// input_grad_as_forward): each group's (O/g, C/g) axes swapped and the window flipped.
void flip_transposed_weights(const ConvGeometry& g, const float* w, float* flipped) {
  const int64_t window = g.kh * g.kw, cg = g.c_per_group(), og = g.o_per_group();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t o = 0; o < og; ++o) {
        const float* src = w + ((gi * og + o) * cg + c) * window;
        float* dst = flipped + ((gi * cg + c) * og + o) * window;
        for (int64_t t = 0; t < window; ++t) dst[t] = src[window - 1 - t];
      }
}

// The channel-lane input gradient (conv_channel_input_grad.h) against the flipped-weight
// forward tiles, 1 thread, batch 32, CPU ms: 16<-32 at 32x32 3.09 -> 2.80, 32<-64 at 16x16
// 2.98 -> 2.68, 128<-128 at 8x8 2.98 -> 1.49; it loses where a vector of 16 input channels is
// partly idle (3, 8 or 24 channels: 0.46-0.82x), so it takes 16 and more, 4/5 of whole vectors.
bool use_channel_input_grad(const ConvGeometry& g) {
  return conv2d_channel_input_grad_supported(g) && g.c >= 16 && 5 * g.c >= 4 * round_up(g.c, 16);
}

// Floats of scratch the flipped weights take ahead of the forward kernel's own.
int64_t flipped_weights_floats(const ConvGeometry& g) { return round_up(g.o * g.patch(), 16); }

// The epilogue over one image's outputs (O, OH*OW), for the paths that write plain sums.
void apply_epilogue(const ConvGeometry& g, const ConvEpilogue& e, float* y) {
  for (int64_t o = 0; o < g.o; ++o) {
    float* plane = y + o * g.out_plane();
    for (int64_t i = 0; i < g.out_plane(); ++i) {
      float v = plane[i];
      if (e.bias) v += e.bias[o];
      if (e.scale) v *= e.scale[o];
      if (e.shift) v += e.shift[o];
      plane[i] = e.relu ? std::max(v, 0.0f) : v;
    }
  }
}

}  // namespace

bool conv2d_forward_pools(const ConvGeometry& g) { return use_direct(g) || conv2d_nchwc_chosen(g); }

int64_t conv2d_weight_grad_shared(const ConvGeometry& g) {
  const int64_t winograd = conv2d_winograd_weight_grad_shared(g);  // 0 where the tiles cannot run
  if (use_channel_weight_grad(g)) return std::max(winograd, conv2d_channel_weight_grad_shared(g));
  if (use_direct_weight_grad(g)) return std::max(winograd, g.n * conv2d_direct_padded_image_floats(g));
  return std::max(winograd, weight_grad_chunks(g) * g.o * g.patch());
}

int64_t conv2d_scratch(const ConvGeometry& g, bool weight_grad) {
  // The switches are read here too, on the thread building the plan, so that a bad value
  // raises now instead of inside a pool task (which cannot carry an exception back).
  (void)(weight_grad ? conv2d_winograd_weight_grad_chosen(g) : conv2d_winograd_input_grad_chosen(g));
  if (weight_grad) {
    const bool lane_sums = use_direct_weight_grad(g) && !use_channel_weight_grad(g);
    return weight_grad_work_floats(g) + (lane_sums ? g.o * g.patch() * kMaxWeightGradLanes : 0);
  }
  const int64_t col = is_pointwise(g) ? 0 : g.patch() * g.out_plane();
  ConvGeometry f;  // every input-gradient kernel the shape may run (see weight_grad_work_floats)
  int64_t input_grad = conv2d_winograd_input_grad_scratch(g);
  if (conv2d_channel_input_grad_supported(g)) input_grad = std::max(input_grad, conv2d_channel_input_grad_scratch(g));
  if (input_grad_as_forward(g, &f)) input_grad = std::max(input_grad, flipped_weights_floats(g) + conv2d_simd_scratch(f));
  const int64_t direct = std::max({conv2d_simd_scratch(g), input_grad, conv2d_nchwc_scratch(g),
                                   conv2d_channel_forward_scratch(g), conv2d_winograd_scratch(g)});
  return std::max(col, direct);
}

void conv2d_forward_samples(const ConvGeometry& g, const float* x, const float* w, float* y, int64_t n0, int64_t n1,
                            float* col, const ConvEpilogue& epilogue) {
  if (conv2d_winograd_chosen(g, epilogue)) return conv2d_winograd_forward_samples(g, x, w, y, n0, n1, col, epilogue);
  if (conv2d_nchwc_chosen(g)) return conv2d_nchwc_forward_samples(g, x, w, y, n0, n1, col, epilogue);
  if (conv2d_channel_forward_chosen(g, epilogue))
    return conv2d_channel_forward_samples(g, x, w, y, n0, n1, col, epilogue);
  const int64_t in_image = g.c * g.h * g.w;
  const int64_t out_image = g.o * (epilogue.max_pool_2x2 ? (g.oh / 2) * (g.ow / 2) : g.out_plane());
  if (use_direct(g)) {
    const ConvPath path = choose_conv_path();
    for (int64_t n = n0; n < n1; ++n)
      conv2d_simd_forward_image(path, g, x + n * in_image, w, y + n * out_image, col, epilogue);
    return;
  }
  if (epilogue.max_pool_2x2) throw std::logic_error("[conv2d] a pooling epilogue needs the direct kernel");
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const float* src = group_columns(g, x + n * in_image + gi * g.c_per_group() * g.h * g.w, col);
      // y[n, group] (O/g, OH*OW) = w[group] (O/g, patch) x col (patch, OH*OW)
      gemm_serial(false, false, g.o_per_group(), g.out_plane(), g.patch(), w + gi * g.o_per_group() * g.patch(),
                  g.patch(), src, g.out_plane(), 0.0f, y + n * out_image + gi * g.o_per_group() * g.out_plane(),
                  g.out_plane());
    }
  if (epilogue.bias || epilogue.scale || epilogue.shift || epilogue.relu)
    for (int64_t n = n0; n < n1; ++n) apply_epilogue(g, epilogue, y + n * out_image);
}

namespace {

// The tiles, lanes and flipped-weight kernels run a forward convolution over dy's zero
// padding: an infinite weight there gives 0 * Inf = NaN in border cells whose true sum has
// no such product. Non-finite weights take im2col's transpose, which sums only real pixels.
void input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, bool weights_finite, float* dx,
                        int64_t n0, int64_t n1, float* col) {
  if (weights_finite && conv2d_winograd_input_grad_chosen(g))
    return conv2d_winograd_input_grad_samples(g, dy, w, dx, n0, n1, col);
  if (weights_finite && use_channel_input_grad(g))
    return conv2d_channel_input_grad_samples(g, dy, w, dx, n0, n1, col);
  const int64_t in_image = g.c * g.h * g.w, out_image = g.o * g.out_plane();
  ConvGeometry as_forward;
  if (weights_finite && use_direct(g) && input_grad_as_forward(g, &as_forward)) {
    // The same register tiles as the forward pass, over dy with the flipped weights.
    float* flipped = col;
    flip_transposed_weights(g, w, flipped);
    const ConvPath path = choose_conv_path();
    for (int64_t n = n0; n < n1; ++n)
      conv2d_simd_forward_image(path, as_forward, dy + n * out_image, flipped, dx + n * in_image,
                                col + flipped_weights_floats(g));
    return;
  }
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      float* dxg = dx + n * in_image + gi * g.c_per_group() * g.h * g.w;
      float* dst = is_pointwise(g) ? dxg : col;
      // col (patch, OH*OW) = w[group]^T (patch, O/g) x dy[n, group] (O/g, OH*OW)
      gemm_serial(true, false, g.patch(), g.out_plane(), g.o_per_group(), w + gi * g.o_per_group() * g.patch(),
                  g.patch(), dy + n * out_image + gi * g.o_per_group() * g.out_plane(), g.out_plane(), 0.0f, dst,
                  g.out_plane());
      if (!is_pointwise(g)) {
        std::fill(dxg, dxg + g.c_per_group() * g.h * g.w, 0.0f);
        col2im(g, col, dxg);
      }
    }
}

bool weights_all_finite(const ConvGeometry& g, const float* w) { return all_finite(w, g.o * g.patch(), DType::F32); }

}  // namespace

void conv2d_input_grad_samples(const ConvGeometry& g, const float* dy, const float* w, float* dx, int64_t n0,
                               int64_t n1, float* col) {
  input_grad_samples(g, dy, w, weights_all_finite(g, w), dx, n0, n1, col);
}

void conv2d_forward(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* w, float* y,
                    const ConvEpilogue& epilogue) {
  if (conv2d_winograd_chosen(g, epilogue)) return conv2d_winograd_forward(ctx, g, x, w, y, epilogue);
  if (conv2d_nchwc_chosen(g)) return conv2d_nchwc_forward(ctx, g, x, w, y, epilogue);
  if (use_direct(g) && conv2d_simd_forward_in_parts(g, epilogue, ctx.pool->size()))
    return conv2d_simd_forward_parts(ctx, choose_conv_path(), g, x, w, y, epilogue);
  for_each_image(ctx, g.n, [&](int64_t n, int thread) {
    conv2d_forward_samples(g, x, w, y, n, n + 1, ctx.thread_scratch(thread), epilogue);
  });
}

void conv2d_input_grad(const ExecContext& ctx, const ConvGeometry& g, const float* dy, const float* w, float* dx) {
  const bool finite = weights_all_finite(g, w);
  for_each_image(ctx, g.n, [&](int64_t n, int thread) {
    input_grad_samples(g, dy, w, finite, dx, n, n + 1, ctx.thread_scratch(thread));
  });
}

// The direct kernel pads every image once into the shared workspace, then splits dw's
// output channels into tasks: each task sums all images in order for its channels, with
// its lane sums in the running thread's scratch.
void direct_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy, float* dw) {
  const int64_t in_image = g.c * g.h * g.w, padded_image = conv2d_direct_padded_image_floats(g);
  ctx.pool->parallel_for(static_cast<int>(g.n), [&](int n, int) {
    conv2d_direct_pad_image(g, x + n * in_image, ctx.shared + n * padded_image);
  });
  const int64_t work_floats = weight_grad_work_floats(g);
  const ConvPath path = choose_conv_path();
  const WeightGradTiles tiles = conv2d_direct_weight_grad_tiles(path, g);
  const int64_t blocks = (g.o + tiles.rows - 1) / tiles.rows;
  const int tasks = balanced_tasks(*ctx.pool, blocks);
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    float* scratch = ctx.thread_scratch(thread);
    float* lanes = scratch + work_floats;
    int64_t o_begin, o_end;
    split_range(g.o, tasks, task, tiles.rows, &o_begin, &o_end);
    if (o_begin >= o_end) return;
    const int64_t weights = (o_end - o_begin) * g.patch();
    std::fill_n(lanes, weights * tiles.lanes, 0.0f);
    conv2d_direct_weight_grad(path, g, ctx.shared, dy, o_begin, o_end, lanes, scratch);
    sum_lanes(lanes, weights, tiles.lanes, dw + o_begin * g.patch());
  });
}

void conv2d_weight_grad(const ExecContext& ctx, const ConvGeometry& g, const float* x, const float* dy, float* dw) {
  // Winograd's tiles, or where they leave a non-finite value, the kernel the shape takes else.
  if (conv2d_winograd_weight_grad_chosen(g) && conv2d_winograd_weight_grad(ctx, g, x, dy, dw)) return;
  if (use_channel_weight_grad(g)) return conv2d_channel_weight_grad(ctx, g, x, dy, dw);
  if (use_direct_weight_grad(g)) {
    direct_weight_grad(ctx, g, x, dy, dw);
    return;
  }
  const int64_t in_image = g.c * g.h * g.w, out_image = g.o * g.out_plane();
  const int64_t dw_floats = g.o * g.patch();
  const int64_t chunks = weight_grad_chunks(g);
  ctx.pool->parallel_for(static_cast<int>(chunks), [&](int chunk, int thread) {
    float* scratch = ctx.thread_scratch(thread);
    float* partial = ctx.shared + chunk * dw_floats;
    std::fill_n(partial, dw_floats, 0.0f);
    int64_t lo, hi;
    split_range(g.n, static_cast<int>(chunks), chunk, 1, &lo, &hi);
    for (int64_t n = lo; n < hi; ++n)
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float* src = group_columns(g, x + n * in_image + gi * g.c_per_group() * g.h * g.w, scratch);
        // dw[group] (O/g, patch) += dy[n, group] (O/g, OH*OW) x col^T (OH*OW, patch)
        gemm_serial(false, true, g.o_per_group(), g.patch(), g.out_plane(),
                    dy + n * out_image + gi * g.o_per_group() * g.out_plane(), g.out_plane(), src, g.out_plane(), 1.0f,
                    partial + gi * g.o_per_group() * g.patch(), g.patch());
      }
  });
  std::memcpy(dw, ctx.shared, dw_floats * sizeof(float));
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const float* partial = ctx.shared + chunk * dw_floats;
    for (int64_t i = 0; i < dw_floats; ++i) dw[i] += partial[i];
  }
}

}  // namespace gometal
