// Fused optimizer updates: one pass over parameter, gradient and slots.
#pragma once

#include <cstdint>

#include "backends/cpu/kernel.h"

namespace gometal {

struct AdamHyper {
  float beta1, beta2, eps, weight_decay;
};

// torch.optim.Adam's update for elements [begin, end):
//   g += wd p;  m += (1 - b1)(g - m);  v = b2 v + (1 - b2) g^2;
//   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
void adam_update(const AdamHyper& h, float step_size, float bc2_sqrt, int64_t begin, int64_t end, float* p,
                 float* m, float* v, const float* g);

}  // namespace gometal
