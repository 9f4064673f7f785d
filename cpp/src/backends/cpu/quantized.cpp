#include "backends/cpu/quantized.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>

#include "backends/cpu/int8_gemm.h"
#include "ir/conv_geometry.h"

namespace gometal {
namespace {

constexpr int64_t kElementsPerTask = 1 << 15;

// Runs fn(begin, end) over [0, n) in a few tasks per thread (one task for small n).
template <class F>
void parallel_ranges(const ExecContext& ctx, int64_t n, F&& fn) {
  const int tasks = n < kElementsPerTask ? 1 : balanced_tasks(*ctx.pool, n / kElementsPerTask + 1);
  ctx.pool->parallel_for(tasks, [&](int task, int) {
    int64_t begin, end;
    split_range(n, tasks, task, 64, &begin, &end);
    fn(begin, end);
  });
}

template <class T>
void quantize_range(const float* x, int64_t begin, int64_t end, float scale, int32_t zero_point, float low,
                    float high, T* q) {
  for (int64_t i = begin; i < end; ++i) {
    // ONNX QuantizeLinear: x / scale rounded half to even (the default rounding mode), saturated.
    const float v = std::nearbyint(x[i] / scale) + static_cast<float>(zero_point);
    q[i] = static_cast<T>(std::min(std::max(v, low), high));
  }
}

struct QuantizeKernel final : Kernel {
  BufRef x, y;
  int64_t n = 0;
  float scale = 1.0f;
  int32_t zero_point = 0;
  DType dtype = DType::U8;
  void run(const ExecContext& ctx) const override {
    const float* in = ctx.ptr(x);
    void* out = ctx.bytes(y);
    parallel_ranges(ctx, n, [&](int64_t begin, int64_t end) {
      if (dtype == DType::U8)
        quantize_range(in, begin, end, scale, zero_point, 0.0f, 255.0f, static_cast<uint8_t*>(out));
      else
        quantize_range(in, begin, end, scale, zero_point, -128.0f, 127.0f, static_cast<int8_t*>(out));
    });
  }
};

template <class T>
void dequantize_range(const T* q, int64_t begin, int64_t end, float scale, int32_t zero_point, float* x) {
  for (int64_t i = begin; i < end; ++i) x[i] = static_cast<float>(static_cast<int32_t>(q[i]) - zero_point) * scale;
}

struct DequantizeKernel final : Kernel {
  BufRef x, y;
  int64_t n = 0;
  float scale = 1.0f;
  int32_t zero_point = 0;
  DType dtype = DType::U8;
  void run(const ExecContext& ctx) const override {
    const void* in = ctx.bytes(x);
    float* out = ctx.ptr(y);
    parallel_ranges(ctx, n, [&](int64_t begin, int64_t end) {
      if (dtype == DType::U8)
        dequantize_range(static_cast<const uint8_t*>(in), begin, end, scale, zero_point, out);
      else
        dequantize_range(static_cast<const int8_t*>(in), begin, end, scale, zero_point, out);
    });
  }
};

// What the dense and the convolution share: the packed weights, the epilogue, the workspace.
// An inference plan reads the same weights on every run, so the packed panels are kept with
// the kernel and rebuilt only when the weight's bytes differ from those last packed (a
// comparison costs far less than packing).
struct Int8ProductKernel : Kernel {
  BufRef x, w, scale, bias, y;  // bias: Region::None without one
  Int8Path path = Int8Path::Portable;
  int64_t channels = 0, k = 0;
  DType weight_dtype = DType::I8;  // or float32 holding integers
  bool signed_input = false;       // int8 rows are shifted to uint8 (+128) and so is the zero point
  Int8Epilogue epilogue;
  mutable std::vector<char> seen;       // the weight bytes last packed
  mutable std::vector<int8_t> values;   // them as int8, in the order the rows read them
  mutable std::vector<char> packed;     // the packed panels and column sums (+ alignment)
  mutable Int8Weights weights;
  mutable bool packed_once = false;

  int64_t scratch_floats() const override { return (int8_block_scratch_bytes(path, k) + 3) / 4; }

