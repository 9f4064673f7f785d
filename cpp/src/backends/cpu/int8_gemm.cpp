#include "backends/cpu/int8_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GOMETAL_INT8_X86 1
#endif

namespace gometal {
namespace {

// Rows per register tile: 8 zmm accumulators on AVX-512, 8 ymm (4 rows x 2 halves) otherwise.
int rows_per_tile(Int8Path path) { return path == Int8Path::Avx512Vnni ? 8 : 4; }

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// The AVX2 path multiplies int16 pairs (vpmaddwd): vpmaddubsw's int16 sums of two
// uint8 x int8 products saturate (255 * 127 * 2 > 32767), which would break exactness.
bool widens(Int8Path path) { return path == Int8Path::Avx2; }

// Where row r's group j (its bytes 4j..4j+3) lies: in rows copied one after another (an
// im2col buffer, dense rows), or in place through per-group offsets from each row's start
// (a convolution's input pixels).
struct CopiedRows {
  const uint8_t* a;
  int64_t depth;
  const uint8_t* at(int r, int64_t j) const { return a + r * depth + 4 * j; }
};
struct RowsInPlace {
  const uint8_t* rows[8];
  const int64_t* offsets;
  const uint8_t* at(int r, int64_t j) const { return rows[r] + offsets[j]; }
};

// Portable: the packed layout of the VNNI paths, [group of 4 k][16 channels][4 k] bytes.
template <class Rows>
void tile_portable(const Rows& a, int64_t groups, const int8_t* b, int32_t* acc) {
  constexpr int kRows = 4;
  for (int r = 0; r < kRows; ++r)
    for (int o = 0; o < kInt8Panel; ++o) acc[r * kInt8Panel + o] = 0;
  for (int64_t j = 0; j < groups; ++j) {
    const int8_t* bg = b + j * 4 * kInt8Panel;
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* ar = a.at(r, j);
      for (int o = 0; o < kInt8Panel; ++o) {
        int32_t s = 0;
        for (int i = 0; i < 4; ++i) s += static_cast<int32_t>(ar[i]) * bg[o * 4 + i];
        acc[r * kInt8Panel + o] += s;
      }
    }
  }
}

#ifdef GOMETAL_INT8_X86
int32_t load_group(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class Rows>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void tile_avx512vnni(const Rows& a, int64_t groups,
                                                                              const int8_t* b, int32_t* acc) {
  __m512i c[8];
  for (auto& v : c) v = _mm512_setzero_si512();
  for (int64_t j = 0; j < groups; ++j) {
    const __m512i w = _mm512_loadu_si512(b + j * 4 * kInt8Panel);
    for (int r = 0; r < 8; ++r) c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(load_group(a.at(r, j))), w);
  }
  for (int r = 0; r < 8; ++r) _mm512_storeu_si512(acc + r * kInt8Panel, c[r]);
}

template <class Rows>
__attribute__((target("avx2,avxvnni"))) void tile_avxvnni(const Rows& a, int64_t groups, const int8_t* b,
                                                          int32_t* acc) {
  __m256i lo[4], hi[4];
  for (int r = 0; r < 4; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  for (int64_t j = 0; j < groups; ++j) {
    const int8_t* bg = b + j * 4 * kInt8Panel;
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + 32));
    for (int r = 0; r < 4; ++r) {
      const __m256i x = _mm256_set1_epi32(load_group(a.at(r, j)));
      lo[r] = _mm256_dpbusd_avx_epi32(lo[r], x, w0);
      hi[r] = _mm256_dpbusd_avx_epi32(hi[r], x, w1);
    }
  }
  for (int r = 0; r < 4; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kInt8Panel), lo[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kInt8Panel + 8), hi[r]);
  }
}

