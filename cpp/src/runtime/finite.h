// Whether a buffer of floats holds only finite values: the engine refuses inputs that do not,
// and kernels whose arithmetic would turn an infinity into NaN take another path.
#pragma once

#include <cstdint>
#include <cstring>

#include "gometal/ir.h"

namespace gometal {

// True when every value's magnitude bits (all but the sign) are below `limit`. With limit the
// exponent mask this is "finite": Inf and NaN are the floats whose exponent bits are all set.
// Integer operations vectorise without reassociating float math.
template <class Bits>
bool magnitudes_below(const void* data, int64_t n, Bits limit) {
  constexpr Bits kMagnitude = static_cast<Bits>(~Bits{0}) >> 1;
  const auto* x = static_cast<const char*>(data);
  Bits bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    Bits bits;
    std::memcpy(&bits, x + i * sizeof(Bits), sizeof bits);
    bad |= static_cast<Bits>((bits & kMagnitude) >= limit);
  }
  return bad == 0;
}

// True when every one of the n values of `dtype` at data is finite (always for integer dtypes).
inline bool all_finite(const void* data, int64_t n, DType dtype) {
  switch (dtype) {
    case DType::F32: return magnitudes_below<uint32_t>(data, n, 0x7f800000u);
    case DType::F16: return magnitudes_below<uint16_t>(data, n, 0x7c00u);
    case DType::BF16: return magnitudes_below<uint16_t>(data, n, 0x7f80u);
    default: return true;
  }
}

// Floats of magnitude 2^120 (about 1.3e36) and more, Inf and NaN: a fast transform that adds
// up to 16 values of a tile (Winograd's) may overflow from such inputs where a direct sum,
// adding products of small weights, stays finite. Those inputs take the direct sums.
constexpr uint32_t kLargeMagnitudeBits = (127u + 120u) << 23;

// True when every float32 at data is finite and below 2^120 in magnitude.
inline bool all_moderate(const float* data, int64_t n) {
  return magnitudes_below<uint32_t>(data, n, kLargeMagnitudeBits);
}

}  // namespace gometal
