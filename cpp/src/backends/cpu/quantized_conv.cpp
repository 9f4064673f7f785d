// The int8 convolution kernel. The input is first copied channels-last (uint8, shifted if
// int8) with its padding written out as the zero point (a real zero), so each output pixel's
// row is KH runs of KW * C contiguous bytes: read in place when C is a multiple of 4 (every
// group of 4 bytes then lies within one tap), else copied as im2col rows without bounds
// checks; rows times the packed (O, KH * KW * C) weights go through int8_block's epilogue.
//
// Heading a merged step (quantized_chains.h), the convolution requantizes to the quantize's
// type and parameters in its epilogue, writes each image channels-last into scratch and
// max-pools it there: quantizing is monotonic, so pooling quantized values equals
// quantizing pooled ones, and the float32 values between are never stored. A 2x2 pooling
// whose epilogue never decreases (positive scales) takes the maximum of the int32 sums
// instead, each window's four pixels one after another in a block, so the epilogue runs
// once per pooled pixel. A pooled step runs image by image: the image is padded
// channels-last into the thread's scratch; a linked next stage (quantized_chains.h) reads
// the pooled bytes there, written straight into its own padded channels-last input; only
// the last stage writes NCHW. A quantize of
// the float32 input folded into the step (quantized_chains.h) runs image by image, into
// scratch, just before that image's copy.
#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "backends/cpu/quantized_product.h"
#include "ir/conv_geometry.h"