// a: int16 rows (depth each); b: [pair of k][16 channels][2 k] int16.
__attribute__((target("avx2"))) void tile_avx2(const int16_t* a, int64_t depth, const int16_t* b, int32_t* acc) {
  __m256i lo[4], hi[4];
  for (int r = 0; r < 4; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  for (int64_t j = 0; j < depth; j += 2) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j * kInt8Panel));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j * kInt8Panel + 16));
    for (int r = 0; r < 4; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * depth + j, sizeof pair);
      const __m256i x = _mm256_set1_epi32(pair);
      lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(x, w0));
      hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(x, w1));
    }
  }
  for (int r = 0; r < 4; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kInt8Panel), lo[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kInt8Panel + 8), hi[r]);
  }
}
#endif

// The per-channel factors of one panel's epilogue, padded to the panel's 16 channels so the
// tile loops run a fixed width (and vectorize).
struct PanelFactors {
  alignas(64) int32_t offset[kInt8Panel];  // zero_point * column_sum
  alignas(64) float scale[kInt8Panel];
  alignas(64) float bias[kInt8Panel];
};

PanelFactors panel_factors(const Int8Weights& w, const Int8Epilogue& e, int64_t o0, int64_t channels) {
  PanelFactors f{};
  for (int64_t o = 0; o < channels; ++o) {
    f.offset[o] = e.zero_point * w.column_sums[o0 + o];
    f.scale[o] = e.scale[o0 + o];
    f.bias[o] = e.bias ? e.bias[o0 + o] : 0.0f;
  }
  return f;
}

// One tile's epilogue: first the values of all its rows and 16 channels, computed one
// rounded float32 operation at a time along the channels, then the stores of rows [0, rows)
// and channels [o0, o0 + channels), along the output's contiguous axis: channels for
// row-major output (a dense), rows (pixels) for channel-major output (NCHW).
template <class T>
void finish_tile_as(const int32_t* acc, const PanelFactors& f, int64_t rows, int64_t r0, int64_t o0,
                    int64_t channels, const Int8Epilogue& e, T* out, int64_t row_stride, int64_t channel_stride) {
  alignas(64) float tile[8 * kInt8Panel];
  for (int64_t r = 0; r < rows; ++r) {
    float* v = tile + r * kInt8Panel;
    const int32_t* a = acc + r * kInt8Panel;
    for (int o = 0; o < kInt8Panel; ++o) v[o] = static_cast<float>(a[o] - f.offset[o]) * f.scale[o];
    if (e.bias)
      for (int o = 0; o < kInt8Panel; ++o) v[o] = v[o] + f.bias[o];
    if (e.relu)
      for (int o = 0; o < kInt8Panel; ++o) v[o] = std::max(v[o], 0.0f);
    if constexpr (!std::is_same_v<T, float>) {
      // v / output_scale rounded half to even (the default rounding mode) plus the zero point, saturated.
      constexpr float low = std::is_same_v<T, uint8_t> ? 0.0f : -128.0f;
      constexpr float high = std::is_same_v<T, uint8_t> ? 255.0f : 127.0f;
      const auto zero = static_cast<float>(e.output_zero_point);
      for (int o = 0; o < kInt8Panel; ++o)
        v[o] = std::min(std::max(std::nearbyint(v[o] / e.output_scale) + zero, low), high);
    }
  }
  if (channel_stride == 1) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < channels; ++o)
        out[(r0 + r) * row_stride + o0 + o] = static_cast<T>(tile[r * kInt8Panel + o]);
  } else {
    for (int64_t o = 0; o < channels; ++o)
      for (int64_t r = 0; r < rows; ++r)
        out[(r0 + r) * row_stride + (o0 + o) * channel_stride] = static_cast<T>(tile[r * kInt8Panel + o]);
  }
}

