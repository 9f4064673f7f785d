// The per-element loops below are compute-bound for erf, gelu and their gradients: where the
// build targets AVX-512, full-width vectors ran them 1.4x faster than GCC's default 256-bit
// choice for this CPU (gelu and gelu_grad over 768 x 512 floats, one thread). A preference, not
// an instruction set: builds without AVX-512 are unchanged, and results are bit-identical.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC target("prefer-vector-width=512")
#endif
#include "backends/cpu/fused_elementwise.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "backends/cpu/elementwise_ops.h"
#include "runtime/rng.h"

namespace gometal {
namespace {

constexpr int64_t kBlock = 256;
// Registers sit 64 bytes further apart than a block, so a register and the input block it
// reads never share an address modulo 4 KiB (a false store-to-load dependency on x86).
constexpr int64_t kRegStride = kBlock + 16;
constexpr int kMaxRank = 8;
constexpr int kMaxSlots = 160;
// Below this many elements a group runs on one thread: waking the pool costs more.
constexpr int64_t kParallelMin = 1 << 14;

enum class InputKind : uint8_t { Direct, Scalar, Broadcast };

struct InputDesc {
  BufRef ref;
  InputKind kind;
  int rank = 0;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};
  int reg = -1;  // scratch register a broadcast input is gathered into
};

struct Instr {
  OpKind op;
  int dst;        // slot
  int a, b, c;    // slots (-1 unused)
  uint32_t salt;  // random_uniform stream
  int slope = -1;  // gelu: keeps its slope there (an entry of the kernel's slopes); gelu_grad: reads it
};

struct Store {
  int slot;
  BufRef dst;
};

// Gathers elements [start, start + len) of a broadcast input into `out`.
void gather_broadcast(const InputDesc& in, const float* base, int64_t start, int64_t len, float* out) {
  int64_t idx[kMaxRank];
  int64_t rem = start, off = 0;
  for (int d = in.rank - 1; d >= 0; --d) {
    idx[d] = rem % in.dims[d];
    rem /= in.dims[d];
    off += idx[d] * in.strides[d];
  }
  const int last = in.rank - 1;
  const int64_t inner = in.dims[last], st = in.strides[last];
  while (len > 0) {
    const int64_t cnt = std::min(len, inner - idx[last]);
    if (st == 0) std::fill(out, out + cnt, base[off]);
    else if (st == 1) std::memcpy(out, base + off, cnt * sizeof(float));
    else for (int64_t i = 0; i < cnt; ++i) out[i] = base[off + i * st];
    out += cnt;
    len -= cnt;
    idx[last] += cnt;
    off += cnt * st;
    if (idx[last] == inner) {
      idx[last] = 0;
      off -= inner * st;
      for (int d = last - 1; d >= 0; --d) {
        ++idx[d];
        off += in.strides[d];
        if (idx[d] < in.dims[d]) break;
        off -= in.dims[d] * in.strides[d];
        idx[d] = 0;
      }
    }
  }
}

template <class F>
inline void map1(float* d, const float* a, bool as, int64_t n, F f) {
  if (as) {
    const float v = f(a[0]);
    for (int64_t i = 0; i < n; ++i) d[i] = v;
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = f(a[i]);
  }
}

template <class F>
inline void map2(float* d, const float* a, bool as, const float* b, bool bs, int64_t n, F f) {
  if (!as && !bs) {
    for (int64_t i = 0; i < n; ++i) d[i] = f(a[i], b[i]);
  } else if (as && !bs) {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) d[i] = f(av, b[i]);
  } else if (!as) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) d[i] = f(a[i], bv);
  } else {
    const float v = f(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) d[i] = v;
  }
}

// gelu(x) into d (which may be x's own buffer) and its slope into `slope`, one normal_parts
// each; the loop vectorises only without a per-element choice of index.
void gelu_keeping_slope(float* d, float* slope, const float* x, bool scalar, int64_t n) {
  if (scalar) {
    const ew::GeluAndSlope both = ew::gelu_and_slope(x[0]);
    std::fill(d, d + n, both.value);
    std::fill(slope, slope + n, both.slope);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const ew::GeluAndSlope both = ew::gelu_and_slope(x[i]);
    d[i] = both.value;
    slope[i] = both.slope;
  }
}

