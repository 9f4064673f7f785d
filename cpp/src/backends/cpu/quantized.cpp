#include "backends/cpu/quantized.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>

#include "backends/cpu/int8_gemm.h"
#include "backends/cpu/quantized_product.h"

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

struct QuantizeKernel final : Kernel {
  BufRef x, y;
  int64_t n = 0;
  float scale = 1.0f;
  int32_t zero_point = 0;
  DType dtype = DType::U8;
  bool vectors = false;  // the AVX-512 loop (the int8 path chosen is AVX-512's)
  void run(const ExecContext& ctx) const override {
    const float* in = ctx.ptr(x);
    void* out = ctx.bytes(y);
    parallel_ranges(ctx, n, [&](int64_t begin, int64_t end) {
      quantize_values(in, begin, end, scale, zero_point, dtype, vectors, out);
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

}  // namespace

void quantize_values(const float* x, int64_t begin, int64_t end, float scale, int32_t zero_point, DType dtype,
                     bool vectors, void* q) {
  if (vectors) begin = quantize_vectors_avx512(x, begin, end, scale, zero_point, dtype == DType::U8, q);
  if (dtype == DType::U8)
    quantize_range(x, begin, end, scale, zero_point, 0.0f, 255.0f, static_cast<uint8_t*>(q));
  else
    quantize_range(x, begin, end, scale, zero_point, -128.0f, 127.0f, static_cast<int8_t*>(q));
}

bool quantize_uses_vectors() { return choose_int8_path() == Int8Path::Avx512Vnni; }

Int8Weights Int8ProductKernel::pack(const ExecContext& ctx, Int8Epilogue* e) const {
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


std::unique_ptr<Kernel> make_quantized_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  switch (n.op) {
    case OpKind::Quantize: {
      // Without a buffer of its own, it heads a convolution's step (quantized_chains.h).
      if (mem.ref[id].region == Region::None) return make_input_quantizing_conv2d_kernel(g, id, mem, shapes);
      auto k = std::make_unique<QuantizeKernel>();
      k->x = mem.ref[n.inputs[0]];
      k->y = mem.ref[id];
      k->n = numel(shapes[id]);
      k->scale = n.attrs.scale;
      k->zero_point = static_cast<int32_t>(n.attrs.zero_point);
      k->dtype = n.dtype;
      k->vectors = quantize_uses_vectors();
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
    case OpKind::QuantizedConv2D: return make_quantized_conv2d_kernel(g, id, mem, shapes);
    default: return nullptr;
  }
}

}  // namespace gometal
