// The int8 convolution kernel. The input is first copied channels-last (uint8, shifted if
// int8) with its padding written out as the zero point (a real zero), so each im2col row is
// KH runs of KW * C contiguous bytes copied without bounds checks; rows times the packed
// (O, KH * KW * C) weights go through int8_block's epilogue.
//
// Heading a merged step (quantized_chains.h), the convolution requantizes to the quantize's
// type and parameters in its epilogue, writes each image channels-last into scratch and
// max-pools it there: quantizing is monotonic, so pooling quantized values equals
// quantizing pooled ones, and the float32 values between are never stored.
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

// The byte stores below may alias anything: the loops read geometry from locals, which
// they cannot, so it stays in registers.
template <class T>
void max_pool_image(const T* conv, int64_t oh, int64_t ow, int64_t channels, const ConvGeometry& geometry, T* out,
                    T* pixel) {
  const ConvGeometry pool = geometry;
  const int64_t plane = pool.oh * pool.ow;
  for (int64_t py = 0; py < pool.oh; ++py)
    for (int64_t px = 0; px < pool.ow; ++px) {
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
      for (int64_t o = 0; o < channels; ++o) out[o * plane + py * pool.ow + px] = pixel[o];
    }
}

struct QuantizedConv2DKernel final : Int8ProductKernel {
  ConvGeometry geo;
  int64_t padded_h = 0, padded_w = 0;
  bool pooled = false;  // heads a merged step that max-pools
  ConvGeometry pool;

  int64_t image_bytes() const { return padded_h * padded_w * geo.c; }
  int64_t conv_image_bytes() const { return geo.out_plane() * channels * dtype_size(epilogue.out); }
  int64_t shared_floats() const override { return (geo.n * image_bytes() + 2 * kCopyChunk + 3) / 4; }
  int64_t scratch_floats() const override {
    const int64_t pooled_bytes = pooled ? (conv_image_bytes() + channels + 63) / 64 * 64 : 0;
    return (row_buffer_bytes() + pooled_bytes) / 4;
  }
  int64_t source_index(int64_t o, int64_t i) const override {
    const int64_t c = i % geo.c, tap = i / geo.c;  // tap = ky * KW + kx
    return o * k + c * geo.kh * geo.kw + tap;
  }

  // Image by image: the padding rows and columns hold the zero point, the rest the input
  // channels-last.
  void to_padded_channels_last(const ExecContext& ctx, uint8_t* nhwc, uint8_t pad) const {
    const auto* in = reinterpret_cast<const uint8_t*>(ctx.bytes(x));
    const uint8_t flip = signed_input ? 0x80u : 0u;
    const ConvGeometry geometry = geo;
    const int64_t bytes = image_bytes(), row_stride = padded_w;
    const int tasks = balanced_tasks(*ctx.pool, geo.n);
    ctx.pool->parallel_for(tasks, [&](int task, int) {
      // Locals, not the closure's references: the byte stores may alias those.
      const ConvGeometry g = geometry;
      const uint8_t bits = flip;
      const int64_t plane = g.h * g.w, image_size = bytes, line = row_stride;
      uint8_t* const base = nhwc;
      int64_t begin, end;
      split_range(g.n, tasks, task, 1, &begin, &end);
      for (int64_t image = begin; image < end; ++image) {
        const uint8_t* src = in + image * g.c * plane;
        uint8_t* dst = base + image * image_size;
        if (g.ph > 0 || g.pw > 0) std::memset(dst, pad, static_cast<size_t>(image_size));
        for (int64_t yy = 0; yy < g.h; ++yy) {
          uint8_t* row = dst + ((yy + g.ph) * line + g.pw) * g.c;
          for (int64_t c = 0; c < g.c; ++c) {
            const uint8_t* from = src + c * plane + yy * g.w;
            for (int64_t xx = 0; xx < g.w; ++xx) row[xx * g.c + c] = static_cast<uint8_t>(from[xx] ^ bits);
          }
        }
      }
    });
  }