void finish_tile(const int32_t* acc, const PanelFactors& f, int64_t rows, int64_t r0, int64_t o0, int64_t channels,
                 const Int8Epilogue& e, void* out, int64_t row_stride, int64_t channel_stride) {
  switch (e.out) {
    case DType::U8:
      finish_tile_as(acc, f, rows, r0, o0, channels, e, static_cast<uint8_t*>(out), row_stride, channel_stride);
      break;
    case DType::I8:
      finish_tile_as(acc, f, rows, r0, o0, channels, e, static_cast<int8_t*>(out), row_stride, channel_stride);
      break;
    default:
      finish_tile_as(acc, f, rows, r0, o0, channels, e, static_cast<float*>(out), row_stride, channel_stride);
      break;
  }
}

#ifdef GOMETAL_INT8_X86
// Requantizing divides by the output scale, and divps is the epilogue's slowest step. The
// product t = v * (1 / scale) lies within |t| * 1.5 * 2^-23 of the rounded quotient, so
// under 2^-13 while |t| < 512: a lane further than 2^-12 from a rounding tie rounds to the
// quotient's integer, and one at 512 or beyond saturates either way. A vector with any
// other lane (near a tie, NaN) takes the division, so the bytes stay those of v / scale.
constexpr float kReciprocalSafeMagnitude = 512.0f;
constexpr float kReciprocalTieMargin = 0.5f - 0x1p-12f;

__attribute__((target("avx512f"))) __m512 rounded_quotient_avx512(__m512 v, __m512 scale, __m512 reciprocal) {
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 t = _mm512_mul_ps(v, reciprocal);
  const __m512 rounded = _mm512_roundscale_ps(t, kNearest);
  const __mmask16 saturated = _mm512_cmp_ps_mask(_mm512_abs_ps(t), _mm512_set1_ps(kReciprocalSafeMagnitude), _CMP_GE_OQ);
  const __mmask16 clear_of_ties =
      _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, rounded)), _mm512_set1_ps(kReciprocalTieMargin), _CMP_LE_OQ);
  if (static_cast<__mmask16>(saturated | clear_of_ties) == 0xFFFF) return rounded;
  return _mm512_roundscale_ps(_mm512_div_ps(v, scale), kNearest);
}

__attribute__((target("avx2"))) __m256 rounded_quotient_avx2(__m256 v, __m256 scale, __m256 reciprocal) {
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 t = _mm256_mul_ps(v, reciprocal);
  const __m256 rounded = _mm256_round_ps(t, kNearest);
  const __m256 saturated =
      _mm256_cmp_ps(_mm256_and_ps(t, magnitude), _mm256_set1_ps(kReciprocalSafeMagnitude), _CMP_GE_OQ);
  const __m256 clear_of_ties = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(t, rounded), magnitude),
                                             _mm256_set1_ps(kReciprocalTieMargin), _CMP_LE_OQ);
  if (_mm256_movemask_ps(_mm256_or_ps(saturated, clear_of_ties)) == 0xFF) return rounded;
  return _mm256_round_ps(_mm256_div_ps(v, scale), kNearest);
}

