#include "backends/cpu/optimizer_updates.h"

#include <cmath>

namespace gometal {

void adam_update(const AdamHyper& h, float step_size, float bc2_sqrt, int64_t begin, int64_t end,
                 float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g) {
  const float one_minus_b1 = 1.0f - h.beta1, one_minus_b2 = 1.0f - h.beta2;
  for (int64_t i = begin; i < end; ++i) {
    const float grad = g[i] + h.weight_decay * p[i];
    const float mi = m[i] + one_minus_b1 * (grad - m[i]);
    const float vi = h.beta2 * v[i] + one_minus_b2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + h.eps));
  }
}

}  // namespace gometal