  // The im2col rows of output pixels [p0, p0 + count) of one padded channels-last image.
  void gather_rows(const uint8_t* image, int64_t p0, int64_t count, int64_t depth, uint8_t* rows) const {
    const ConvGeometry g = geo;
    const int64_t run = g.kw * g.c, line = padded_w * g.c;
    int64_t oy = p0 / g.ow, ox = p0 % g.ow;
    for (int64_t r = 0; r < count; ++r, ++ox) {
      if (ox == g.ow) {
        ox = 0;
        ++oy;
      }
      uint8_t* dst = rows + r * depth;
      const uint8_t* corner = image + oy * g.sh * line + ox * g.sw * g.c;
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

  void run(const ExecContext& ctx) const override {
    Int8Epilogue e;
    const Int8Weights packed_weights = pack(ctx, &e);
    auto* nhwc = reinterpret_cast<uint8_t*>(ctx.shared);
    to_padded_channels_last(ctx, nhwc, static_cast<uint8_t>(e.zero_point));
    if (pooled) {
      run_pooled(ctx, packed_weights, e, nhwc);
      return;
    }
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
        gather_rows(nhwc + image * image_bytes(), p0, count, packed_weights.depth, buffer);
        int8_block(packed_weights, buffer, count, e, out + (image * channels * plane + p0) * out_size, 1, plane);
      }
    });
  }

  // Images are the tasks: each convolves into channels-last scratch, then pools into y.
  void run_pooled(const ExecContext& ctx, const Int8Weights& packed_weights, const Int8Epilogue& e,
                  const uint8_t* nhwc) const {
    char* out = ctx.bytes(y);
    const int64_t plane = geo.out_plane(), out_size = dtype_size(e.out);
    const int64_t pooled_image = channels * pool.oh * pool.ow * out_size;
    const int tasks = balanced_tasks(*ctx.pool, geo.n);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t begin, end;
      split_range(geo.n, tasks, task, 1, &begin, &end);
      uint8_t* buffer = rows_of(ctx, thread);
      char* conv = reinterpret_cast<char*>(buffer) + row_buffer_bytes();
      char* pixel = conv + conv_image_bytes();
      for (int64_t image = begin; image < end; ++image) {
        for (int64_t p0 = 0; p0 < plane; p0 += kInt8RowBlock) {
          const int64_t count = std::min(kInt8RowBlock, plane - p0);
          gather_rows(nhwc + image * image_bytes(), p0, count, packed_weights.depth, buffer);
          int8_block(packed_weights, buffer, count, e, conv + p0 * channels * out_size, channels, 1);
        }
        char* dst = out + image * pooled_image;
        if (e.out == DType::U8)
          max_pool_image(reinterpret_cast<const uint8_t*>(conv), geo.oh, geo.ow, channels, pool,
                         reinterpret_cast<uint8_t*>(dst), reinterpret_cast<uint8_t*>(pixel));
        else
          max_pool_image(reinterpret_cast<const int8_t*>(conv), geo.oh, geo.ow, channels, pool,
                         reinterpret_cast<int8_t*>(dst), reinterpret_cast<int8_t*>(pixel));
      }
    });
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

std::unique_ptr<Kernel> make_quantized_conv2d_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                     const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  auto k = std::make_unique<QuantizedConv2DKernel>();
  fill_product(*k, g, n, mem, id);
  k->geo = conv_geometry(op_name(n.op), shapes[n.inputs[0]], &shapes[n.inputs[1]], n.attrs);
  k->padded_h = k->geo.h + 2 * k->geo.ph;
  k->padded_w = k->geo.w + 2 * k->geo.pw;
  k->k = k->geo.patch();
  k->channels = k->geo.o;
  if (mem.ref[id].region == Region::None) {
    // A merged step (quantized_chains.h): [max_pool2d,] quantize, whose parameters the
    // epilogue takes; only the quantize's value has a buffer.
    int next = reader_of(g, id, shapes);
    if (next >= 0 && g.node(next).op == OpKind::MaxPool2D) {
      k->pooled = true;
      k->pool = conv_geometry(op_name(OpKind::MaxPool2D), shapes[id], nullptr, g.node(next).attrs);
      next = reader_of(g, next, shapes);
    }
    while (next >= 0 && g.node(next).op == OpKind::Reshape) next = reader_of(g, next, shapes);
    if (next < 0 || g.node(next).op != OpKind::Quantize || mem.ref[next].region == Region::None)
      throw std::logic_error("[cpu] quantized_conv2d: the merged step's chain is broken");
    const Node& q = g.node(next);
    k->y = mem.ref[next];
    k->epilogue.out = q.dtype;
    k->epilogue.output_scale = q.attrs.scale;
    k->epilogue.output_zero_point = static_cast<int32_t>(q.attrs.zero_point);
  }
  k->reserve();
  return k;
}

}  // namespace gometal