// Scalar-ness is a template parameter so every variant vectorises.
template <bool SC, bool SX, bool SY>
void select_loop(float* d, const float* c, const float* x, const float* y, int64_t n) {
  // Both loads happen unconditionally, so the compiler can blend instead of branch.
  for (int64_t i = 0; i < n; ++i) {
    const float xv = x[SX ? 0 : i], yv = y[SY ? 0 : i];
    d[i] = c[SC ? 0 : i] != 0.0f ? xv : yv;
  }
}

void select_block(float* d, const float* c, bool sc, const float* x, bool sx, const float* y, bool sy,
                  int64_t n) {
  using Loop = void (*)(float*, const float*, const float*, const float*, int64_t);
  static constexpr Loop kLoops[8] = {select_loop<false, false, false>, select_loop<false, false, true>,
                                     select_loop<false, true, false>,  select_loop<false, true, true>,
                                     select_loop<true, false, false>,  select_loop<true, false, true>,
                                     select_loop<true, true, false>,   select_loop<true, true, true>};
  kLoops[(sc ? 4 : 0) | (sx ? 2 : 0) | (sy ? 1 : 0)](d, c, x, y, n);
}

class FusedElementwiseKernel final : public Kernel {
 public:
  int64_t n = 0;
  int64_t samples = 1;  // the group shape's leading dimension
  std::vector<InputDesc> inputs;
  std::vector<Instr> instrs;
  std::vector<Store> stores;
  std::vector<Store> placed;  // registers that live in their output buffer
  std::vector<std::shared_ptr<std::vector<float>>> slopes;  // kept gelu slopes (Fusion::gelu_slopes)
  int num_slots = 0;   // inputs first, then registers
  int num_regs = 0;
  int broadcast_regs = 0;  // registers: broadcast gathers first, then one per member

  int64_t scratch_floats() const override { return num_regs * kRegStride; }

  void run(const ExecContext& ctx) const override {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const int tasks = n < kParallelMin ? 1 : balanced_tasks(*ctx.pool, blocks);
    ctx.pool->parallel_for(tasks, [&](int task, int thread) {
      int64_t b0, b1;
      split_range(blocks, tasks, task, 1, &b0, &b1);
      float* regs = ctx.thread_scratch(thread);
      for (int64_t b = b0; b < b1; ++b) run_block(ctx, regs, b * kBlock, std::min(kBlock, n - b * kBlock));
    });
  }

  void run_samples(const ExecContext& ctx, int64_t n0, int64_t n1, int thread) const override {
    const int64_t per_sample = n / samples, end = n1 * per_sample;
    float* regs = ctx.thread_scratch(thread);
    for (int64_t start = n0 * per_sample; start < end; start += kBlock)
      run_block(ctx, regs, start, std::min(kBlock, end - start));
  }

 private:
  void run_block(const ExecContext& ctx, float* regs, int64_t start, int64_t len) const {
    const float* src[kMaxSlots];
    bool scalar[kMaxSlots];
    const int ni = static_cast<int>(inputs.size());
    for (int i = 0; i < ni; ++i) {
      const InputDesc& in = inputs[i];
      const float* base = ctx.ptr(in.ref);
      scalar[i] = in.kind == InputKind::Scalar;
      if (in.kind == InputKind::Direct) {
        src[i] = base + start;
      } else if (in.kind == InputKind::Scalar) {
        src[i] = base;
      } else {
        float* r = regs + in.reg * kRegStride;
        gather_broadcast(in, base, start, len, r);
        src[i] = r;
      }
    }
    for (int s = ni; s < num_slots; ++s) {
      src[s] = regs + (broadcast_regs + s - ni) * kRegStride;
      scalar[s] = false;
    }
    for (const Store& p : placed) src[p.slot] = ctx.ptr(p.dst) + start;
    for (const Instr& ins : instrs) {
      float* d = const_cast<float*>(src[ins.dst]);
      if (ins.op == OpKind::RandomUniform) {
        philox_uniform(ctx.seed, ins.salt, ctx.rng_step, start, len, d);
        continue;
      }
      if (ins.slope >= 0) {
        float* slope = slopes[static_cast<size_t>(ins.slope)]->data() + start;
        if (ins.op == OpKind::GeluGrad) {  // g times the slope its gelu kept
          map2(d, slope, false, src[ins.b], scalar[ins.b], len, [](float s, float g) { return g * s; });
        } else {
          gelu_keeping_slope(d, slope, src[ins.a], scalar[ins.a], len);
        }
        continue;
      }
      if (ins.op == OpKind::Select) {
        select_block(d, src[ins.a], scalar[ins.a], src[ins.b], scalar[ins.b], src[ins.c], scalar[ins.c], len);
        continue;
      }
      // Every op here was checked at compile time (fusable_on_cpu), so one of these runs.
      if (!ew::dispatch_unary(ins.op, [&](auto f) { map1(d, src[ins.a], scalar[ins.a], len, f); }))
        ew::dispatch_binary(ins.op, [&](auto f) {
          map2(d, src[ins.a], scalar[ins.a], src[ins.b], scalar[ins.b], len, f);
        });
    }
    for (const Store& st : stores) {
      float* out = ctx.ptr(st.dst) + start;
      if (scalar[st.slot]) std::fill(out, out + len, src[st.slot][0]);
      else std::memcpy(out, src[st.slot], len * sizeof(float));
    }
  }
};