namespace gometal {
namespace {

constexpr int64_t kCopyChunk = 16;  // row copies move whole chunks (the buffers have slack)

// Copies n bytes in whole 16-byte chunks: up to 15 bytes past n on both sides are read and
// overwritten. A row's bytes past k multiply zero weights, and the next row is written after.
inline void copy_run(uint8_t* dst, const uint8_t* src, int64_t n) {
  for (int64_t i = 0; i < n; i += kCopyChunk) std::memcpy(dst + i, src + i, kCopyChunk);
}

// Where an image's output bytes go: element (o, y, x) at o * channel + y * row + x * pixel,
// XORed with flip (0x80 turns int8 values into the shifted uint8 a next convolution reads).
struct ImageLayout {
  int64_t channel, row, pixel;
  uint8_t flip;
};

// The byte stores below may alias anything: the loops read geometry from locals, which
// they cannot, so it stays in registers.
template <class T>
void max_pool_image(const T* conv, int64_t oh, int64_t ow, int64_t channels, const ConvGeometry& geometry,
                    uint8_t* out, const ImageLayout& layout, T* pixel) {
  const ConvGeometry pool = geometry;
  const ImageLayout to = layout;
  for (int64_t py = 0; py < pool.oh; ++py)
    for (int64_t px = 0; px < pool.ow; ++px) {
      uint8_t* dst = out + py * to.row + px * to.pixel;
      if (pool.kh == 1 && pool.kw == 1 && pool.sh == 1 && pool.sw == 1 && to.channel == 1) {
        // A copy into channels-last bytes (the stage pooled its sums already, or pools none).
        const T* at = conv + (py * ow + px) * channels;
        int64_t o = 0;
        for (; o + 16 <= channels; o += 16) {  // whole chunks of a fixed length vectorize
          uint8_t chunk[16];
          std::memcpy(chunk, at + o, sizeof chunk);
          for (uint8_t& byte : chunk) byte ^= to.flip;
          std::memcpy(dst + o, chunk, sizeof chunk);
        }
        for (; o < channels; ++o) dst[o] = static_cast<uint8_t>(at[o]) ^ to.flip;
        continue;
      }
      if (pool.kh == 2 && pool.kw == 2 && pool.sh == 2 && pool.sw == 2 && pool.ph == 0 && pool.pw == 0 &&
          to.channel == 1) {
        // The common 2x2 window into channels-last bytes: four contiguous runs of channels.
        const T* a = conv + (2 * py * ow + 2 * px) * channels;
        const T* b = a + ow * channels;
        for (int64_t o = 0; o < channels; ++o)
          dst[o] = static_cast<uint8_t>(std::max(std::max(a[o], a[o + channels]), std::max(b[o], b[o + channels]))) ^
                   to.flip;
        continue;
      }
      std::fill(pixel, pixel + channels, std::numeric_limits<T>::lowest());
      for (int64_t wy = 0; wy < pool.kh; ++wy) {
        const int64_t iy = py * pool.sh - pool.ph + wy * pool.dh;
        if (iy < 0 || iy >= oh) continue;  // padding never wins a max
        for (int64_t wx = 0; wx < pool.kw; ++wx) {
          const int64_t ix = px * pool.sw - pool.pw + wx * pool.dw;
          if (ix < 0 || ix >= ow) continue;
          const T* at = conv + (iy * ow + ix) * channels;
          for (int64_t o = 0; o < channels; ++o) pixel[o] = std::max(pixel[o], at[o]);
        }
      }
      for (int64_t o = 0; o < channels; ++o) dst[o * to.channel] = static_cast<uint8_t>(pixel[o]) ^ to.flip;
    }
}

// A window of one pixel: an unpooled stage's output copied to its destination by max_pool_image.
ConvGeometry identity_pool(int64_t oh, int64_t ow) {
  ConvGeometry p{};
  p.kh = p.kw = p.sh = p.sw = p.dh = p.dw = 1;
  p.oh = oh;
  p.ow = ow;
  return p;
}

// One image (C, H, W) copied channels-last into a padded (H + 2 ph, W + 2 pw, C) buffer whose
// border holds `pad`, each byte XORed with flip.
void pad_channels_last(const ConvGeometry& geometry, int64_t line, const uint8_t* src, uint8_t* dst, uint8_t pad,
                       uint8_t flip) {
  // Locals, not references: the byte stores may alias those.
  const ConvGeometry g = geometry;
  const uint8_t bits = flip;
  const int64_t plane = g.h * g.w, row_stride = line;
  if (g.ph > 0 || g.pw > 0) std::memset(dst, pad, static_cast<size_t>((g.h + 2 * g.ph) * row_stride * g.c));
  for (int64_t yy = 0; yy < g.h; ++yy) {
    uint8_t* row = dst + ((yy + g.ph) * row_stride + g.pw) * g.c;
    for (int64_t c = 0; c < g.c; ++c) {
      const uint8_t* from = src + c * plane + yy * g.w;
      for (int64_t xx = 0; xx < g.w; ++xx) row[xx * g.c + c] = static_cast<uint8_t>(from[xx] ^ bits);
    }
  }
}

int64_t round_64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

struct QuantizedConv2DKernel final : Int8ProductKernel {
  ConvGeometry geo;
  int64_t padded_h = 0, padded_w = 0;
  bool pooled = false;  // heads a merged step that max-pools
  ConvGeometry pool;
  // The next linked chain's convolution (quantized_chains.h), which reads this stage's
  // quantized values from scratch; y is then the last stage's.
  std::unique_ptr<QuantizedConv2DKernel> next;
  std::vector<const QuantizedConv2DKernel*> stages;  // this one, then every next
  mutable std::vector<Int8Weights> stage_weights;
  mutable std::vector<Int8Epilogue> stage_epilogues;
  std::vector<int64_t> group_offsets;  // rows read in place (plan_in_place_reads)
  // A quantize folded into the input copy (quantized_chains.h): x is then its float32 input,
  // quantized an image at a time into the thread's scratch by the quantize kernel's loop.
  struct InputQuantize {
    bool on = false, vectors = false;
    float scale = 1.0f;
    int32_t zero_point = 0;
    DType dtype = DType::U8;
  } input_quantize;