// finish_tile for row-major output on the AVX-512 path: the same float32 operations, one
// rounded step at a time (cvtdq2ps, mulps, addps, maxps, the quotient rounded to nearest
// even, then saturation), on the 16 channels of a row at once, and masked stores of the tile's
// `channels`. max(0, v) and min/max against the range keep std::max/min's NaN behaviour.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void finish_tile_avx512(
    const int32_t* acc, const PanelFactors& f, int64_t rows, int64_t r0, int64_t o0, int64_t channels,
    const Int8Epilogue& e, void* out, int64_t row_stride) {
  const auto mask = static_cast<__mmask16>(channels >= kInt8Panel ? 0xFFFFu : (1u << channels) - 1u);
  const __m512i offset = _mm512_load_si512(f.offset);
  const __m512 scale = _mm512_load_ps(f.scale), bias = _mm512_load_ps(f.bias), zero = _mm512_setzero_ps();
  const __m512 out_scale = _mm512_set1_ps(e.output_scale), out_reciprocal = _mm512_set1_ps(1.0f / e.output_scale);
  const __m512 out_zero = _mm512_set1_ps(static_cast<float>(e.output_zero_point));
  const __m512 low = _mm512_set1_ps(e.out == DType::U8 ? 0.0f : -128.0f);
  const __m512 high = _mm512_set1_ps(e.out == DType::U8 ? 255.0f : 127.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const __m512i sums = _mm512_sub_epi32(_mm512_load_si512(acc + r * kInt8Panel), offset);
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), scale);
    if (e.bias) v = _mm512_add_ps(v, bias);
    if (e.relu) v = _mm512_max_ps(zero, v);
    const int64_t at = (r0 + r) * row_stride + o0;
    if (e.out == DType::F32) {
      _mm512_mask_storeu_ps(static_cast<float*>(out) + at, mask, v);
      continue;
    }
    v = rounded_quotient_avx512(v, out_scale, out_reciprocal);
    v = _mm512_min_ps(high, _mm512_max_ps(low, _mm512_add_ps(v, out_zero)));
    const __m512i q = _mm512_cvtps_epi32(v);
    char* dst = static_cast<char*>(out) + at;
    _mm_mask_storeu_epi8(dst, mask, e.out == DType::U8 ? _mm512_cvtusepi32_epi8(q) : _mm512_cvtsepi32_epi8(q));
  }
}

// finish_tile_avx512 for the AVX2 and AVX-VNNI paths: the same rounded steps on each
// half (8 channels) of a row; the stores of the tile's `channels` go through a row of 16.
__attribute__((target("avx2"))) void finish_tile_avx2(const int32_t* acc, const PanelFactors& f, int64_t rows,
                                                      int64_t r0, int64_t o0, int64_t channels, const Int8Epilogue& e,
                                                      void* out, int64_t row_stride) {
  const __m256 zero = _mm256_setzero_ps(), out_scale = _mm256_set1_ps(e.output_scale);
  const __m256 out_reciprocal = _mm256_set1_ps(1.0f / e.output_scale);
  const __m256 out_zero = _mm256_set1_ps(static_cast<float>(e.output_zero_point));
  const __m256 low = _mm256_set1_ps(e.out == DType::U8 ? 0.0f : -128.0f);
  const __m256 high = _mm256_set1_ps(e.out == DType::U8 ? 255.0f : 127.0f);
  const size_t out_size = e.out == DType::F32 ? sizeof(float) : 1;
  for (int64_t r = 0; r < rows; ++r) {
    __m256 v[2];
    for (int half = 0; half < 2; ++half) {
      const int at = half * 8;
      const __m256i sums = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + r * kInt8Panel + at)),
                                            _mm256_load_si256(reinterpret_cast<const __m256i*>(f.offset + at)));
      v[half] = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_load_ps(f.scale + at));
      if (e.bias) v[half] = _mm256_add_ps(v[half], _mm256_load_ps(f.bias + at));
      if (e.relu) v[half] = _mm256_max_ps(zero, v[half]);
    }
    char* dst = static_cast<char*>(out) + ((r0 + r) * row_stride + o0) * static_cast<int64_t>(out_size);
    if (e.out == DType::F32) {
      alignas(32) float row[kInt8Panel];
      _mm256_store_ps(row, v[0]);
      _mm256_store_ps(row + 8, v[1]);
      std::memcpy(dst, row, static_cast<size_t>(channels) * sizeof(float));
      continue;
    }
    __m256i q[2];
    for (int half = 0; half < 2; ++half) {
      __m256 t = rounded_quotient_avx2(v[half], out_scale, out_reciprocal);
      t = _mm256_min_ps(high, _mm256_max_ps(low, _mm256_add_ps(t, out_zero)));
      q[half] = _mm256_cvtps_epi32(t);
    }
    // Values already lie in the byte range: packing (int32 -> int16 -> 8-bit) is exact;
    // the permute undoes the 128-bit lanes' interleaving.
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
    const __m128i lo = _mm256_castsi256_si128(words), hi = _mm256_extracti128_si256(words, 1);
    alignas(16) uint8_t bytes[kInt8Panel];
    _mm_store_si128(reinterpret_cast<__m128i*>(bytes),
                    e.out == DType::U8 ? _mm_packus_epi16(lo, hi) : _mm_packs_epi16(lo, hi));
    std::memcpy(dst, bytes, static_cast<size_t>(channels));
  }
}
#endif

}  // namespace

