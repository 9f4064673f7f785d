// The per-row gate math of the recurrence kernels, one call per row and step. Each cell is
// written once as a template over its value type: whole vectors (GCC vector extension, so the
// same source is the portable path), then a scalar tail for widths that are not a multiple.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace gometal::recurrent_cells {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));

template <class T>
inline T load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void store(float* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
inline int32_t as_ints(float x) { return std::bit_cast<int32_t>(x); }
inline float as_floats(int32_t i) { return std::bit_cast<float>(i); }
inline Ints as_ints(Vec x) { return std::bit_cast<Ints>(x); }
inline Vec as_floats(Ints i) { return std::bit_cast<Vec>(i); }
inline float clamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
inline Vec clamp(Vec x, float lo, float hi) {
  const Vec low = Vec{} + lo, high = Vec{} + hi;
  return x < low ? low : (x > high ? high : x);
}

// 1 / d for d >= 1: the hardware estimate and one Newton step (within 2 ulp) where there is
// one; a vector division takes several times as long and bounded the gate math.
inline float reciprocal(float d) { return 1.0f / d; }
inline Vec reciprocal(Vec d) {
#if defined(__AVX512F__)
  const Vec r = std::bit_cast<Vec>(_mm512_maskz_rcp14_ps(0xFFFF, std::bit_cast<__m512>(d)));
  return r * (2.0f - d * r);
#elif defined(__AVX__)
  const Vec r = std::bit_cast<Vec>(_mm256_rcp_ps(std::bit_cast<__m256>(d)));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

// e^x for x in [-87, 88] (the callers clamp; NaN stays NaN): vector_math::exp's range
// reduction and polynomial, with 2^n in one factor since n stays in the normal range.
template <class T>
inline T exp_in_range(T x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const T shifted = x * kLog2e + kRound;
  const T n = shifted - kRound;
  const T r = x - n * kLn2Hi - n * kLn2Lo;
  T p = 1.9875691500e-4f * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * as_floats((as_ints(shifted) - 0x4B400000 + 127) << 23);
}

// Past the clamp e^-x is below float's resolution of 1 (or the result below 1e-37).
template <class T>
inline T sigmoid(T x) {
  return reciprocal(1.0f + exp_in_range(clamp(-x, -87.0f, 88.0f)));
}
// 2 sigmoid(2x) - 1 cancels near 0: below |x| = 1/4 the odd Taylor series to x^9 (its next
// term is under 1e-8 relative) keeps tanh within a few ulp there too.
template <class T>
inline T tanh_fast(T x) {
  const T z = x * x;
  T series = (62.0f / 2835.0f) * z - 17.0f / 315.0f;
  series = series * z + 2.0f / 15.0f;
  series = series * z - 1.0f / 3.0f;
  series = series * z * x + x;
  const T far = 2.0f * sigmoid(2.0f * x) - 1.0f;
  return z < 0.0625f ? series : far;
}
template <class T>
inline T relu(T x) {
  return x > T{} ? x : T{};
}

// Runs lane.template operator()<T>(j) over j in [0, n): Vec at whole vectors, then float.
template <class F>
inline void for_lanes(int64_t n, F&& lane) {
  const int64_t whole = n - n % kLanes;
  for (int64_t j = 0; j < whole; j += kLanes) lane.template operator()<Vec>(j);
  for (int64_t j = whole; j < n; ++j) lane.template operator()<float>(j);
}

// The pre-activation x[j] + b[j] + a[j]: the step's input projection, the bias and h W_hh^T.
template <class T>
inline T pre_activation(const float* x, const float* b, const float* a, int64_t j) {
  return load<T>(x + j) + load<T>(b + j) + load<T>(a + j);
}

// a[j] = act(x[j] + b[j] + a[j]): a holds h W_hh^T on entry, the activations on return.
inline void sigmoid_of_sum(const float* x, const float* b, float* a, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) { store(a + j, sigmoid(pre_activation<T>(x, b, a, j))); });
}
inline void tanh_of_sum(const float* x, const float* b, float* a, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) { store(a + j, tanh_fast(pre_activation<T>(x, b, a, j))); });
}
inline void relu_of_sum(const float* x, const float* b, float* a, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) { store(a + j, relu(pre_activation<T>(x, b, a, j))); });
}

// o tanh(c) (an LSTM's h before a projection).
inline void output_of_cell(const float* o, const float* c, float* h, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) { store(h + j, load<T>(o + j) * tanh_fast(load<T>(c + j))); });
}

