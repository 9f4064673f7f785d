// Sample tiling: a run of consecutive steps in which every output sample depends only on
// the same sample of the run's earlier outputs executes image by image, so each image's
// intermediates are still in cache when the next step of the run reads them.
#pragma once

#include <vector>

#include "gometal/ir.h"
#include "backends/cpu/passes/fusion.h"
#include "passes/schedule.h"

namespace gometal {

struct SampleTiling {
  std::vector<int> run_end;  // per step: the last step of its tiled run (itself when untiled)
  std::vector<int> run_begin;
};

// Whether a reduction over `axes` of a value of shape `in` keeps dim 0 and reduces only a
// trailing block of dims (an (N, C, H, W) tensor summed over H and W): it can then run
// image by image, with the same arithmetic as over the whole batch.
bool reduces_trailing_block(const Shape& in, const std::vector<int64_t>& axes);

// Input positions a step reads sample by sample (x of a convolution, dy of its input
// gradient, the full-shape operands of a fused group); false when the step cannot be tiled.
bool sample_aligned_inputs(const Graph& g, const Step& step, const std::vector<Shape>& shapes,
                           std::vector<int>* aligned);

// Reorders f's steps so that tileable steps meet: a step independent of the open run moves
// above it, and one that needs the run's results (a bias-gradient sum, say) moves below it.
// Only pure steps move; an effect closes the run.
// With `enabled` false nothing is tiled (the steps run one by one over the whole batch).
SampleTiling plan_sample_tiling(const Graph& g, const Schedule& s, Fusion& f, const std::vector<Shape>& shapes,
                                int64_t batch, bool enabled);

}  // namespace gometal
