#include "backends/cpu/optimizer_updates.h"

#include <cmath>

// Each multiply and add rounds on its own, as in the registry's decomposition (which a graph
// view such as ZeRO's shard update runs): a fused multiply-add would move the last bits.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace gometal {

void adam_update(const AdamHyper& h, float step_size, float bc2_sqrt, float decay, int64_t begin, int64_t end,
                 float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g) {
  const float one_minus_b1 = 1.0f - h.beta1, one_minus_b2 = 1.0f - h.beta2;
  // The L2 term (Adam) or none (AdamW: decay multiplies p instead; by 1 keeps p's bits).
  const bool l2 = !h.decoupled_weight_decay;
  for (int64_t i = begin; i < end; ++i) {
    const float grad = l2 ? g[i] + h.weight_decay * p[i] : g[i];
    const float mi = m[i] + one_minus_b1 * (grad - m[i]);
    const float vi = h.beta2 * v[i] + one_minus_b2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + h.eps));
  }
}

namespace {

struct AdamKernel final : Kernel {
  BufRef p, m, v, g, step_size, bc2_sqrt, lr, finite;  // lr, finite: Region::None when absent
  int64_t n;
  AdamHyper hyper;
  void run(const ExecContext& ctx) const override {
    // Loss scaling's skipped step: the flag is 0 and nothing is written.
    if (finite.region != Region::None && *ctx.ptr(finite) != 1.0f) return;
    constexpr int64_t kParallelMin = 1 << 14;
    const int tasks = n < kParallelMin ? 1 : ctx.pool->size();
    float *pp = ctx.ptr(p), *mp = ctx.ptr(m), *vp = ctx.ptr(v);
    const float* gp = ctx.ptr(g);
    const float ss = *ctx.ptr(step_size), bc2 = *ctx.ptr(bc2_sqrt);
    // Formed in float32 as the primitive chain 1 - lr * wd forms it.
    const float decay = lr.region == Region::None ? 1.0f : 1.0f - *ctx.ptr(lr) * hyper.weight_decay;
    ctx.pool->parallel_for(tasks, [&](int task, int) {
      int64_t lo, hi;
      split_range(n, tasks, task, 16, &lo, &hi);
      adam_update(hyper, ss, bc2, decay, lo, hi, pp, mp, vp, gp);
    });
  }
};

}  // namespace

std::unique_ptr<Kernel> make_adam_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                         const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  auto k = std::make_unique<AdamKernel>();
  auto in = [&](size_t i) { return mem.ref[n.inputs[i]]; };
  k->p = in(0);
  k->m = in(1);
  k->v = in(2);
  k->g = in(3);
  k->step_size = in(4);
  k->bc2_sqrt = in(5);
  size_t next = 6;
  if (n.attrs.decoupled_weight_decay) k->lr = in(next++);
  if (n.inputs.size() > next) k->finite = in(next);
  k->n = numel(shapes[n.inputs[0]]);
  k->hyper = {n.attrs.beta1, n.attrs.beta2, n.attrs.eps, n.attrs.weight_decay, n.attrs.decoupled_weight_decay};
  return k;
}

}  // namespace gometal
