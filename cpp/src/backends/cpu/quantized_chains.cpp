#include "backends/cpu/quantized_chains.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace gometal {
namespace {

// The step holding only `id`, unfused, or -1.
int single_step(const Fusion& f, int id) {
  const int at = f.step_of[id];
  if (at < 0 || f.steps[at].fused || f.steps[at].nodes.size() != 1) return -1;
  return at;
}

// A merged chain: a quantized_conv2d without a buffer of its own first, a quantize last.
bool is_chain(const Graph& g, const Fusion& f, const Step& step) {
  if (step.fused || step.nodes.size() < 2) return false;
  const int first = step.nodes.front();
  return g.node(first).op == OpKind::QuantizedConv2D && !f.materialized[first] &&
         g.node(step.nodes.back()).op == OpKind::Quantize;
}

// A chain whose quantized value only the next chain's convolution reads (as its input)
// joins that chain's step: the value then lives per image in the kernel's scratch,
// channels-last, and is never transposed to NCHW and back.
template <class OnlyReader>
void link_chains(const Graph& g, Fusion& f, OnlyReader only_reader) {
  std::vector<char> dropped(f.steps.size(), 0);
  for (size_t st = 0; st < f.steps.size(); ++st) {
    if (!is_chain(g, f, f.steps[st])) continue;
    const int q = f.steps[st].nodes.back();
    const int next = only_reader(q);
    if (next < 0 || g.node(next).op != OpKind::QuantizedConv2D) continue;
    const std::vector<int>& in = g.node(next).inputs;
    if (in[0] != q || std::count(in.begin(), in.end(), q) != 1) continue;
    const int later = f.step_of[next];
    if (later <= static_cast<int>(st) || !is_chain(g, f, f.steps[later]) || f.steps[later].nodes.front() != next)
      continue;
    if (effect_between(g, f, static_cast<int>(st), later)) continue;
    std::vector<int> nodes = f.steps[st].nodes;
    nodes.insert(nodes.end(), f.steps[later].nodes.begin(), f.steps[later].nodes.end());
    f.steps[later].nodes = std::move(nodes);
    f.materialized[q] = 0;
    dropped[st] = 1;
  }
  drop_steps(dropped, f);
}

// A quantize whose value only a quantized_conv2d reads, as its input, joins the head of the
// convolution's step: the convolution quantizes each image as it copies it channels-last,
// and the quantized batch is never written out and read back.
template <class OnlyReader>
void fold_input_quantizes(const Graph& g, Fusion& f, OnlyReader only_reader) {
  std::vector<char> dropped(f.steps.size(), 0);
  for (size_t st = 0; st < f.steps.size(); ++st) {
    const Step& step = f.steps[st];
    if (step.fused || step.nodes.size() != 1 || g.node(step.nodes[0]).op != OpKind::Quantize) continue;
    const int q = step.nodes[0];
    const int conv = only_reader(q);
    if (conv < 0 || g.node(conv).op != OpKind::QuantizedConv2D) continue;
    const std::vector<int>& in = g.node(conv).inputs;
    if (in[0] != q || std::count(in.begin(), in.end(), q) != 1) continue;
    const int later = f.step_of[conv];
    if (later <= static_cast<int>(st) || f.steps[later].fused || f.steps[later].nodes.front() != conv) continue;
    if (effect_between(g, f, static_cast<int>(st), later)) continue;
    f.steps[later].nodes.insert(f.steps[later].nodes.begin(), q);
    f.materialized[q] = 0;
    dropped[st] = 1;
  }
  drop_steps(dropped, f);
}

// GOMETAL_INT8_INPUT_FOLD=0 keeps an input quantize in a step of its own (the A/B of the fold
// in benchmarks/bench_int8_cnn.py); unset or 1 folds it.
bool input_fold_enabled() {
  const char* value = std::getenv("GOMETAL_INT8_INPUT_FOLD");
  if (value == nullptr || value[0] == '\0' || std::string(value) == "1") return true;
  if (std::string(value) == "0") return false;
  throw std::invalid_argument("[quantized_conv2d] GOMETAL_INT8_INPUT_FOLD must be 0 or 1, got '" +
                              std::string(value) + "'");
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
    if (effect_between(g, f, static_cast<int>(st), last_step)) continue;
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

  drop_steps(dropped, f);
  link_chains(g, f, only_reader);
  if (input_fold_enabled()) fold_input_quantizes(g, f, only_reader);
}

}  // namespace gometal
