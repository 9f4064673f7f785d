// Groups chains of elementwise ops into single passes over memory.
#pragma once

#include <memory>
#include <vector>

#include "gometal/ir.h"
#include "passes/schedule.h"

namespace gometal {

struct Step {
  bool fused = false;       // a fused elementwise group, else a single kernel
  std::vector<int> nodes;   // members in schedule order (one node when not fused)
};

// Row statistics a norm's forward kernel keeps for the backward kernels of the same x: its
// layer_norm_grad and layer_norm_affine_grad (rms_norm's alike) read each row's mean and
// 1 / std instead of computing them again.
struct SavedNormStats {
  int forward = -1;                            // the layer_norm or rms_norm node that keeps them
  std::shared_ptr<std::vector<float>> values;  // mean, 1 / std per row
};

struct Fusion {
  std::vector<Step> steps;        // in execution order
  std::vector<int> step_of;       // per node id: index in steps, or -1
  std::vector<char> materialized; // per node id: the value needs its own buffer
  std::vector<int> norm_stats_slot;    // per node id: its entry in norm_stats, or -1
  std::vector<SavedNormStats> norm_stats;
  // A fused gelu keeps its slope Phi(x) + x phi(x) for a later fused gelu_grad of the same x,
  // which multiplies g by it instead of evaluating the normal distribution again.
  std::vector<int> gelu_slope_slot;  // per node id (the gelu and its gelu_grads): entry, or -1
  std::vector<std::shared_ptr<std::vector<float>>> gelu_slopes;
};

// Who reads each value of a plan, for the passes that merge a kernel with what follows it
// only when nothing else reads the intermediate.
struct ValueReaders {
  std::vector<std::vector<int>> readers;  // per node id: the needed nodes reading it, once each
  std::vector<char> returned;             // per node id: an output of the function (alias roots)
};
ValueReaders value_readers(const Graph& g, const Schedule& s, const FunctionSpec& fn);

// Removes the steps marked in `dropped` (one flag per step) after a pass merged their nodes
// into other steps, and renumbers step_of.
void drop_steps(const std::vector<char>& dropped, Fusion& f);

// Whether a step strictly between steps `from` and `to` holds an effect (an assign, an
// update): a pass that moves a node from `from` down to `to` must not move it past a write
// of what it reads.
bool effect_between(const Graph& g, const Fusion& f, int from, int to);

// Gives each norm with a gradient op of the same x and eps in the plan a SavedNormStats;
// fuse_elementwise runs it.
void keep_norm_statistics(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          Fusion& f);

// Whether `transpose` takes attention_grad `grad`'s stacked (3, N, H, T, D) to (N, T, 3, H, D),
// back to the layout of the product q, k and v came from, for at most one block of keys:
// fuse_elementwise merges such a transpose, the gradient's only reader, into the gradient's
// step, which then stores so.
bool time_major_attention_grad(const Graph& g, int grad, int transpose, const std::vector<Shape>& shapes);

// Whether attention_grad `grad`'s g is a transpose (0, 2, 1, 3) of a reshape (N, T, H D) ->
// (N, T, H, D), the output projection's gradient split into heads, at most one block of keys
// long: fuse_elementwise merges such a transpose, read only in the gradient's step, into it,
// and the gradient reads g in place.
bool time_major_attention_cotangent(const Graph& g, int grad, const std::vector<Shape>& shapes);

// `shapes` are the concrete shapes of every node for this plan's batch size.
Fusion fuse_elementwise(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                        const std::vector<Shape>& shapes);

}  // namespace gometal