  // Sizes the cache once the geometry is known (at plan compile: runs allocate nothing).
  void reserve() {
    seen.resize(static_cast<size_t>(channels * k * dtype_size(weight_dtype)));
    values.resize(static_cast<size_t>(channels * k));
    packed.resize(static_cast<size_t>(int8_packed_bytes(path, channels, k) + 64));
  }

  // The weight of output channel o, reduction index i, from the weight buffer; convolutions
  // reorder (C, KH, KW) into the (KH, KW, C) order of their rows.
  virtual int64_t source_index(int64_t o, int64_t i) const { return o * k + i; }

  Int8Weights pack(const ExecContext& ctx, Int8Epilogue* e) const {
    *e = epilogue;
    e->scale = ctx.ptr(scale);
    e->bias = bias.region == Region::None ? nullptr : ctx.ptr(bias);
    const char* source = ctx.bytes(w);
    if (packed_once && std::memcmp(seen.data(), source, seen.size()) == 0) return weights;
    std::memcpy(seen.data(), source, seen.size());
    for (int64_t o = 0; o < channels; ++o)
      for (int64_t i = 0; i < k; ++i) {
        const int64_t at = source_index(o, i);
        if (weight_dtype == DType::I8) {
          values[o * k + i] = reinterpret_cast<const int8_t*>(source)[at];
        } else {
          float v = std::nearbyint(reinterpret_cast<const float*>(source)[at]);
          if (v != v) v = 0.0f;  // NaN
          values[o * k + i] = static_cast<int8_t>(std::min(std::max(v, -128.0f), 127.0f));
        }
      }
    const auto at = reinterpret_cast<std::uintptr_t>(packed.data());
    void* aligned = packed.data() + ((at + 63) / 64 * 64 - at);
    weights = pack_int8_weights(path, values.data(), channels, k, aligned);
    packed_once = true;
    return weights;
  }
  uint8_t* rows_of(const ExecContext& ctx, int thread) const {
    return reinterpret_cast<uint8_t*>(ctx.thread_scratch(thread));
  }
};

// The uint8 parameters of a float32 input's range widened to hold 0 (dynamic quantization):
// scale = (high - low) / 255 and zero point = saturate(round_half_even(-low / scale)), in
// float32; a constant input gets scale 1.
void dynamic_parameters(const float* x, int64_t n, float* scale, int32_t* zero_point) {
  float low = 0.0f, high = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    low = std::min(low, x[i]);
    high = std::max(high, x[i]);
  }
  *scale = high > low ? (high - low) / 255.0f : 1.0f;
  *zero_point = static_cast<int32_t>(std::min(std::max(std::nearbyint(-low / *scale), 0.0f), 255.0f));
}

// (..., K) rows times (O, K): row blocks are the tasks. A float32 input is quantized per
// run (dynamic quantization): its scale joins each channel's scale in the epilogue.
struct QuantizedMatMulKernel final : Int8ProductKernel {
  int64_t rows = 0;
  bool dynamic = false;
  mutable std::vector<float> channel_scales;  // dynamic: weight scale times the input's scale
  void run(const ExecContext& ctx) const override {
    Int8Epilogue e;
    const Int8Weights packed_weights = pack(ctx, &e);
    float input_scale = 1.0f;
    if (dynamic) {
      dynamic_parameters(ctx.ptr(x), rows * k, &input_scale, &e.zero_point);
      for (int64_t c = 0; c < channels; ++c) channel_scales[c] = e.scale[c] * input_scale;
      e.scale = channel_scales.data();
    }
    const auto* in = reinterpret_cast<const uint8_t*>(ctx.bytes(x));
    const float* floats = ctx.ptr(x);
    char* out = ctx.bytes(y);
    const int64_t out_size = dtype_size(e.out);
    const int64_t blocks = (rows + kInt8RowBlock - 1) / kInt8RowBlock;
    const int tasks = balanced_tasks(*ctx.pool, blocks);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t begin, end;
      split_range(blocks, tasks, task, 1, &begin, &end);
      uint8_t* buffer = rows_of(ctx, thread);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t r0 = block * kInt8RowBlock, count = std::min(kInt8RowBlock, rows - r0);
        for (int64_t r = 0; r < count; ++r) {
          uint8_t* dst = buffer + r * packed_weights.depth;
          const uint8_t* src = in + (r0 + r) * k;
          if (dynamic)
            quantize_range(floats + (r0 + r) * k, 0, k, input_scale, e.zero_point, 0.0f, 255.0f, dst);
          else if (signed_input)
            for (int64_t i = 0; i < k; ++i) dst[i] = static_cast<uint8_t>(src[i] ^ 0x80u);
          else
            std::memcpy(dst, src, static_cast<size_t>(k));
          std::memset(dst + k, 0, static_cast<size_t>(packed_weights.depth - k));
        }
        int8_block(packed_weights, buffer, count, e, out + r0 * channels * out_size, channels, 1);
      }
    });
  }
};