  bool runs_chain() const { return pooled || next; }
  int64_t image_bytes() const { return padded_h * padded_w * geo.c; }
  int64_t conv_image_bytes() const { return geo.out_plane() * channels * dtype_size(epilogue.out); }
  int64_t shared_floats() const override {
    return runs_chain() ? 0 : (geo.n * image_bytes() + 2 * kCopyChunk + 3) / 4;
  }
  int64_t scratch_floats() const override {
    return (runs_chain() ? chain_scratch_bytes() : std::max(row_buffer_bytes(), quantized_input_bytes())) / 4;
  }
  // Bytes of one input image quantized (none unless a quantize is folded in).
  int64_t quantized_input_bytes() const { return input_quantize.on ? round_64(geo.c * geo.h * geo.w) : 0; }

  // Asks for the float32 input of `image` (a folded quantize's) to be in L2 by the time the
  // stages of the image before it are done: read only then, it would wait on each line.
  void prefetch_input(const ExecContext& ctx, int64_t image) const {
    if (!input_quantize.on) return;
    const int64_t bytes = geo.c * geo.h * geo.w * static_cast<int64_t>(sizeof(float));
    const char* at = reinterpret_cast<const char*>(ctx.ptr(x) + image * geo.c * geo.h * geo.w);
    for (int64_t line = 0; line < bytes; line += 64) __builtin_prefetch(at + line, 0, 2);
  }

  // Input image `image` as bytes: in place, or quantized into `temp` when a quantize is folded in.
  const uint8_t* input_image(const ExecContext& ctx, int64_t image, uint8_t* temp) const {
    const int64_t bytes = geo.c * geo.h * geo.w;
    if (!input_quantize.on) return reinterpret_cast<const uint8_t*>(ctx.bytes(x)) + image * bytes;
    const InputQuantize& q = input_quantize;
    quantize_values(ctx.ptr(x) + image * bytes, 0, bytes, q.scale, q.zero_point, q.dtype, q.vectors, temp);
    return temp;
  }
  int64_t source_index(int64_t o, int64_t i) const override {
    const int64_t c = i % geo.c, tap = i / geo.c;  // tap = ky * KW + kx
    return o * k + c * geo.kh * geo.kw + tap;
  }

  uint8_t input_flip() const { return signed_input ? 0x80u : 0u; }

  // Image by image: the padding rows and columns hold the zero point, the rest the input
  // channels-last.
  void to_padded_channels_last(const ExecContext& ctx, uint8_t* nhwc, uint8_t pad) const {
    const int tasks = balanced_tasks(*ctx.pool, geo.n);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t begin, end;
      split_range(geo.n, tasks, task, 1, &begin, &end);
      auto* temp = reinterpret_cast<uint8_t*>(ctx.thread_scratch(thread));
      for (int64_t image = begin; image < end; ++image)
        pad_channels_last(geo, padded_w, input_image(ctx, image, temp), nhwc + image * image_bytes(), pad,
                          input_flip());
    });
  }

  // Where output pixel (oy, ox)'s window starts in a padded channels-last image.
  int64_t corner_of(int64_t oy, int64_t ox) const { return oy * geo.sh * padded_w * geo.c + ox * geo.sw * geo.c; }

