// Layer and RMS normalization over the last axis of (rows x dim), forward, dL/dx and the
// affine (weight, bias) gradients.
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"
#include "backends/cpu/simd_paths.h"

namespace gometal {

// The vector path of the row kernels: GOMETAL_NORM_KERNEL ("portable", "avx2", "avx512") or,
// unset, the fastest this CPU has. Throws std::invalid_argument for a name it cannot run.
SimdPath choose_norm_path();

struct NormGeometry {
  int64_t rows = 0, dim = 0;
  float eps = 0.0f;
  bool centre = true;  // layer_norm subtracts the row mean; rms_norm does not
  SimdPath path = choose_norm_path();
};

// y = xhat * weight + bias, xhat = (x - mean) / sqrt(var + eps) (or x / sqrt(mean(x^2) + eps));
// weight and bias may be null. `kept`, when not null, receives each row's mean and 1 / std
// (2 floats per row), which the backward functions of the same x may read as `saved`
// instead of computing them again (the same floats either way).
void norm_forward(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* weight, const float* bias,
                  float* y, float* kept = nullptr);

// dx = rstd (gw - mean(gw) - xhat mean(gw xhat)), gw = g * weight (weight may be null); the
// mean(gw) term only when centring.
void norm_backward(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g, const float* weight,
                   float* dx, const float* saved = nullptr);

// The weight and bias gradients of the affine norm in one pass: out (2 x dim) holds the sums
// over rows of g * xhat and of g. `partials` holds norm_affine_grad_blocks(geo) * 2 * dim floats.
void norm_affine_grad(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g, float* partials,
                      float* out, const float* saved = nullptr);
int64_t norm_affine_grad_blocks(const NormGeometry& geo);

// norm_backward and norm_affine_grad of the same x and g in one pass over both: each row's
// dx and its terms of the affine sums are the bits the two functions give apart. A null dx
// computes the affine sums alone (norm_affine_grad).
void norm_backward_and_affine_grad(ThreadPool& pool, const NormGeometry& geo, const float* x, const float* g,
                                   const float* weight, float* dx, float* partials, float* out,
                                   const float* saved = nullptr);

}  // namespace gometal
