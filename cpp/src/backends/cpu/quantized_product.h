// What the int8 dense and convolution kernels share (quantized.cpp, quantized_conv.cpp):
// the packed weights kept between runs, the epilogue, the per-thread row buffer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "backends/cpu/int8_gemm.h"
#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// ONNX QuantizeLinear of x[begin, end): x / scale rounded half to even (the default
// rounding mode) plus the zero point, saturated to [low, high].
template <class T>
void quantize_range(const float* x, int64_t begin, int64_t end, float scale, int32_t zero_point, float low,
                    float high, T* q) {
  for (int64_t i = begin; i < end; ++i) {
    const float v = std::nearbyint(x[i] / scale) + static_cast<float>(zero_point);
    q[i] = static_cast<T>(std::min(std::max(v, low), high));
  }
}

// Quantizes x[begin, end) into q (uint8 or int8 as `dtype`) as the quantize kernel does:
// its AVX-512 loop when `vectors`, else quantize_range, so a quantize folded into another
// kernel writes the same bytes.
void quantize_values(const float* x, int64_t begin, int64_t end, float scale, int32_t zero_point, DType dtype,
                     bool vectors, void* q);
// Whether the quantize kernel takes its AVX-512 loop (the int8 path chosen is AVX-512's).
bool quantize_uses_vectors();

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
  mutable std::vector<char> seen;      // the weight bytes last packed
  mutable std::vector<int8_t> values;  // them as int8, in the order the rows read them
  mutable std::vector<char> packed;    // the packed panels and column sums (+ alignment)
  mutable Int8Weights weights;
  mutable bool packed_once = false;

  // Bytes of one thread's row buffer: int8_block's, plus room for row copies that write
  // whole 16-byte chunks past a row's end.
  int64_t row_buffer_bytes() const { return (int8_block_scratch_bytes(path, k) + 64 + 63) / 64 * 64; }
  int64_t scratch_floats() const override { return row_buffer_bytes() / 4; }

  // Sizes the cache once the geometry is known (at plan compile: runs allocate nothing).
  void reserve() {
    seen.resize(static_cast<size_t>(channels * k * dtype_size(weight_dtype)));
    values.resize(static_cast<size_t>(channels * k));
    packed.resize(static_cast<size_t>(int8_packed_bytes(path, channels, k) + 64));
  }

  // The weight of output channel o, reduction index i, from the weight buffer; convolutions
  // reorder (C, KH, KW) into the (KH, KW, C) order of their rows.
  virtual int64_t source_index(int64_t o, int64_t i) const { return o * k + i; }

  // The packed weights (packed again if their bytes changed) and the run's epilogue.
  Int8Weights pack(const ExecContext& ctx, Int8Epilogue* e) const;

  uint8_t* rows_of(const ExecContext& ctx, int thread) const {
    return reinterpret_cast<uint8_t*>(ctx.thread_scratch(thread));
  }
};

// Sets the operands and epilogue of an int8 product from its node `id`.
void fill_product(Int8ProductKernel& k, const Graph& g, const Node& n, const MemoryPlan& mem, int id);

// The kernel of a quantized_conv2d node: alone, or heading a step that
// fuse_quantized_chains (quantized_chains.h) merged with its max pooling and quantize.
std::unique_ptr<Kernel> make_quantized_conv2d_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                     const std::vector<Shape>& shapes);
// The kernel of a step that fuse_quantized_chains headed with the quantize `id` of the
// convolution's float32 input: the convolution quantizes each image as it copies it.
std::unique_ptr<Kernel> make_input_quantizing_conv2d_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                            const std::vector<Shape>& shapes);

}  // namespace gometal
