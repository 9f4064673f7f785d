#include "backends/cpu/passes/conv_epilogues.h"

#include <algorithm>

#include "backends/cpu/conv.h"
#include "ir/conv_geometry.h"

namespace gometal {
namespace {

// An epilogue read off a chain of nodes: its operands (node ids, -1 when absent) in the
// order the kernel applies them.
struct Chain {
  std::vector<int> nodes;
  int bias = -1, scale = -1, shift = -1;
  bool relu = false;
};

// One float32 value per output channel: (O, 1, 1), as a layer's bias, or (1, O, 1, 1).
bool per_channel(const Graph& g, int id, const std::vector<Shape>& shapes, int64_t channels) {
  const Shape& s = shapes[id];
  if (g.node(id).dtype != DType::F32) return false;
  if (s.size() == 3) return s[0] == channels && s[1] == 1 && s[2] == 1;
  return s.size() == 4 && s[0] == 1 && s[1] == channels && s[2] == 1 && s[3] == 1;
}

// Adds node `next`, which reads the chain's value `prev`, to the chain; false when it is
// no part of an epilogue or comes out of the order bias, scale, shift, relu.
bool extend(const Graph& g, int prev, int next, const std::vector<Shape>& shapes, Chain& chain) {
  const Node& n = g.node(next);
  if (n.dtype != DType::F32 || shapes[next] != shapes[prev] || chain.relu) return false;
  if (n.op == OpKind::Relu) {
    chain.relu = true;
  } else {
    if ((n.op != OpKind::Add && n.op != OpKind::Mul) || n.inputs.size() != 2) return false;
    const int other = n.inputs[0] == prev ? n.inputs[1] : n.inputs[0];
    if (other == prev || !per_channel(g, other, shapes, shapes[prev][1])) return false;
    if (n.op == OpKind::Mul) {
      if (chain.scale >= 0 || chain.shift >= 0) return false;
      chain.scale = other;
    } else if (chain.bias < 0 && chain.scale < 0) {
      chain.bias = other;
    } else if (chain.shift < 0) {
      chain.shift = other;
    } else {
      return false;
    }
  }
  chain.nodes.push_back(next);
  return true;
}

bool is_float_conv(const Graph& g, int id, const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  return n.op == OpKind::Conv2D && n.dtype == DType::F32 && shapes[id].size() == 4;
}

ConvGeometry geometry_of(const Graph& g, int conv, const std::vector<Shape>& shapes) {
  const Node& n = g.node(conv);
  return conv_geometry(op_name(n.op), shapes[n.inputs[0]], &shapes[n.inputs[1]], n.attrs);
}

// Whether `pool` is a 2x2, stride 2, unpadded max pooling of a value in `shape`.
bool is_pool_2x2(const Graph& g, int pool, const Shape& shape) {
  const Node& n = g.node(pool);
  if (n.op != OpKind::MaxPool2D || n.dtype != DType::F32) return false;
  const ConvGeometry p = conv_geometry(op_name(n.op), shape, nullptr, n.attrs);
  return p.kh == 2 && p.kw == 2 && p.sh == 2 && p.sw == 2 && p.ph == 0 && p.pw == 0;
}

// The max pooling that is the only reader of `value` (the end of conv's chain) and runs as
// a step of its own, when the conv's kernel can pool; else -1.
int pooled_by(const Graph& g, int conv, int value, const std::vector<std::vector<int>>& readers,
              const std::vector<char>& returned, const Fusion& f, const std::vector<Shape>& shapes) {
  if (readers[value].size() != 1 || returned[value]) return -1;
  const int pool = readers[value][0];
  const int at = f.step_of[pool];
  if (at < 0 || f.steps[at].fused || f.steps[at].nodes.size() != 1 || !is_pool_2x2(g, pool, shapes[value]))
    return -1;
  return conv2d_forward_pools(geometry_of(g, conv, shapes)) ? pool : -1;
}

struct ConvEpilogueKernel final : Kernel {
  ConvGeometry geo;
  BufRef x, w, y, bias, scale, shift;  // Region::None for an absent operand
  bool relu = false, pool = false;
  int64_t scratch = 0;
  int64_t scratch_floats() const override { return scratch; }

