#include "backends/cpu/quantized_chains.h"

#include <algorithm>

namespace gometal {
namespace {

// The step holding only `id`, unfused, or -1.
int single_step(const Fusion& f, int id) {
  const int at = f.step_of[id];
  if (at < 0 || f.steps[at].fused || f.steps[at].nodes.size() != 1) return -1;
  return at;
}

}  // namespace

void fuse_quantized_chains(const Graph& g, const Schedule& s, const FunctionSpec& fn,
                           const std::vector<Shape>& shapes, Fusion& f) {
  const ValueReaders value = value_readers(g, s, fn);
  const std::vector<std::vector<int>>& readers = value.readers;
  const std::vector<char>& returned = value.returned;
  // A value that flows on: no other reader, not returned, computed in a step of its own.
  auto only_reader = [&](int value) {
    if (returned[value] || returned[s.alias_root[value]] || readers[value].size() != 1) return -1;
    return readers[value][0];
  };

  std::vector<char> dropped(f.steps.size(), 0);
  for (size_t st = 0; st < f.steps.size(); ++st) {
    const Step& step = f.steps[st];
    if (step.fused || step.nodes.size() != 1) continue;
    const int conv = step.nodes[0];
    const Node& c = g.node(conv);
    if (c.op != OpKind::QuantizedConv2D || c.dtype != DType::F32 || shapes[conv].empty()) continue;
    int next = only_reader(conv), pool = -1;
    if (next >= 0 && g.node(next).op == OpKind::MaxPool2D && single_step(f, next) >= 0) {
      pool = next;
      next = only_reader(pool);
    }
    // A reshape (a flatten) reads the pooled bytes as they lie: it takes no step.
    while (next >= 0 && g.node(next).op == OpKind::Reshape && is_alias(g, next)) next = only_reader(next);
    if (next < 0 || g.node(next).op != OpKind::Quantize) continue;
    const int last_step = single_step(f, next);
    if (last_step <= static_cast<int>(st)) continue;
    // The conv moves down to the quantize's step: nothing between may write what it reads.
    bool effect_between = false;
    for (int between = static_cast<int>(st) + 1; between < last_step; ++between)
      for (int id : f.steps[between].nodes) effect_between |= is_effect(g.node(id).op);
    if (effect_between) continue;
    Step merged{false, {conv}};
    if (pool >= 0) merged.nodes.push_back(pool);
    merged.nodes.push_back(next);
    f.steps[last_step] = std::move(merged);
    dropped[st] = 1;
    f.materialized[conv] = 0;
    if (pool >= 0) {
      dropped[f.step_of[pool]] = 1;
      f.materialized[pool] = 0;
    }
  }

  std::vector<Step> kept;
  for (size_t st = 0; st < f.steps.size(); ++st)
    if (!dropped[st]) kept.push_back(std::move(f.steps[st]));
  f.steps = std::move(kept);
  for (size_t st = 0; st < f.steps.size(); ++st)
    for (int id : f.steps[st].nodes) f.step_of[id] = static_cast<int>(st);
}

}  // namespace gometal