std::string_view int8_path_name(Int8Path path) {
  switch (path) {
    case Int8Path::Avx2: return "avx2";
    case Int8Path::AvxVnni: return "avxvnni";
    case Int8Path::Avx512Vnni: return "avx512vnni";
    default: return "portable";
  }
}

bool int8_path_available(Int8Path path) {
#ifdef GOMETAL_INT8_X86
  switch (path) {
    case Int8Path::Avx2: return __builtin_cpu_supports("avx2");
    case Int8Path::AvxVnni: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    case Int8Path::Avx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    default: return true;
  }
#else
  return path == Int8Path::Portable;
#endif
}

Int8Path choose_int8_path() {
  const Int8Path fastest_first[] = {Int8Path::Avx512Vnni, Int8Path::AvxVnni, Int8Path::Avx2, Int8Path::Portable};
  const char* forced = std::getenv("GOMETAL_INT8_KERNEL");
  if (forced == nullptr || forced[0] == '\0') {
    for (Int8Path path : fastest_first)
      if (int8_path_available(path)) return path;
  }
  for (Int8Path path : fastest_first) {
    if (int8_path_name(path) != forced) continue;
    if (!int8_path_available(path))
      throw std::invalid_argument("[quantized] GOMETAL_INT8_KERNEL=" + std::string(forced) +
                                  ": this CPU lacks the instructions of that path");
    return path;
  }
  throw std::invalid_argument("[quantized] GOMETAL_INT8_KERNEL must be portable, avx2, avxvnni or avx512vnni, got '" +
                              std::string(forced) + "'");
}

int64_t int8_packed_bytes(Int8Path path, int64_t channels, int64_t k) {
  const int64_t panels = (channels + kInt8Panel - 1) / kInt8Panel;
  const int64_t element = widens(path) ? 2 : 1;
  return round_up(panels * kInt8Panel * int8_depth(k) * element, 64) + panels * kInt8Panel * 4;
}

Int8Weights pack_int8_weights(Int8Path path, const int8_t* w, int64_t channels, int64_t k, void* workspace) {
  Int8Weights packed;
  packed.path = path;
  packed.channels = channels;
  packed.depth = int8_depth(k);
  packed.panels = (channels + kInt8Panel - 1) / kInt8Panel;
  const int64_t panel_elements = kInt8Panel * packed.depth;
  const int64_t element = widens(path) ? 2 : 1;
  auto* bytes = static_cast<char*>(workspace);
  auto* sums = reinterpret_cast<int32_t*>(bytes + round_up(packed.panels * panel_elements * element, 64));
  // Panel p holds channels [16p, 16p + 16) as [k / 4][channel][k % 4] bytes (VNNI,
  // portable) or [k / 2][channel][k % 2] int16 (AVX2), zero past k and past the channels.
  const int group = widens(path) ? 2 : 4;
  auto* narrow = reinterpret_cast<int8_t*>(bytes);
  auto* wide = reinterpret_cast<int16_t*>(bytes);
  int64_t at = 0;
  for (int64_t p = 0; p < packed.panels; ++p)
    for (int64_t g = 0; g < packed.depth; g += group)
      for (int64_t o = 0; o < kInt8Panel; ++o) {
        const int64_t c = p * kInt8Panel + o;
        for (int j = 0; j < group; ++j, ++at) {
          const int8_t v = c < channels && g + j < k ? w[c * k + g + j] : 0;
          if (widens(path))
            wide[at] = v;
          else
            narrow[at] = v;
        }
      }
  for (int64_t c = 0; c < packed.panels * kInt8Panel; ++c) {
    int32_t sum = 0;
    for (int64_t i = 0; c < channels && i < k; ++i) sum += w[c * k + i];
    sums[c] = sum;
  }
  packed.packed = bytes;
  packed.column_sums = sums;
  return packed;
}