// One LSTM step of a row in one pass: a holds the product h W_hh^T (blocks i, f, g, o of n)
// on entry and the activated gates on return (unless kKeepGates is false: inference has no
// backward pass to read them); with x the step's input projection and b the bias,
// c = f c + i g (also into c_out) and h = o tanh(c).
template <bool kKeepGates = true>
inline void lstm_step(const float* x, const float* b, float* a, float* c, float* c_out, float* h, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) {
    const T i = sigmoid(pre_activation<T>(x, b, a, j));
    const T f = sigmoid(pre_activation<T>(x + n, b + n, a + n, j));
    const T g = tanh_fast(pre_activation<T>(x + 2 * n, b + 2 * n, a + 2 * n, j));
    const T o = sigmoid(pre_activation<T>(x + 3 * n, b + 3 * n, a + 3 * n, j));
    const T cn = f * load<T>(c + j) + i * g;
    if constexpr (kKeepGates) {
      store(a + j, i);
      store(a + n + j, f);
      store(a + 2 * n + j, g);
      store(a + 3 * n + j, o);
    }
    store(c + j, cn);
    store(c_out + j, cn);
    store(h + j, o * tanh_fast(cn));
  });
}

// GRU, from the activated r, z (blocks of n) and a_n = W_hn h: hn = a_n + b_hn,
// n = tanh(x_n + b_n + r hn), h = (1 - z) n + z h (h in place).
inline void gru_state(const float* x_n, const float* b_n, const float* rz, const float* a_n, const float* b_hn,
                      float* n_out, float* hn_out, float* h, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) {
    const T r = load<T>(rz + j), z = load<T>(rz + n + j);
    const T hn = load<T>(a_n + j) + load<T>(b_hn + j);
    const T nv = tanh_fast(load<T>(x_n + j) + load<T>(b_n + j) + r * hn);
    store(h + j, (1.0f - z) * nv + z * load<T>(h + j));
    store(n_out + j, nv);
    store(hn_out + j, hn);
  });
}

// LSTM's backward step: from the gates, the cell state c and the one before (cprev), the
// gradient reaching h (before o tanh(c)) and the cell state's gradients from the output (dc_out)
// and from the next step (dc, replaced by the gradient to cprev), the pre-activation
// gradients da (i, f, g, o).
inline void lstm_backward(const float* gates, const float* c, const float* cprev, const float* dh,
                          const float* dc_out, float* dc, float* da, int64_t n) {
  const float *i_at = gates, *f_at = gates + n, *g_at = gates + 2 * n, *o_at = gates + 3 * n;
  for_lanes(n, [&]<class T>(int64_t j) {
    const T i = load<T>(i_at + j), f = load<T>(f_at + j), g = load<T>(g_at + j), o = load<T>(o_at + j);
    const T d = load<T>(dh + j);
    const T tc = tanh_fast(load<T>(c + j));
    const T dct = load<T>(dc + j) + load<T>(dc_out + j) + d * o * (1.0f - tc * tc);
    store(da + j, dct * g * i * (1.0f - i));
    store(da + n + j, dct * load<T>(cprev + j) * f * (1.0f - f));
    store(da + 2 * n + j, dct * i * (1.0f - g * g));
    store(da + 3 * n + j, d * tc * o * (1.0f - o));
    store(dc + j, dct * f);
  });
}

// GRU's backward step: from r, z, n, hn = W_hn h + b_hn, the previous state and the gradient
// reaching h, the gradients of the pre-activations xp (r, z, n) and dhn = r * d(n's
// pre-activation), the gradient of W_hn h + b_hn.
inline void gru_backward(const float* gates, const float* hn, const float* hprev, const float* dh, float* dxp,
                         float* dhn, int64_t n) {
  for_lanes(n, [&]<class T>(int64_t j) {
    const T r = load<T>(gates + j), z = load<T>(gates + n + j), nv = load<T>(gates + 2 * n + j);
    const T d = load<T>(dh + j);
    const T dan = d * (1.0f - z) * (1.0f - nv * nv);
    store(dxp + j, dan * load<T>(hn + j) * r * (1.0f - r));
    store(dxp + n + j, d * (load<T>(hprev + j) - nv) * z * (1.0f - z));
    store(dxp + 2 * n + j, dan);
    store(dhn + j, dan * r);
  });
}

}  // namespace gometal::recurrent_cells