// Aligns `in` to `out` (numpy broadcasting) and collapses dims that iterate together.
InputDesc describe_input(const BufRef& ref, const Shape& in, const Shape& out) {
  InputDesc d;
  d.ref = ref;
  if (numel(in) == 1) {
    d.kind = InputKind::Scalar;
    return d;
  }
  if (in == out) {
    d.kind = InputKind::Direct;
    return d;
  }
  d.kind = InputKind::Broadcast;
  const size_t rank = out.size(), lead = rank - in.size();
  std::vector<int64_t> dims, strides;
  int64_t stride = 1;
  std::vector<int64_t> in_strides(rank, 0);
  for (size_t i = rank; i-- > 0;) {
    const int64_t din = i < lead ? 1 : in[i - lead];
    in_strides[i] = din == 1 ? 0 : stride;
    stride *= din;
  }
  for (size_t i = 0; i < rank; ++i) {
    if (out[i] == 1) continue;
    if (!dims.empty()) {
      const bool both_zero = strides.back() == 0 && in_strides[i] == 0;
      const bool contiguous = strides.back() != 0 && strides.back() == in_strides[i] * out[i];
      if (both_zero || contiguous) {
        dims.back() *= out[i];
        strides.back() = in_strides[i];
        continue;
      }
    }
    dims.push_back(out[i]);
    strides.push_back(in_strides[i]);
  }
  if (dims.size() > static_cast<size_t>(kMaxRank))
    throw std::invalid_argument("[fused_elementwise] broadcast of rank > 8 is not supported");
  d.rank = static_cast<int>(dims.size());
  for (int i = 0; i < d.rank; ++i) {
    d.dims[i] = dims[i];
    d.strides[i] = strides[i];
  }
  return d;
}

bool same_buffer(const BufRef& a, const BufRef& b) {
  return a.region == b.region && a.index == b.index && a.offset == b.offset;
}

// Lets a member compute straight into the buffer it is stored to, saving the copy, when
// no later instruction reads that buffer as an input.
void place_registers_in_outputs(FusedElementwiseKernel& k) {
  const int ni = static_cast<int>(k.inputs.size());
  std::vector<Store> kept;
  std::vector<char> placed(k.num_slots, 0);
  for (const Store& st : k.stores) {
    const int slot = st.slot;
    bool ok = slot >= ni && !placed[slot];
    size_t def = 0;
    while (ok && def < k.instrs.size() && k.instrs[def].dst != slot) ++def;
    for (size_t j = def + 1; ok && j < k.instrs.size(); ++j)
      for (int operand : {k.instrs[j].a, k.instrs[j].b, k.instrs[j].c})
        if (operand >= 0 && operand < ni && same_buffer(k.inputs[operand].ref, st.dst)) ok = false;
    if (!ok) {
      kept.push_back(st);
      continue;
    }
    placed[slot] = 1;
    k.placed.push_back({slot, st.dst});
  }
  // Copies of a placed register read from its new home, so they run after the instructions.
  k.stores = kept;
}

}  // namespace