int64_t int8_block_scratch_bytes(Int8Path path, int64_t k) {
  const int64_t row_bytes = kInt8RowBlock * int8_depth(k);
  return round_up(row_bytes, 64) + (widens(path) ? row_bytes * 2 : 0);
}

namespace {

// Every panel times the tiles of `count` rows; rows_from(r) gives the tile's rows from row r
// (rows past count repeat a valid row or hold zeros: their sums are never stored), `wide`
// the AVX2 path's int16 copy of copied rows.
// Each group of `window` consecutive rows of the tile's sums replaced by their maximum, in
// the first `rows / window` rows of acc.
void max_of_windows(int32_t* acc, int rows, int window) {
  for (int g = 0; g < rows / window; ++g) {
    const int32_t* first = acc + g * window * kInt8Panel;
    alignas(64) int32_t most[kInt8Panel];  // a row of channels at once (vectorizes)
    for (int o = 0; o < kInt8Panel; ++o) most[o] = first[o];
    for (int r = 1; r < window; ++r)
      for (int o = 0; o < kInt8Panel; ++o) most[o] = std::max(most[o], first[r * kInt8Panel + o]);
    std::memcpy(acc + g * kInt8Panel, most, sizeof most);
  }
}

#ifdef GOMETAL_INT8_X86
// max_of_windows on rows of 16 channels as whole vectors.
__attribute__((target("avx512f"))) void max_of_windows_avx512(int32_t* acc, int rows, int window) {
  for (int g = 0; g < rows / window; ++g) {
    const int32_t* first = acc + g * window * kInt8Panel;
    __m512i most = _mm512_load_si512(first);
    for (int r = 1; r < window; ++r) most = _mm512_max_epi32(most, _mm512_load_si512(first + r * kInt8Panel));
    _mm512_store_si512(acc + g * kInt8Panel, most);
  }
}
#endif

template <class RowsFrom>
void multiply_panels(const Int8Weights& w, int64_t count, RowsFrom rows_from, const int16_t* wide,
                     const Int8Epilogue& epilogue, void* out, int64_t row_stride, int64_t channel_stride,
                     int window) {
  const int tile_rows = rows_per_tile(w.path);
  const int64_t groups = w.depth / 4;
  alignas(64) int32_t acc[8 * kInt8Panel];
  const int64_t element = widens(w.path) ? 2 : 1;
  for (int64_t p = 0; p < w.panels; ++p) {
    const char* panel = static_cast<const char*>(w.packed) + p * kInt8Panel * w.depth * element;
    const int64_t channels = std::min<int64_t>(kInt8Panel, w.channels - p * kInt8Panel);
    const PanelFactors factors = panel_factors(w, epilogue, p * kInt8Panel, channels);
    for (int64_t r = 0; r < count; r += tile_rows) {
      const auto a = rows_from(r);
      const auto* b = reinterpret_cast<const int8_t*>(panel);
      switch (w.path) {
#ifdef GOMETAL_INT8_X86
        case Int8Path::Avx512Vnni: tile_avx512vnni(a, groups, b, acc); break;
        case Int8Path::AvxVnni: tile_avxvnni(a, groups, b, acc); break;
        case Int8Path::Avx2:
          tile_avx2(wide + r * w.depth, w.depth, reinterpret_cast<const int16_t*>(panel), acc);
          break;
#endif
        default: tile_portable(a, groups, b, acc); break;
      }
      int64_t rows_here = std::min<int64_t>(tile_rows, count - r), r0 = r;
      if (window > 1) {
#ifdef GOMETAL_INT8_X86
        if (w.path == Int8Path::Avx512Vnni)
          max_of_windows_avx512(acc, tile_rows, window);
        else
#endif
          max_of_windows(acc, tile_rows, window);
        rows_here /= window;
        r0 /= window;
      }
#ifdef GOMETAL_INT8_X86
      if (w.path == Int8Path::Avx512Vnni && channel_stride == 1) {
        finish_tile_avx512(acc, factors, rows_here, r0, p * kInt8Panel, channels, epilogue, out, row_stride);
        continue;
      }
      if ((w.path == Int8Path::Avx2 || w.path == Int8Path::AvxVnni) && channel_stride == 1) {
        finish_tile_avx2(acc, factors, rows_here, r0, p * kInt8Panel, channels, epilogue, out, row_stride);
        continue;
      }
#endif
      finish_tile(acc, factors, rows_here, r0, p * kInt8Panel, channels, epilogue, out, row_stride, channel_stride);
    }
  }
}

}  // namespace

