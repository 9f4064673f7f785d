// Whether a buffer of floats holds only finite values: the engine refuses inputs that do not,
// and kernels whose arithmetic would turn an infinity into NaN take another path.
#pragma once

#include <cstdint>
#include <cstring>

#include "gometal/ir.h"

namespace gometal {

// Inf and NaN are the floats whose exponent bits are all set. Integer operations vectorise
// without reassociating float math.
template <class Bits>
bool exponents_not_all_set(const void* data, int64_t n, Bits exponent) {
  const auto* x = static_cast<const char*>(data);
  Bits bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    Bits bits;
    std::memcpy(&bits, x + i * sizeof(Bits), sizeof bits);
    bad |= static_cast<Bits>((bits & exponent) == exponent);
  }
  return bad == 0;
}

// True when every one of the n values of `dtype` at data is finite (always for integer dtypes).
inline bool all_finite(const void* data, int64_t n, DType dtype) {
  switch (dtype) {
    case DType::F32: return exponents_not_all_set<uint32_t>(data, n, 0x7f800000u);
    case DType::F16: return exponents_not_all_set<uint16_t>(data, n, 0x7c00u);
    case DType::BF16: return exponents_not_all_set<uint16_t>(data, n, 0x7f80u);
    default: return true;
  }
}

}  // namespace gometal