// The input is first copied channels-last (uint8, shifted if int8) into the shared
// workspace, so each im2col row is KH * KW runs of C contiguous bytes (padding reads the
// zero point: a real zero); rows times (O, KH * KW * C), written channel-major (NCHW).
// Blocks of an image's output pixels are the tasks.
struct QuantizedConv2DKernel final : Int8ProductKernel {
  ConvGeometry geo;
  int64_t shared_floats() const override { return (geo.n * geo.c * geo.h * geo.w + 3) / 4; }
  int64_t source_index(int64_t o, int64_t i) const override {
    const int64_t c = i % geo.c, tap = i / geo.c;  // tap = ky * KW + kx
    return o * k + c * geo.kh * geo.kw + tap;
  }
  void to_channels_last(const ExecContext& ctx, uint8_t* nhwc) const {
    const auto* in = reinterpret_cast<const uint8_t*>(ctx.bytes(x));
    const uint8_t flip = signed_input ? 0x80u : 0u;
    const int64_t plane = geo.h * geo.w;
    const int tasks = balanced_tasks(*ctx.pool, geo.n);
    ctx.pool->parallel_for(tasks, [&](int task, int) {
      int64_t begin, end;
      split_range(geo.n, tasks, task, 1, &begin, &end);
      for (int64_t image = begin; image < end; ++image) {
        const uint8_t* src = in + image * geo.c * plane;
        uint8_t* dst = nhwc + image * geo.c * plane;
        for (int64_t c = 0; c < geo.c; ++c)
          for (int64_t at = 0; at < plane; ++at) dst[at * geo.c + c] = static_cast<uint8_t>(src[c * plane + at] ^ flip);
      }
    });
  }
  void run(const ExecContext& ctx) const override {
    Int8Epilogue e;
    const Int8Weights packed_weights = pack(ctx, &e);
    auto* nhwc = reinterpret_cast<uint8_t*>(ctx.shared);
    to_channels_last(ctx, nhwc);
    char* out = ctx.bytes(y);
    const int64_t out_size = dtype_size(e.out);
    const int64_t plane = geo.out_plane();
    const int64_t per_image = (plane + kInt8RowBlock - 1) / kInt8RowBlock;
    const int64_t blocks = geo.n * per_image;
    const int tasks = balanced_tasks(*ctx.pool, blocks);
    const auto pad = static_cast<uint8_t>(e.zero_point);
    const auto run_bytes = static_cast<size_t>(geo.c);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t begin, end;
      split_range(blocks, tasks, task, 1, &begin, &end);
      uint8_t* buffer = rows_of(ctx, thread);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t image = block / per_image, p0 = (block % per_image) * kInt8RowBlock;
        const int64_t count = std::min(kInt8RowBlock, plane - p0);
        const uint8_t* src = nhwc + image * geo.c * geo.h * geo.w;
        for (int64_t r = 0; r < count; ++r) {
          const int64_t oy = (p0 + r) / geo.ow, ox = (p0 + r) % geo.ow;
          uint8_t* dst = buffer + r * packed_weights.depth;
          for (int64_t ky = 0; ky < geo.kh; ++ky) {
            const int64_t iy = oy * geo.sh - geo.ph + ky * geo.dh;
            for (int64_t kx = 0; kx < geo.kw; ++kx, dst += geo.c) {
              const int64_t ix = ox * geo.sw - geo.pw + kx * geo.dw;
              const bool inside = iy >= 0 && iy < geo.h && ix >= 0 && ix < geo.w;
              if (geo.c <= 16) {  // a few bytes: a loop beats a library call
                for (int64_t c = 0; c < geo.c; ++c) dst[c] = inside ? src[(iy * geo.w + ix) * geo.c + c] : pad;
              } else if (inside) {
                std::memcpy(dst, src + (iy * geo.w + ix) * geo.c, run_bytes);
              } else {
                std::memset(dst, pad, run_bytes);
              }
            }
          }
          std::memset(dst, 0, static_cast<size_t>(packed_weights.depth - k));
        }
        int8_block(packed_weights, buffer, count, e, out + (image * channels * plane + p0) * out_size, 1, plane);
      }
    });
  }
};

