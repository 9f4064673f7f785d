// The per-row gate math of the recurrence kernels, as loops over restrict-qualified arrays
// with branch-free activations, so that each loop vectorizes: one call per row and step.
#pragma once

#include <cstdint>

#include "backends/cpu/vector_math.h"

namespace gometal::recurrent_cells {

// On the polynomial exp; tanh is off by at most a few 1e-8 absolute near 0, where
// 2 / (1 + e^-2x) - 1 cancels.
inline float sigmoid(float x) { return 1.0f / (1.0f + vector_math::exp(-x)); }
inline float tanh_fast(float x) { return 2.0f / (1.0f + vector_math::exp(-2.0f * x)) - 1.0f; }

// a[j] = act(x[j] + a[j]): a holds the step's h W_hh^T on entry, the activations on return.
inline void sigmoid_of_sum(const float* __restrict__ x, float* __restrict__ a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) a[j] = sigmoid(x[j] + a[j]);
}
inline void tanh_of_sum(const float* __restrict__ x, float* __restrict__ a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) a[j] = tanh_fast(x[j] + a[j]);
}
inline void relu_of_sum(const float* __restrict__ x, float* __restrict__ a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j] + a[j];
    a[j] = v > 0.0f ? v : 0.0f;
  }
}

// LSTM, from the activated gates i, f, g, o (blocks of n): c = f c + i g (also into c_out),
// h = o tanh(c).
inline void lstm_state(const float* __restrict__ gates, float* __restrict__ c, float* __restrict__ c_out,
                       float* __restrict__ h, int64_t n) {
  const float *i = gates, *f = gates + n, *g = gates + 2 * n, *o = gates + 3 * n;
  for (int64_t j = 0; j < n; ++j) {
    const float cn = f[j] * c[j] + i[j] * g[j];
    c[j] = cn;
    c_out[j] = cn;
    h[j] = o[j] * tanh_fast(cn);
  }
}

// GRU, from the activated r, z (blocks of n) and a_n = W_hn h: hn = a_n + b_hn,
// n = tanh(x_n + r hn), h = (1 - z) n + z h (h in place).
inline void gru_state(const float* __restrict__ x_n, const float* __restrict__ rz, const float* __restrict__ a_n,
                      const float* __restrict__ b_hn, float* __restrict__ n_out, float* __restrict__ hn_out,
                      float* __restrict__ h, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float r = rz[j], z = rz[n + j];
    const float hn = a_n[j] + b_hn[j];
    const float nv = tanh_fast(x_n[j] + r * hn);
    h[j] = (1.0f - z) * nv + z * h[j];
    n_out[j] = nv;
    hn_out[j] = hn;
  }
}

// LSTM's backward step: from the gates, the cell state c and the one before (cprev), the
// gradient reaching h (before o tanh(c)) and the cell state's gradients from the output (dc_out)
// and from the next step (dc, replaced by the gradient to cprev), the pre-activation
// gradients da (i, f, g, o).
inline void lstm_backward(const float* __restrict__ gates, const float* __restrict__ c,
                          const float* __restrict__ cprev, const float* __restrict__ dh,
                          const float* __restrict__ dc_out, float* __restrict__ dc, float* __restrict__ da,
                          int64_t n) {
  const float *i = gates, *f = gates + n, *g = gates + 2 * n, *o = gates + 3 * n;
  for (int64_t j = 0; j < n; ++j) {
    const float tc = tanh_fast(c[j]);
    const float dct = dc[j] + dc_out[j] + dh[j] * o[j] * (1.0f - tc * tc);
    da[j] = dct * g[j] * i[j] * (1.0f - i[j]);
    da[n + j] = dct * cprev[j] * f[j] * (1.0f - f[j]);
    da[2 * n + j] = dct * i[j] * (1.0f - g[j] * g[j]);
    da[3 * n + j] = dh[j] * tc * o[j] * (1.0f - o[j]);
    dc[j] = dct * f[j];
  }
}

// GRU's backward step: from r, z, n, hn = W_hn h + b_hn, the previous state and the gradient
// reaching h, the gradients of the pre-activations xp (r, z, n) and dhn = r * d(n's
// pre-activation), the gradient of W_hn h + b_hn.
inline void gru_backward(const float* __restrict__ gates, const float* __restrict__ hn,
                         const float* __restrict__ hprev, const float* __restrict__ dh, float* __restrict__ dxp,
                         float* __restrict__ dhn, int64_t n) {
  const float *r = gates, *z = gates + n, *nv = gates + 2 * n;
  for (int64_t j = 0; j < n; ++j) {
    const float dan = dh[j] * (1.0f - z[j]) * (1.0f - nv[j] * nv[j]);
    dxp[j] = dan * hn[j] * r[j] * (1.0f - r[j]);
    dxp[n + j] = dh[j] * (hprev[j] - nv[j]) * z[j] * (1.0f - z[j]);
    dxp[2 * n + j] = dan;
    dhn[j] = dan * r[j];
  }
}

}  // namespace gometal::recurrent_cells
