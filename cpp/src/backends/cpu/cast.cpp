#include "backends/cpu/cast.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace gometal {

uint16_t float_to_bfloat(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float bfloat_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &wide, sizeof x);
  return x;
}

uint16_t float_to_half(float x) {
  uint32_t f;
  std::memcpy(&f, &x, sizeof f);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t magnitude = f & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);  // NaN
  if (magnitude >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504: inf
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a subnormal, rounded to nearest even.
    if (magnitude < 0x33000000u) return static_cast<uint16_t>(sign);  // under half the smallest subnormal
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14 - (exponent - 127) + 13 - 1
    const uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t midpoint = 1u << (shift - 1);
    const uint32_t rounded = half + (rest > midpoint || (rest == midpoint && (half & 1u)));
    return static_cast<uint16_t>(sign | rounded);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits.
  const uint32_t rebased = magnitude - 0x38000000u;
  const uint32_t rounded = rebased + 0xFFFu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // A subnormal half is a normal float: shift the mantissa up to its leading one.
    uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

namespace {

// Storage types standing for each dtype.
struct Half {
  uint16_t bits;
};
struct BFloat {
  uint16_t bits;
};
struct Bool {
  uint8_t value;
};

template <class T> constexpr bool kIntegral = std::is_integral_v<T> || std::is_same_v<T, Bool>;

template <class T>
double as_double(T v) {
  if constexpr (std::is_same_v<T, Half>) return half_to_float(v.bits);
  else if constexpr (std::is_same_v<T, BFloat>) return bfloat_to_float(v.bits);
  else return static_cast<double>(v);
}

template <class T>
int64_t as_int(T v) {
  if constexpr (std::is_same_v<T, Bool>) return v.value != 0;
  else return static_cast<int64_t>(v);
}

template <class D>
D from_double(double v) {
  if constexpr (std::is_same_v<D, Half>) return {float_to_half(static_cast<float>(v))};
  else if constexpr (std::is_same_v<D, BFloat>) return {float_to_bfloat(static_cast<float>(v))};
  else if constexpr (std::is_same_v<D, Bool>) return {static_cast<uint8_t>(v != 0.0)};
  else if constexpr (std::is_floating_point_v<D>) return static_cast<D>(v);
  else {
    if (std::isnan(v)) return 0;
    const double lo = static_cast<double>(std::numeric_limits<D>::min());
    const double hi = static_cast<double>(std::numeric_limits<D>::max());
    if (v <= lo) return std::numeric_limits<D>::min();
    if (v >= hi) return std::numeric_limits<D>::max();
    return static_cast<D>(v);
  }
}

template <class D>
D from_int(int64_t v) {
  if constexpr (std::is_same_v<D, Bool>) return {static_cast<uint8_t>(v != 0)};
  else if constexpr (std::is_same_v<D, Half> || std::is_same_v<D, BFloat>) return from_double<D>(static_cast<double>(v));
  else return static_cast<D>(v);  // integers wrap; floats round
}

template <class S, class D>
void convert(const void* x, int64_t n, void* y) {
  const auto* src = static_cast<const S*>(x);
  auto* dst = static_cast<D*>(y);
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (kIntegral<S>) dst[i] = from_int<D>(as_int(src[i]));
    else dst[i] = from_double<D>(as_double(src[i]));
  }
}

template <class S>
void convert_from(const void* x, int64_t n, DType to, void* y) {
  switch (to) {
    case DType::F32: return convert<S, float>(x, n, y);
    case DType::F16: return convert<S, Half>(x, n, y);
    case DType::BF16: return convert<S, BFloat>(x, n, y);
    case DType::I8: return convert<S, int8_t>(x, n, y);
    case DType::U8: return convert<S, uint8_t>(x, n, y);
    case DType::I32: return convert<S, int32_t>(x, n, y);
    case DType::I64: return convert<S, int64_t>(x, n, y);
    case DType::Bool: return convert<S, Bool>(x, n, y);
    case DType::kCount: break;
  }
}

}  // namespace

void cast(DType from, const void* x, int64_t n, DType to, void* y) {
  switch (from) {
    case DType::F32: return convert_from<float>(x, n, to, y);
    case DType::F16: return convert_from<Half>(x, n, to, y);
    case DType::BF16: return convert_from<BFloat>(x, n, to, y);
    case DType::I8: return convert_from<int8_t>(x, n, to, y);
    case DType::U8: return convert_from<uint8_t>(x, n, to, y);
    case DType::I32: return convert_from<int32_t>(x, n, to, y);
    case DType::I64: return convert_from<int64_t>(x, n, to, y);
    case DType::Bool: return convert_from<Bool>(x, n, to, y);
    case DType::kCount: break;
  }
}

}  // namespace gometal
