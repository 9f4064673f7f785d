#include "backends/cpu/passes/sample_tiling.h"

#include <algorithm>
#include <atomic>

#include "gometal/engine.h"

namespace gometal {
namespace {

std::atomic<bool> g_sample_tiling{true};

// Whether dim 0 of a value is the batch: read from the graph's shapes, where the batch
// is a symbol, since a per-channel vector may have as many entries as the batch has images.
bool batch_leading(const Graph& g, int id) {
  const Shape& shape = g.node(id).shape;
  return !shape.empty() && shape[0] == kBatch;
}

// Only steps with real work per image join runs: a (batch,) vector, say, would start or
// join a run that the steps reading its sum must then wait behind.
constexpr int64_t kMinRunSampleFloats = 16;

int64_t sample_floats(const Shape& shape, int64_t batch) { return numel(shape) / batch; }

// Whether any step in `run` or `deferred` reads one of the variables that `effect` writes.
bool reads_written(const Graph& g, const Schedule& s, const Fusion& f, const std::vector<int>& run,
                   const std::vector<int>& deferred, const Step& effect) {
  std::vector<int> written;
  for (int id : effect.nodes)
    for (int var : written_variables(g.node(id))) written.push_back(var);
  for (const std::vector<int>* steps : {&run, &deferred})
    for (int st : *steps)
      for (int id : f.steps[st].nodes)
        for (int in : g.node(id).inputs)
          if (std::find(written.begin(), written.end(), s.alias_root[in]) != written.end()) return true;
  return false;
}

// Whether a deferred step validates something: effects may not move above a check.
bool defers_check(const Graph& g, const Fusion& f, const std::vector<int>& deferred) {
  for (int st : deferred)
    for (int id : f.steps[st].nodes)
      if (is_check(g.node(id).op)) return true;
  return false;
}

}  // namespace

bool reduces_trailing_block(const Shape& in, const std::vector<int64_t>& axes) {
  if (axes.empty() || std::find(axes.begin(), axes.end(), 0) != axes.end()) return false;
  // Every kept dim (size-1 dims aside) comes before every reduced one. When every reduced
  // dim has size 1 the whole image is kept, so reduce_samples copies it all.
  int64_t last_kept = -1, first_reduced = static_cast<int64_t>(in.size());
  for (int64_t d = 0; d < static_cast<int64_t>(in.size()); ++d) {
    if (in[d] == 1) continue;
    if (std::find(axes.begin(), axes.end(), d) != axes.end()) first_reduced = std::min(first_reduced, d);
    else last_kept = d;
  }
  return last_kept < first_reduced;
}

void set_sample_tiling(bool enabled) { g_sample_tiling.store(enabled); }
bool sample_tiling() { return g_sample_tiling.load(); }

bool sample_aligned_inputs(const Graph& g, const Step& step, const std::vector<Shape>& shapes,
                           std::vector<int>* aligned) {
  aligned->clear();
  if (!step.fused) {
    const int id = step.nodes.front();
    switch (g.node(id).op) {
      case OpKind::Conv2D: case OpKind::Conv2DInputGrad: case OpKind::MaxPool2D: case OpKind::AvgPool2D:
      case OpKind::AvgPool2DGrad:
        aligned->push_back(g.node(id).inputs[0]);
        break;
      case OpKind::MaxPool2DGrad:
        aligned->push_back(g.node(id).inputs[0]);
        aligned->push_back(g.node(id).inputs[1]);
        break;
      case OpKind::Sum: case OpKind::Mean:
        if (!reduces_trailing_block(shapes[g.node(id).inputs[0]], g.node(id).attrs.ints)) return false;
        aligned->push_back(g.node(id).inputs[0]);
        break;
      default:
        return false;
    }
    // A value of one image (the pooling of a constant, say) has no image n to run.
    if (!batch_leading(g, id)) return false;
    for (int in : *aligned)
      if (!batch_leading(g, in)) return false;
    return true;
  }
  const Shape& shape = shapes[step.nodes.front()];
  if (!batch_leading(g, step.nodes.front())) return false;
  for (int id : step.nodes) {
    const Node& n = g.node(id);
    if (n.op == OpKind::Assign || shapes[id] != shape) return false;
    for (int in : n.inputs)
      if (shapes[in] == shape) aligned->push_back(in);
  }
  return true;
}

SampleTiling plan_sample_tiling(const Graph& g, const Schedule& s, Fusion& f, const std::vector<Shape>& shapes,
                                int64_t batch, bool enabled) {
  const int steps = static_cast<int>(f.steps.size());
  SampleTiling t;
  t.run_end.resize(steps);
  t.run_begin.resize(steps);
  for (int st = 0; st < steps; ++st) t.run_begin[st] = t.run_end[st] = st;
  if (batch < 2 || !enabled) return t;

  // Where each step (by its index in f.steps) has gone so far.
  enum class Place : uint8_t { Pending, Placed, InRun, Deferred };
  std::vector<Place> place(steps, Place::Pending);
  std::vector<int> order, run, deferred;
  std::vector<std::pair<int, int>> runs;  // [begin, end] in the new order
  auto close_run = [&] {
    if (run.size() > 1) runs.emplace_back(static_cast<int>(order.size()), static_cast<int>(order.size() + run.size()) - 1);
    for (int st : run) order.push_back(st);
    for (int st : deferred) order.push_back(st);
    for (int st : run) place[st] = Place::Placed;
    for (int st : deferred) place[st] = Place::Placed;
    run.clear();
    deferred.clear();
  };

  std::vector<int> aligned;
  for (int st = 0; st < steps; ++st) {
    const Step& step = f.steps[st];
    bool pure = true, reads_run = false, reads_deferred = false;
    // Tileable: runs sample by sample, and reads no computed batch-first value any other way
    // (a later step of a run may overwrite such a value image by image, in place).
    bool tileable = sample_aligned_inputs(g, step, shapes, &aligned);
    int64_t work = sample_floats(shapes[step.nodes.front()], batch);
    for (int in : aligned) work = std::max(work, sample_floats(shapes[in], batch));
    tileable = tileable && work >= kMinRunSampleFloats;
    bool joins = tileable;
    for (int id : step.nodes) {
      if (is_effect(g.node(id).op)) pure = false;
      for (int in : g.node(id).inputs) {
        const int root = s.alias_root[in];
        const int producer = f.step_of[root];
        if (producer < 0 || producer == st) continue;
        const bool by_sample = std::find(aligned.begin(), aligned.end(), in) != aligned.end();
        const bool batch_first = batch_leading(g, root) && batch_leading(g, in);
        if (!by_sample && batch_first) tileable = false;
        if (place[producer] == Place::InRun && !(by_sample && batch_first)) joins = false;
        reads_run |= place[producer] == Place::InRun;
        reads_deferred |= place[producer] == Place::Deferred;
      }
    }
    joins = joins && tileable && !reads_deferred;
      if (!run.empty() && joins) {
      run.push_back(st);
      place[st] = Place::InRun;
    } else if (!run.empty() && !tileable && !reads_run && !reads_deferred &&
               (pure || (!reads_written(g, s, f, run, deferred, step) && !defers_check(g, f, deferred)))) {
      // Independent of the run: hoisted above it. An effect (a running-statistics update,
      // say) may move too when nothing in the run or behind it reads what it writes.
      order.push_back(st);
      place[st] = Place::Placed;
    } else if (!run.empty() && !tileable && pure) {
      deferred.push_back(st);  // needs the run's results: runs after it
      place[st] = Place::Deferred;
    } else {
      close_run();
      if (tileable && pure) {
        run.push_back(st);
        place[st] = Place::InRun;
      } else {
        order.push_back(st);
        place[st] = Place::Placed;
      }
    }
  }
  close_run();

  std::vector<Step> reordered;
  reordered.reserve(steps);
  for (int st : order) reordered.push_back(std::move(f.steps[st]));
  f.steps = std::move(reordered);
  for (int st = 0; st < steps; ++st)
    for (int id : f.steps[st].nodes) f.step_of[id] = st;
  for (const auto& [b, e] : runs)
    for (int st = b; st <= e; ++st) {
      t.run_begin[st] = b;
      t.run_end[st] = e;
    }
  return t;
}

}  // namespace gometal
