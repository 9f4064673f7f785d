// exp, erf and the normal distribution for float32, branch-free so that loops calling them
// vectorize: libm's erff ran one element at a time and dominated GELU's fused kernels. The exp op keeps libm's expf
// (elementwise_ops.h); this exp serves erf's tail, and its core serves attention's softmax.
#pragma once

#include <cstdint>
#include <cstring>

namespace gometal::vector_math {

inline float bits_to_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// exp's range reduction and polynomial, shared with attention's exp_nonpositive:
// x = n ln2 + r, |r| <= ln2 / 2. `shifted` holds n in its low bits; `poly` is e^r.
struct ExpParts {
  float shifted;
  float poly;
};

inline ExpParts exp_parts(float clamped) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = clamped * kLog2e + kRound;
  const float n = shifted - kRound;
  const float r = clamped - n * kLn2Hi - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return {shifted, p};
}

// n of exp_parts' `shifted`, as an integer.
inline int32_t exp_exponent(float shifted) {
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return bits - 0x4B400000;
}

// exp(x) within 2 ulp over the whole float range: +inf above 88.72, subnormal results down
// to 0 below -103.97, NaN for NaN. 2^n is applied in two halves so that subnormal results
// and the largest finite ones are both reached without an integer overflow.
inline float exp(float x) {
  const float clamped = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  const ExpParts parts = exp_parts(clamped);
  const int32_t whole = exp_exponent(parts.shifted);  // in [-150, 129]
  const int32_t half = whole >> 1;
  const float result =
      parts.poly * bits_to_float((half + 127) << 23) * bits_to_float((whole - half + 127) << 23);
  return x != x ? x : result;
}

// erf(x) within about 1e-7 absolute and 3 ulp relative: the odd Taylor series below 1,
// 1 - erfc(|x|) above it, with erfc from the Chebyshev fit of Numerical Recipes (fractional
// error below 1.2e-7). Both branches are computed and one is selected, so loops vectorize.
inline float erf(float x) {
  const float a = x < 0.0f ? -x : x;
  const float z = x * x;
  // 2/sqrt(pi) * (-1)^k / (k! (2k + 1)), k = 0..10: the last term left out is < 1e-10 at 1.
  float series = 1.48071928e-8f;
  series = series * z - 1.63658447e-7f;
  series = series * z + 1.64621144e-6f;
  series = series * z - 1.49256504e-5f;
  series = series * z + 1.20553330e-4f;
  series = series * z - 8.54832702e-4f;
  series = series * z + 5.22397763e-3f;
  series = series * z - 2.68661706e-2f;
  series = series * z + 1.12837917e-1f;
  series = series * z - 3.76126389e-1f;
  series = series * z + 1.12837917f;
  const float t = 1.0f / (1.0f + 0.5f * a);
  float q = 0.17087277f;
  q = q * t - 0.82215223f;
  q = q * t + 1.48851587f;
  q = q * t - 1.13520398f;
  q = q * t + 0.27886807f;
  q = q * t - 0.18628806f;
  q = q * t + 0.09678418f;
  q = q * t + 0.37409196f;
  q = q * t + 1.00002368f;
  q = q * t - 1.26551223f;
  const float tail = 1.0f - t * exp(q - z);
  const float large = x < 0.0f ? -tail : tail;
  return a < 1.0f ? x * series : large;
}

// Phi(x), the standard normal distribution function, and exp(-x^2 / 2), sharing one exp:
// Phi is erfc(|x| / sqrt 2) / 2 (or 1 minus it), with erfc(u) = t q(t) exp(-u^2) and
// t = 1 / (1 + u / 2), q a least-squares fit of relative error 4e-8 (GELU in half the time of
// erf's two branches). Relative error within 4e-6 for |x| <= 13 (x^2 / 2 rounded to float32);
// callers handle x < -13, where Phi underflows and is taken as 0.
struct NormalParts {
  float cdf;
  float gauss;
};

inline NormalParts normal_parts(float x) {
  // Clamped so that exp(-x^2 / 2) stays a normal float: 2^n is one exponent field.
  const float c = x < -13.0f ? -13.0f : (x > 13.0f ? 13.0f : x);
  const ExpParts parts = exp_parts(-0.5f * c * c);
  const float gauss = parts.poly * bits_to_float((exp_exponent(parts.shifted) + 127) << 23);
  const float a = c < 0.0f ? -c : c;
  const float t = 1.0f / (1.0f + 0.353553391f * a);
  float q = -0.0294454563f;
  q = q * t + 0.141851291f;
  q = q * t - 0.242692455f;
  q = q * t + 0.1379897f;
  q = q * t - 0.0125892199f;
  q = q * t + 0.101035058f;
  q = q * t + 0.121630475f;
  q = q * t + 0.141176746f;
  q = q * t + 0.141043842f;
  const float half_erfc = t * q * gauss;
  return {c < 0.0f ? half_erfc : 1.0f - half_erfc, gauss};
}

}  // namespace gometal::vector_math
