// Fused optimizer updates: one pass over parameter, gradient and slots.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

struct AdamHyper {
  float beta1, beta2, eps, weight_decay;
  bool decoupled_weight_decay = false;
};

// torch.optim.Adam's update for elements [begin, end):
//   g += wd p;  m += (1 - b1)(g - m);  v = b2 v + (1 - b2) g^2;
//   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// With decoupled_weight_decay (torch.optim.AdamW), g keeps no L2 term and the parameter is
// first multiplied by decay = 1 - lr * wd:  p = p * decay - step_size * m / (...).
void adam_update(const AdamHyper& h, float step_size, float bc2_sqrt, float decay, int64_t begin, int64_t end,
                 float* p, float* m, float* v, const float* g);

// The kernel of an adam_update node: (p, m, v, g, step_size, bc2_sqrt[, lr][, finite]),
// lr present with decoupled_weight_decay.
std::unique_ptr<Kernel> make_adam_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                         const std::vector<Shape>& shapes);

}  // namespace gometal