  // The im2col rows of the output pixels whose windows start at corners[0, count) of one
  // padded channels-last image.
  void gather_rows(const uint8_t* image, const int64_t* corners, int64_t count, int64_t depth, uint8_t* rows) const {
    const ConvGeometry g = geo;
    const int64_t run = g.kw * g.c, line = padded_w * g.c;
    if (g.dw == 1 && run <= kCopyChunk) {
      // A tap row fits one chunk (3 input channels): one copy each, no inner loop.
      for (int64_t r = 0; r < count; ++r) {
        uint8_t* dst = rows + r * depth;
        const uint8_t* corner = image + corners[r];
        for (int64_t ky = 0; ky < g.kh; ++ky, dst += run) std::memcpy(dst, corner + ky * g.dh * line, kCopyChunk);
      }
      return;
    }
    for (int64_t r = 0; r < count; ++r) {
      uint8_t* dst = rows + r * depth;
      const uint8_t* corner = image + corners[r];
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        const uint8_t* src = corner + ky * g.dh * line;
        if (g.dw == 1) {
          copy_run(dst, src, run);
          dst += run;
        } else {
          for (int64_t kx = 0; kx < g.kw; ++kx, dst += g.c) copy_run(dst, src + kx * g.dw * g.c, g.c);
        }
      }
    }
  }

  // The output pixels whose windows start at corners[0, count) of one padded channels-last
  // image times the weights: read in place where each group of 4 bytes lies within one
  // tap's channels, else through im2col rows copied into `buffer`; `window` as int8_block's.
  void multiply_pixels(const uint8_t* image, const int64_t* corners, int64_t count, const Int8Weights& w,
                       const Int8Epilogue& e, uint8_t* buffer, char* out, int64_t row_stride, int64_t channel_stride,
                       int window = 1) const {
    if (group_offsets.empty()) {
      gather_rows(image, corners, count, w.depth, buffer);
      int8_block(w, buffer, count, e, out, row_stride, channel_stride, window);
      return;
    }
    const uint8_t* rows[kInt8RowBlock];
    for (int64_t r = 0; r < count; ++r) rows[r] = image + corners[r];
    int8_block_in_place(w, rows, group_offsets.data(), count, e, out, row_stride, channel_stride, window);
  }

  // Output pixels [p0, p0 + count) of one image, in order.
  void multiply_run(const uint8_t* image, int64_t p0, int64_t count, const Int8Weights& w, const Int8Epilogue& e,
                    uint8_t* buffer, char* out, int64_t row_stride, int64_t channel_stride) const {
    int64_t corners[kInt8RowBlock];
    for (int64_t r = 0, oy = p0 / geo.ow, ox = p0 % geo.ow; r < count; ++r) {
      corners[r] = corner_of(oy, ox);
      if (++ox == geo.ow) ox = 0, ++oy;
    }
    multiply_pixels(image, corners, count, w, e, buffer, out, row_stride, channel_stride);
  }

  // The in-place offsets of every group of 4 reduction bytes, (KH, KW, C) ordered, when the
  // path reads rows in place and the channels come in whole groups; else none.
  void plan_in_place_reads() {
    group_offsets.clear();
    if (!int8_reads_in_place(path) || geo.c % 4 != 0) return;
    const int64_t line = padded_w * geo.c;
    for (int64_t i = 0; i < k; i += 4) {
      const int64_t tap = i / geo.c, c = i % geo.c;
      group_offsets.push_back((tap / geo.kw) * geo.dh * line + (tap % geo.kw) * geo.dw * geo.c + c);
    }
  }

  void run(const ExecContext& ctx) const override {
    if (runs_chain()) {
      run_chain(ctx);
      return;
    }
    Int8Epilogue e;
    const Int8Weights packed_weights = pack(ctx, &e);
    auto* nhwc = reinterpret_cast<uint8_t*>(ctx.shared);
    to_padded_channels_last(ctx, nhwc, static_cast<uint8_t>(e.zero_point));
    char* out = ctx.bytes(y);
    const int64_t out_size = dtype_size(e.out);
    const int64_t plane = geo.out_plane();
    const int64_t per_image = (plane + kInt8RowBlock - 1) / kInt8RowBlock;
    const int64_t blocks = geo.n * per_image;
    const int tasks = balanced_tasks(*ctx.pool, blocks);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t begin, end;
      split_range(blocks, tasks, task, 1, &begin, &end);
      uint8_t* buffer = rows_of(ctx, thread);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t image = block / per_image, p0 = (block % per_image) * kInt8RowBlock;
        const int64_t count = std::min(kInt8RowBlock, plane - p0);
        multiply_run(nhwc + image * image_bytes(), p0, count, packed_weights, e, buffer,
                     out + (image * channels * plane + p0) * out_size, 1, plane);
      }
    });
  }

  // The stage's output image: pooled, or the convolution's own plane.
  int64_t result_h() const { return pooled ? pool.oh : geo.oh; }
  int64_t result_w() const { return pooled ? pool.ow : geo.ow; }
  // Per-thread bytes of one stage's work: its row buffer, then its channels-last output
  // image and a pixel of pooling maxima.
  int64_t stage_bytes() const { return row_buffer_bytes() + round_64(conv_image_bytes() + channels); }
  // Bytes of a padded channels-last input image in scratch, with the slack whole-chunk
  // row copies read past its end.
  int64_t padded_image_bytes() const { return round_64(image_bytes() + 2 * kCopyChunk); }

  // One padded channels-last image times the weights, into channels-last `conv`.
  void convolve_image(const Int8Weights& w, const Int8Epilogue& e, const uint8_t* padded, uint8_t* rows,
                      char* conv) const {
    const int64_t plane = geo.out_plane(), out_size = dtype_size(e.out);
    for (int64_t p0 = 0; p0 < plane; p0 += kInt8RowBlock) {
      const int64_t count = std::min(kInt8RowBlock, plane - p0);
      multiply_run(padded, p0, count, w, e, rows, conv + p0 * channels * out_size, channels, 1);
    }
  }

  // Whether this run pools the int32 sums before the epilogue: a 2x2 window of stride 2 inside
  // the plane, and an epilogue that never decreases (its scales positive and finite), so the
  // quantized maximum is the maximum's quantized value, computed once instead of four times.
  bool pools_sums(const Int8Epilogue& e) const {
    const ConvGeometry& p = pool;
    if (!pooled || p.kh != 2 || p.kw != 2 || p.sh != 2 || p.sw != 2 || p.ph != 0 || p.pw != 0 || p.dh != 1 ||
        p.dw != 1 || 2 * p.oh > geo.oh || 2 * p.ow > geo.ow)
      return false;
    const auto positive = [](float v) { return v > 0.0f && v < std::numeric_limits<float>::infinity(); };
    if (!positive(e.output_scale)) return false;
    for (int64_t o = 0; o < channels; ++o)
      if (!positive(e.scale[o])) return false;
    return true;
  }

  // pools_sums' image: the four pixels of each 2x2 window are consecutive rows of a block,
  // and each window's epilogue goes into channels-last `conv` of the pooled plane.
  void convolve_windows(const Int8Weights& w, const Int8Epilogue& e, const uint8_t* padded, uint8_t* rows,
                        char* conv) const {
    constexpr int64_t kWindow = 4, kWindowsPerBlock = kInt8RowBlock / kWindow;
    const int64_t windows = pool.oh * pool.ow, out_size = dtype_size(e.out);
    const int64_t right = corner_of(0, 1), below = corner_of(1, 0);
    int64_t corners[kInt8RowBlock];
    for (int64_t w0 = 0, py = 0, px = 0; w0 < windows; w0 += kWindowsPerBlock) {
      const int64_t count = std::min(kWindowsPerBlock, windows - w0);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t top = corner_of(2 * py, 2 * px);
        const int64_t window[kWindow] = {top, top + right, top + below, top + below + right};
        std::copy(window, window + kWindow, corners + kWindow * i);
        if (++px == pool.ow) px = 0, ++py;
      }
      multiply_pixels(padded, corners, kWindow * count, w, e, rows, conv + w0 * channels * out_size, channels, 1,
                      kWindow);
    }
  }

  // `conv` (conv_h x conv_w pixels) pooled by `window` into `out`, laid out as `to`.
  void store_image(const Int8Epilogue& e, const char* conv, int64_t conv_h, int64_t conv_w, const ConvGeometry& window,
                   char* pixel, uint8_t* out, const ImageLayout& to) const {
    if (e.out == DType::U8)
      max_pool_image(reinterpret_cast<const uint8_t*>(conv), conv_h, conv_w, channels, window, out, to,
                     reinterpret_cast<uint8_t*>(pixel));
    else
      max_pool_image(reinterpret_cast<const int8_t*>(conv), conv_h, conv_w, channels, window, out, to,
                     reinterpret_cast<int8_t*>(pixel));
  }

  // One stage of an image: convolved (and pooled) into channels-last `conv`, then stored to `out` as `to`.
  void run_stage(const Int8Weights& w, const Int8Epilogue& e, const uint8_t* padded, uint8_t* rows, char* conv,
                 char* pixel, uint8_t* out, const ImageLayout& to) const {
    if (pools_sums(e)) {
      convolve_windows(w, e, padded, rows, conv);
      store_image(e, conv, pool.oh, pool.ow, identity_pool(pool.oh, pool.ow), pixel, out, to);
      return;
    }
    convolve_image(w, e, padded, rows, conv);
    store_image(e, conv, geo.oh, geo.ow, pooled ? pool : identity_pool(geo.oh, geo.ow), pixel, out, to);
  }

  // Images are the tasks: each is padded channels-last into scratch and goes through every
  // stage there, each stage writing the next one's padded input, the last one y (NCHW).
  void run_chain(const ExecContext& ctx) const {
    for (size_t s = 0; s < stages.size(); ++s) stage_weights[s] = stages[s]->pack(ctx, &stage_epilogues[s]);
    const int64_t buffer_bytes = chain_buffer_bytes();
    const int tasks = balanced_tasks(*ctx.pool, geo.n);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t begin, end;
      split_range(geo.n, tasks, task, 1, &begin, &end);
      auto* scratch = reinterpret_cast<uint8_t*>(ctx.thread_scratch(thread));
      uint8_t* buffers[2] = {scratch, scratch + buffer_bytes};
      uint8_t* rows = scratch + 2 * buffer_bytes;
      uint8_t* temp = scratch + chain_scratch_bytes() - quantized_input_bytes();
      for (int64_t image = begin; image < end; ++image) {
        if (image + 1 < end) prefetch_input(ctx, image + 1);
        pad_channels_last(geo, padded_w, input_image(ctx, image, temp), buffers[0],
                          static_cast<uint8_t>(stage_epilogues[0].zero_point), input_flip());
        for (size_t s = 0; s < stages.size(); ++s) {
          const QuantizedConv2DKernel& stage = *stages[s];
          char* conv = reinterpret_cast<char*>(rows) + stage.row_buffer_bytes();
          char* pixel = conv + stage.conv_image_bytes();
          if (s + 1 == stages.size()) {
            const int64_t plane = stage.result_h() * stage.result_w();
            auto* out = reinterpret_cast<uint8_t*>(ctx.bytes(stage.y)) + image * stage.channels * plane;
            stage.run_stage(stage_weights[s], stage_epilogues[s], buffers[s % 2], rows, conv, pixel, out,
                            {plane, stage.result_w(), 1, 0});
            continue;
          }
          const QuantizedConv2DKernel& next_stage = *stages[s + 1];
          const ConvGeometry& ng = next_stage.geo;
          uint8_t* padded = buffers[(s + 1) % 2];
          std::memset(padded, static_cast<uint8_t>(stage_epilogues[s + 1].zero_point),
                      static_cast<size_t>(next_stage.image_bytes()));
          const ImageLayout to{1, next_stage.padded_w * ng.c, ng.c, next_stage.input_flip()};
          stage.run_stage(stage_weights[s], stage_epilogues[s], buffers[s % 2], rows, conv, pixel,
                          padded + (ng.ph * next_stage.padded_w + ng.pw) * ng.c, to);
        }
      }
    });
  }

  int64_t chain_buffer_bytes() const {
    int64_t most = 0;
    for (const QuantizedConv2DKernel* stage : stages) most = std::max(most, stage->padded_image_bytes());
    return most;
  }
  int64_t chain_scratch_bytes() const {
    int64_t most = 0;
    for (const QuantizedConv2DKernel* stage : stages) most = std::max(most, stage->stage_bytes());
    return 2 * chain_buffer_bytes() + most + quantized_input_bytes();
  }

  // After `next` is set: the stages this kernel runs, and room for their per-run state.
  void link() {
    stages.clear();
    for (const QuantizedConv2DKernel* stage = this; stage; stage = stage->next.get()) stages.push_back(stage);
    stage_weights.resize(stages.size());
    stage_epilogues.resize(stages.size());
  }
};