bool fusable_on_cpu(OpKind op) {
  if (op == OpKind::Select || op == OpKind::RandomUniform || op == OpKind::Assign) return true;
  const auto nothing1 = [](auto) {};
  return ew::dispatch_unary(op, nothing1) || ew::dispatch_binary(op, nothing1);
}

std::unique_ptr<Kernel> make_fused_elementwise(const Graph& g, const Step& step,
                                               const Fusion& f, const MemoryPlan& mem,
                                               const std::vector<Shape>& shapes) {
  auto k = std::make_unique<FusedElementwiseKernel>();
  const Shape& shape = shapes[step.nodes.front()];
  k->n = numel(shape);
  k->samples = shape.empty() || shape[0] == 0 ? 1 : shape[0];

  std::vector<int> member_slot(g.size(), -1);
  std::vector<std::pair<int, int>> input_slot;  // (node id, slot)
  int broadcast_regs = 0;
  auto is_member = [&](int id) {
    return std::find(step.nodes.begin(), step.nodes.end(), id) != step.nodes.end();
  };
  auto slot_of = [&](int id) -> int {
    for (auto& [nid, slot] : input_slot)
      if (nid == id) return slot;
    InputDesc d = describe_input(mem.ref[id], shapes[id], shape);
    if (d.kind == InputKind::Broadcast) d.reg = broadcast_regs++;
    k->inputs.push_back(d);
    const int slot = static_cast<int>(k->inputs.size()) - 1;
    input_slot.emplace_back(id, slot);
    return slot;
  };

  // A gelu_grad whose gelu kept the slope reads no x (which may have no buffer).
  auto kept_slope = [&](int id) {
    return f.gelu_slope_slot.empty() ? -1 : f.gelu_slope_slot[static_cast<size_t>(id)];
  };
  auto skips_x = [&](int id) { return g.node(id).op == OpKind::GeluGrad && kept_slope(id) >= 0; };
  // Inputs from outside the group take the first slots; random_uniform reads only its shape.
  for (int id : step.nodes) {
    const Node& n = g.node(id);
    if (n.op == OpKind::RandomUniform) continue;
    for (size_t i = n.op == OpKind::Assign || skips_x(id) ? 1 : 0; i < n.inputs.size(); ++i)
      if (!is_member(n.inputs[i])) slot_of(n.inputs[i]);
  }
  const int ni = static_cast<int>(k->inputs.size());
  int members = 0;
  for (int id : step.nodes)
    if (g.node(id).op != OpKind::Assign) member_slot[id] = ni + members++;
  k->num_slots = ni + members;
  k->num_regs = broadcast_regs + members;
  k->broadcast_regs = broadcast_regs;
  if (k->num_slots > kMaxSlots)
    throw std::invalid_argument("[fused_elementwise] group too large (" + std::to_string(k->num_slots) +
                                " slots)");

  auto operand = [&](int id) {
    if (is_member(id)) return member_slot[id];
    for (auto& [nid, slot] : input_slot)
      if (nid == id) return slot;
    throw std::logic_error("[fused_elementwise] operand not resolved");
  };

  for (int id : step.nodes) {
    const Node& n = g.node(id);
    if (n.op == OpKind::Assign) {
      k->stores.push_back({operand(n.inputs[1]), mem.ref[n.inputs[0]]});
      continue;
    }
    if (!fusable_on_cpu(n.op))
      throw std::logic_error("[cpu] elementwise op '" + std::string(op_name(n.op)) +
                             "' has no line in elementwise_ops.h");
    Instr ins{n.op, member_slot[id], -1, -1, -1, static_cast<uint32_t>(id)};
    if (n.op != OpKind::RandomUniform) {
      if (!n.inputs.empty() && !skips_x(id)) ins.a = operand(n.inputs[0]);
      if (n.inputs.size() > 1) ins.b = operand(n.inputs[1]);
      if (n.inputs.size() > 2) ins.c = operand(n.inputs[2]);
    }
    if (const int kept = kept_slope(id); kept >= 0) {
      ins.slope = static_cast<int>(k->slopes.size());
      k->slopes.push_back(f.gelu_slopes[static_cast<size_t>(kept)]);
    }
    k->instrs.push_back(ins);
    if (f.materialized[id]) k->stores.push_back({member_slot[id], mem.ref[id]});
  }
  place_registers_in_outputs(*k);
  return k;
}

}  // namespace gometal