void int8_block(const Int8Weights& w, uint8_t* rows, int64_t count, const Int8Epilogue& epilogue, void* out,
                int64_t row_stride, int64_t channel_stride, int window) {
  const int64_t padded = round_up(count, rows_per_tile(w.path));
  std::memset(rows + count * w.depth, 0, static_cast<size_t>((padded - count) * w.depth));
  int16_t* wide = nullptr;
  if (widens(w.path)) {
    wide = reinterpret_cast<int16_t*>(rows + round_up(kInt8RowBlock * w.depth, 64));
    for (int64_t i = 0; i < padded * w.depth; ++i) wide[i] = rows[i];
  }
  const auto rows_from = [&](int64_t r) { return CopiedRows{rows + r * w.depth, w.depth}; };
  multiply_panels(w, count, rows_from, wide, epilogue, out, row_stride, channel_stride, window);
}

bool int8_reads_in_place(Int8Path path) { return !widens(path); }

#ifdef GOMETAL_INT8_X86
__attribute__((target("avx512f,avx512bw,avx512vl"))) int64_t quantize_vectors_avx512(
    const float* x, int64_t begin, int64_t end, float scale, int32_t zero_point, bool to_uint8, void* q) {
  const __m512 divisor = _mm512_set1_ps(scale), reciprocal = _mm512_set1_ps(1.0f / scale);
  const __m512 zero = _mm512_set1_ps(static_cast<float>(zero_point));
  const __m512 low = _mm512_set1_ps(to_uint8 ? 0.0f : -128.0f), high = _mm512_set1_ps(to_uint8 ? 255.0f : 127.0f);
  auto* bytes = static_cast<char*>(q);
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m512 v = _mm512_add_ps(rounded_quotient_avx512(_mm512_loadu_ps(x + i), divisor, reciprocal), zero);
    const __m512i n = _mm512_cvtps_epi32(_mm512_min_ps(high, _mm512_max_ps(low, v)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes + i),
                     to_uint8 ? _mm512_cvtusepi32_epi8(n) : _mm512_cvtsepi32_epi8(n));
  }
  return i;
}
#else
int64_t quantize_vectors_avx512(const float*, int64_t begin, int64_t, float, int32_t, bool, void*) { return begin; }
#endif

void int8_block_in_place(const Int8Weights& w, const uint8_t* const* rows, const int64_t* group_offsets, int64_t count,
                         const Int8Epilogue& epilogue, void* out, int64_t row_stride, int64_t channel_stride,
                         int window) {
  if (widens(w.path)) throw std::logic_error("[quantized] the AVX2 path reads copied rows only");
  const auto rows_from = [&](int64_t r) {
    RowsInPlace tile{{}, group_offsets};
    for (int64_t i = 0; i < 8; ++i) tile.rows[i] = rows[std::min(r + i, count - 1)];
    return tile;
  };
  multiply_panels(w, count, rows_from, nullptr, epilogue, out, row_stride, channel_stride, window);
}

}  // namespace gometal