// The node reading `value` in this plan (readers outside the function have no shape here).
int reader_of(const Graph& g, int value, const std::vector<Shape>& shapes) {
  for (int i = 0; i < g.size(); ++i) {
    const std::vector<int>& in = g.node(i).inputs;
    if (!shapes[i].empty() && std::find(in.begin(), in.end(), value) != in.end()) return i;
  }
  return -1;
}

}  // namespace

namespace {

std::unique_ptr<QuantizedConv2DKernel> make_stage(const Graph& g, int id, const MemoryPlan& mem,
                                                  const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  auto k = std::make_unique<QuantizedConv2DKernel>();
  fill_product(*k, g, n, mem, id);
  k->geo = conv_geometry(op_name(n.op), shapes[n.inputs[0]], &shapes[n.inputs[1]], n.attrs);
  k->padded_h = k->geo.h + 2 * k->geo.ph;
  k->padded_w = k->geo.w + 2 * k->geo.pw;
  k->k = k->geo.patch();
  k->channels = k->geo.o;
  k->plan_in_place_reads();
  if (mem.ref[id].region == Region::None) {
    // A merged step (quantized_chains.h): [max_pool2d,] quantize, whose parameters the
    // epilogue takes; only the quantize's value has a buffer, unless a next chain's
    // convolution reads it from scratch.
    int next = reader_of(g, id, shapes);
    if (next >= 0 && g.node(next).op == OpKind::MaxPool2D) {
      k->pooled = true;
      k->pool = conv_geometry(op_name(OpKind::MaxPool2D), shapes[id], nullptr, g.node(next).attrs);
      next = reader_of(g, next, shapes);
    }
    while (next >= 0 && g.node(next).op == OpKind::Reshape) next = reader_of(g, next, shapes);
    if (next < 0 || g.node(next).op != OpKind::Quantize)
      throw std::logic_error("[cpu] quantized_conv2d: the merged step's chain is broken");
    const Node& q = g.node(next);
    k->epilogue.out = q.dtype;
    k->epilogue.output_scale = q.attrs.scale;
    k->epilogue.output_zero_point = static_cast<int32_t>(q.attrs.zero_point);
    if (mem.ref[next].region == Region::None) {
      const int conv = reader_of(g, next, shapes);
      if (conv < 0 || g.node(conv).op != OpKind::QuantizedConv2D || mem.ref[conv].region != Region::None)
        throw std::logic_error("[cpu] quantized_conv2d: the linked chain is broken");
      k->next = make_stage(g, conv, mem, shapes);
    } else {
      k->y = mem.ref[next];
    }
  }
  k->reserve();
  return k;
}

}  // namespace

std::unique_ptr<Kernel> make_quantized_conv2d_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                     const std::vector<Shape>& shapes) {
  auto k = make_stage(g, id, mem, shapes);
  k->link();
  return k;
}

std::unique_ptr<Kernel> make_input_quantizing_conv2d_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                            const std::vector<Shape>& shapes) {
  const int conv = reader_of(g, id, shapes);
  if (conv < 0 || g.node(conv).op != OpKind::QuantizedConv2D || g.node(conv).inputs[0] != id)
    throw std::logic_error("[cpu] quantize: the folded convolution is missing");
  auto k = make_stage(g, conv, mem, shapes);
  const Node& q = g.node(id);
  k->x = mem.ref[q.inputs[0]];
  k->input_quantize = {true, quantize_uses_vectors(), q.attrs.scale, static_cast<int32_t>(q.attrs.zero_point), q.dtype};
  k->link();
  return k;
}

}  // namespace gometal