void fill_product(Int8ProductKernel& k, const Graph& g, const Node& n, const MemoryPlan& mem, int id) {
  k.x = mem.ref[n.inputs[0]];
  k.w = mem.ref[n.inputs[1]];
  k.scale = mem.ref[n.inputs[2]];
  if (n.inputs.size() > 3) k.bias = mem.ref[n.inputs[3]];
  k.y = mem.ref[id];
  k.path = choose_int8_path();
  k.weight_dtype = g.node(n.inputs[1]).dtype;
  k.signed_input = g.node(n.inputs[0]).dtype == DType::I8;
  k.epilogue.zero_point = static_cast<int32_t>(n.attrs.zero_point) + (k.signed_input ? 128 : 0);
  k.epilogue.relu = n.attrs.relu;
  k.epilogue.out = n.attrs.dtype;
  k.epilogue.output_scale = n.attrs.output_scale;
  k.epilogue.output_zero_point = static_cast<int32_t>(n.attrs.output_zero_point);
}

}  // namespace

std::unique_ptr<Kernel> make_quantized_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  switch (n.op) {
    case OpKind::Quantize: {
      auto k = std::make_unique<QuantizeKernel>();
      k->x = mem.ref[n.inputs[0]];
      k->y = mem.ref[id];
      k->n = numel(shapes[id]);
      k->scale = n.attrs.scale;
      k->zero_point = static_cast<int32_t>(n.attrs.zero_point);
      k->dtype = n.dtype;
      return k;
    }
    case OpKind::Dequantize: {
      auto k = std::make_unique<DequantizeKernel>();
      k->x = mem.ref[n.inputs[0]];
      k->y = mem.ref[id];
      k->n = numel(shapes[id]);
      k->scale = n.attrs.scale;
      k->zero_point = static_cast<int32_t>(n.attrs.zero_point);
      k->dtype = g.node(n.inputs[0]).dtype;
      return k;
    }
    case OpKind::QuantizedMatMul: {
      auto k = std::make_unique<QuantizedMatMulKernel>();
      fill_product(*k, g, n, mem, id);
      const Shape& x = shapes[n.inputs[0]];
      k->k = x.back();
      k->channels = shapes[id].back();
      k->rows = numel(x) / std::max<int64_t>(k->k, 1);
      k->dynamic = g.node(n.inputs[0]).dtype == DType::F32;
      k->channel_scales.resize(static_cast<size_t>(k->channels));
      k->reserve();
      return k;
    }
    case OpKind::QuantizedConv2D: {
      auto k = std::make_unique<QuantizedConv2DKernel>();
      fill_product(*k, g, n, mem, id);
      k->geo = conv_geometry(op_name(n.op), shapes[n.inputs[0]], &shapes[n.inputs[1]], n.attrs);
      k->k = k->geo.patch();
      k->channels = k->geo.o;
      k->reserve();
      return k;
    }
    default: return nullptr;
  }
}

}  // namespace gometal
