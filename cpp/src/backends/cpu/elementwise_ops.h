// The per-element math of every fusable primitive: one line each.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "backends/cpu/vector_math.h"
#include "gometal/ir.h"

namespace gometal::ew {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Rounds to the nearest bfloat16 (ties to even), as bf16 hardware converts; the result
// is that bf16 value widened back to float32. NaN stays NaN (kept quiet, sign kept).
inline float round_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) bits |= 0x00400000u;  // NaN: no carry into inf
  else bits += 0x7FFFu + ((bits >> 16) & 1u);
  bits &= 0xFFFF0000u;
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}

// Exact GELU, x Phi(x), and its derivative Phi(x) + x phi(x) (the slope gelu_grad multiplies g
// by), from one call of vector_math's branch-free normal_parts so that their loops vectorise.
// Below -13 both are 0 (Phi < 1e-38). A forward pass may keep the slope for its gelu_grad
// (fused_elementwise): the same bits as computing it again.
struct GeluAndSlope {
  float value, slope;
};
inline GeluAndSlope gelu_and_slope(float x) {
  const vector_math::NormalParts p = vector_math::normal_parts(x);
  // x phi(x) with x clamped as in normal_parts: a huge x times phi(13) would not vanish.
  const float slope = p.cdf + (x > 13.0f ? 13.0f : x) * 0.39894228040143268f * p.gauss;
  return {x < -13.0f ? -0.0f : x * p.cdf, x < -13.0f ? 0.0f : slope};
}
inline float gelu(float x) { return gelu_and_slope(x).value; }
inline float gelu_grad(float x, float g) { return g * gelu_and_slope(x).slope; }

// Returns false for ops that are not plain unary math.
template <class Loop>
inline bool dispatch_unary(OpKind op, Loop&& loop) {
  switch (op) {
    case OpKind::Neg: loop([](float x) { return -x; }); return true;
    // libm's expf (correctly rounded nearly always): vector_math::exp's last bits differ, and
    // that moves chaotic training runs (the digits job of tests/test_train_job.py).
    case OpKind::Exp: loop([](float x) { return std::exp(x); }); return true;
    case OpKind::Log: loop([](float x) { return std::log(x); }); return true;
    case OpKind::Tanh: loop([](float x) { return std::tanh(x); }); return true;
    case OpKind::Sigmoid: loop([](float x) { return sigmoid(x); }); return true;
    case OpKind::Relu: loop([](float x) { return x <= 0.0f ? 0.0f : x; }); return true;  // NaN stays NaN
    case OpKind::Abs: loop([](float x) { return std::fabs(x); }); return true;
    case OpKind::Sign: loop([](float x) { return static_cast<float>((x > 0.0f) - (x < 0.0f)); }); return true;
    case OpKind::Sqrt: loop([](float x) { return std::sqrt(x); }); return true;
    case OpKind::Rsqrt: loop([](float x) { return 1.0f / std::sqrt(x); }); return true;
    case OpKind::Erf: loop([](float x) { return vector_math::erf(x); }); return true;
    case OpKind::Square: loop([](float x) { return x * x; }); return true;
    case OpKind::Gelu: loop([](float x) { return gelu(x); }); return true;
    case OpKind::RoundBf16: loop([](float x) { return round_bf16(x); }); return true;
    case OpKind::RoundBf16Grad: loop([](float x) { return x; }); return true;
    case OpKind::BroadcastTo: loop([](float x) { return x; }); return true;
    default: return false;
  }
}

template <class Loop>
inline bool dispatch_binary(OpKind op, Loop&& loop) {
  switch (op) {
    case OpKind::Add: loop([](float a, float b) { return a + b; }); return true;
    case OpKind::Sub: loop([](float a, float b) { return a - b; }); return true;
    case OpKind::Mul: loop([](float a, float b) { return a * b; }); return true;
    case OpKind::Div: loop([](float a, float b) { return a / b; }); return true;
    case OpKind::Maximum: loop([](float a, float b) { return a > b || std::isnan(a) ? a : b; }); return true;
    case OpKind::Minimum: loop([](float a, float b) { return a < b || std::isnan(a) ? a : b; }); return true;
    case OpKind::Pow: loop([](float a, float b) { return std::pow(a, b); }); return true;
    case OpKind::GeluGrad: loop([](float x, float g) { return gelu_grad(x, g); }); return true;
    case OpKind::Greater: loop([](float a, float b) { return a > b ? 1.0f : 0.0f; }); return true;
    case OpKind::GreaterEqual: loop([](float a, float b) { return a >= b ? 1.0f : 0.0f; }); return true;
    case OpKind::Less: loop([](float a, float b) { return a < b ? 1.0f : 0.0f; }); return true;
    case OpKind::Equal: loop([](float a, float b) { return a == b ? 1.0f : 0.0f; }); return true;
    default: return false;
  }
}

}  // namespace gometal::ew