  ConvEpilogue epilogue(const ExecContext& ctx) const {
    auto operand = [&](const BufRef& r) -> const float* { return r.region == Region::None ? nullptr : ctx.ptr(r); };
    return {operand(bias), operand(scale), operand(shift), relu, pool};
  }
  void run(const ExecContext& ctx) const override {
    conv2d_forward(ctx, geo, ctx.ptr(x), ctx.ptr(w), ctx.ptr(y), epilogue(ctx));
  }
  void run_samples(const ExecContext& ctx, int64_t n0, int64_t n1, int thread) const override {
    conv2d_forward_samples(geo, ctx.ptr(x), ctx.ptr(w), ctx.ptr(y), n0, n1, ctx.thread_scratch(thread), epilogue(ctx));
  }
};

}  // namespace

void fuse_conv_epilogues(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                         Fusion& f) {
  const ValueReaders value = value_readers(g, s, fn);
  const std::vector<std::vector<int>>& readers = value.readers;
  const std::vector<char>& returned = value.returned;

  std::vector<char> dropped(f.steps.size(), 0);
  for (size_t st = 0; st < f.steps.size(); ++st) {
    const Step& step = f.steps[st];
    if (step.fused || step.nodes.size() != 1 || !is_float_conv(g, step.nodes[0], shapes)) continue;
    const int conv = step.nodes[0];
    if (returned[conv]) continue;
    // Walk the conv's single-reader chain through one fused step, up to its first value
    // that keeps a buffer; the chain counts only if it is that whole step.
    Chain chain;
    int prev = conv, last_step = -1;
    bool ends_in_buffer = false;
    while (readers[prev].size() == 1) {
      const int next = readers[prev][0];
      const int at = f.step_of[next];
      if (at < 0 || !f.steps[at].fused || (last_step >= 0 && at != last_step)) break;
      if (!extend(g, prev, next, shapes, chain)) break;
      last_step = at;
      prev = next;
      if (f.materialized[next] || returned[next]) {
        ends_in_buffer = true;
        break;
      }
    }
    if (!ends_in_buffer || f.steps[last_step].nodes.size() != chain.nodes.size()) {
      chain = Chain{};
      last_step = static_cast<int>(st);
    }
    // Then a 2x2 max pooling reading only the chain's last value, where the kernel pools.
    const int last = chain.nodes.empty() ? conv : chain.nodes.back();
    const int pool = pooled_by(g, conv, last, readers, returned, f, shapes);
    if (pool >= 0) {
      chain.nodes.push_back(pool);
      last_step = f.step_of[pool];
    }
    if (chain.nodes.empty() || last_step <= static_cast<int>(st)) continue;
    // The conv moves down to the last merged step: nothing between may write what it reads.
    if (effect_between(g, f, static_cast<int>(st), last_step)) continue;
    const int epilogue_step = f.step_of[chain.nodes.front()];
    Step merged{false, {conv}};
    merged.nodes.insert(merged.nodes.end(), chain.nodes.begin(), chain.nodes.end());
    f.steps[last_step] = std::move(merged);
    if (epilogue_step != last_step) dropped[epilogue_step] = 1;
    f.materialized[conv] = 0;
    if (pool >= 0) f.materialized[last] = 0;
    dropped[st] = 1;
  }

  drop_steps(dropped, f);
}

std::unique_ptr<Kernel> make_conv_epilogue_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                  const std::vector<Shape>& shapes) {
  if (!is_float_conv(g, id, shapes) || mem.ref[id].region != Region::None) return nullptr;
  // The chain again, as fuse_conv_epilogues found it: readers outside this function have
  // no shape here, and every value but the last has no buffer.
  Chain chain;
  bool pool = false;
  int prev = id;
  while (mem.ref[prev].region == Region::None) {
    int next = -1;
    for (int i = 0; i < g.size() && next < 0; ++i) {
      const std::vector<int>& in = g.node(i).inputs;
      if (!shapes[i].empty() && std::find(in.begin(), in.end(), prev) != in.end()) next = i;
    }
    if (next >= 0 && is_pool_2x2(g, next, shapes[prev])) {
      pool = true;
    } else if (next < 0 || !extend(g, prev, next, shapes, chain)) {
      throw std::logic_error("[cpu] conv2d epilogue: the merged step's chain is broken");
    }
    prev = next;
  }
  const Node& n = g.node(id);
  auto k = std::make_unique<ConvEpilogueKernel>();
  k->geo = geometry_of(g, id, shapes);
  k->scratch = conv2d_scratch(k->geo, false);
  k->x = mem.ref[n.inputs[0]];
  k->w = mem.ref[n.inputs[1]];
  k->y = mem.ref[prev];
  auto ref = [&](int operand) { return operand < 0 ? BufRef{} : mem.ref[operand]; };
  k->bias = ref(chain.bias);
  k->scale = ref(chain.scale);
  k->shift = ref(chain.shift);
  k->relu = chain.relu;
  k->pool = pool;
  return k;
}

}  // namespace gometal
