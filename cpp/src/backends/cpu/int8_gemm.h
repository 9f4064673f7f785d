// The int8 matrix product of the quantized ops: rows of uint8 activations times int8
// weights, summed in int32, then rescaled to float (plus bias, relu) or requantized, all in
// the epilogue. One packed weight layout per instruction set; the path is chosen once per
// kernel from the CPU's features (or forced by GOMETAL_INT8_KERNEL, so tests run every path
// this CPU has), and every path computes the same int32 sums, so outputs are bit-identical.
#pragma once

#include <cstdint>
#include <string_view>

#include "gometal/ir.h"

namespace gometal {

enum class Int8Path : uint8_t { Portable, Avx2, AvxVnni, Avx512Vnni };

std::string_view int8_path_name(Int8Path path);
// Whether this CPU executes `path`.
bool int8_path_available(Int8Path path);
// The fastest available path, or the one named by GOMETAL_INT8_KERNEL ("portable", "avx2",
// "avxvnni", "avx512vnni"); an unknown name or one this CPU lacks throws std::invalid_argument.
Int8Path choose_int8_path();

inline constexpr int64_t kInt8Panel = 16;     // output channels per packed panel
inline constexpr int64_t kInt8RowBlock = 64;  // rows one task packs and multiplies at a time
// The reduction length padded to whole groups of 4 (vpdpbusd sums 4 bytes per lane).
inline int64_t int8_depth(int64_t k) { return (k + 3) / 4 * 4; }

// Where the weights of one product live once packed, and the facts the epilogue needs.
struct Int8Weights {
  Int8Path path = Int8Path::Portable;
  int64_t channels = 0, depth = 0, panels = 0;
  const void* packed = nullptr;
  const int32_t* column_sums = nullptr;  // sum over k of w[o, k], for the zero-point term
};

// Bytes of workspace pack_int8_weights writes (packed panels, then the column sums).
int64_t int8_packed_bytes(Int8Path path, int64_t channels, int64_t k);
// Packs w (channels, k) int8, row-major, into `workspace` (int8_packed_bytes of it, 64-byte aligned).
Int8Weights pack_int8_weights(Int8Path path, const int8_t* w, int64_t channels, int64_t k, void* workspace);

// Bytes of per-thread scratch int8_block needs for blocks of up to kInt8RowBlock rows.
int64_t int8_block_scratch_bytes(Int8Path path, int64_t k);

// What happens to each int32 sum: v = float(sum - zero_point * column_sum[o]) * scale[o]
// (+ bias[o]), relu'd, then stored as float32 or saturate(round_half_even(v / output_scale)
// + output_zero_point) as int8/uint8. Each step is one rounded float32 operation.
struct Int8Epilogue {
  const float* scale = nullptr;
  const float* bias = nullptr;  // may be null
  int32_t zero_point = 0;       // the uint8 rows' zero point
  bool relu = false;
  DType out = DType::F32;
  float output_scale = 1.0f;
  int32_t output_zero_point = 0;
};

// Multiplies `count` (<= kInt8RowBlock) uint8 rows by the packed weights; `rows` holds them,
// each int8_depth(k) bytes (zero padded past k), in a buffer of int8_block_scratch_bytes
// whose rows past `count` the call may overwrite. Output (row r, channel o) goes to element
// r * row_stride + o * channel_stride of `out`, of the epilogue's dtype. With `window` > 1
// (4: a 2x2 max pooling), each group of `window` consecutive rows (count a multiple of it)
// gives one output row, the epilogue of its sums' maximum: the pooling of the epilogue's
// values when that is non-decreasing (every scale positive and finite), which the caller checks.
void int8_block(const Int8Weights& w, uint8_t* rows, int64_t count, const Int8Epilogue& epilogue, void* out,
                int64_t row_stride, int64_t channel_stride, int window = 1);

// Whether `path` multiplies rows where they lie (every path but AVX2, which widens copies).
bool int8_reads_in_place(Int8Path path);
// int8_block over `count` rows read in place: row r's bytes 4j..4j+3 (j < depth / 4) at
// rows[r] + group_offsets[j]; a convolution's input pixels need no im2col copy.
void int8_block_in_place(const Int8Weights& w, const uint8_t* const* rows, const int64_t* group_offsets, int64_t count,
                         const Int8Epilogue& epilogue, void* out, int64_t row_stride, int64_t channel_stride,
                         int window = 1);

// QuantizeLinear of x[begin, end) 16 floats at a time on AVX-512 (saturate(round_half_even(
// x / scale) + zero_point) into q as uint8 or int8), multiplying by the reciprocal of the
// scale wherever that rounds as the division does (the epilogues' rule), so the bytes are
// the division's. Returns where it stopped (begin without AVX-512): the caller quantizes the
// tail of fewer than 16 values.
int64_t quantize_vectors_avx512(const float* x, int64_t begin, int64_t end, float scale, int32_t zero_point,
                                bool to_uint8, void* q);

}  // namespace gometal
