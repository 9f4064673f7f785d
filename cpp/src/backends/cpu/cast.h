// Conversions between every pair of dtypes, element by element.
#pragma once

#include <cstdint>

#include "gometal/ir.h"

namespace gometal {

// y[i] = x[i] converted from `from` to `to`:
//  - floats to floats round to nearest, ties to even (float16 and bfloat16 overflow to inf);
//  - floats to integers truncate toward zero and saturate at the type's range, NaN giving 0;
//  - integers to narrower integers wrap (two's complement), as NumPy's astype does;
//  - anything to bool is "not zero" (NaN is true); bool to anything is 0 or 1.
void cast(DType from, const void* x, int64_t n, DType to, void* y);

// The float16 and bfloat16 bits nearest to a float32 (ties to even), and back.
uint16_t float_to_half(float x);
float half_to_float(uint16_t bits);
uint16_t float_to_bfloat(float x);
float bfloat_to_float(uint16_t bits);

}  // namespace gometal
