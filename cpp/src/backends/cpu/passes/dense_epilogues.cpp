#include "backends/cpu/passes/dense_epilogues.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "backends/cpu/gemm_packed.h"
#include "ir/op_registry.h"

namespace gometal {
namespace {

// The add of a per-column bias to matmul value `prev`: `next` adds a float32 (N,), (1, N),
// (1, 1, N), ... value to it. Returns the bias node, or -1.
int bias_added(const Graph& g, int prev, int next, const std::vector<Shape>& shapes) {
  const Node& n = g.node(next);
  if (n.op != OpKind::Add || n.inputs.size() != 2 || n.dtype != DType::F32 || shapes[next] != shapes[prev]) return -1;
  const int bias = n.inputs[0] == prev ? n.inputs[1] : n.inputs[0];
  if (bias == prev || g.node(bias).dtype != DType::F32) return -1;
  const Shape& s = shapes[bias];
  if (s.empty() || s.size() > shapes[prev].size() || s.back() != shapes[prev].back()) return -1;
  for (size_t d = 0; d + 1 < s.size(); ++d)
    if (s[d] != 1) return -1;
  return bias;
}

// The add of a same-shape value (a residual) to `prev`: `next` adds a float32 value of
// prev's own shape (no broadcasting) to it. Returns that value's node, or -1.
int residual_added(const Graph& g, int prev, int next, const std::vector<Shape>& shapes) {
  const Node& n = g.node(next);
  if (n.op != OpKind::Add || n.inputs.size() != 2 || n.dtype != DType::F32 || shapes[next] != shapes[prev]) return -1;
  const int other = n.inputs[0] == prev ? n.inputs[1] : n.inputs[0];
  if (other == prev || g.node(other).dtype != DType::F32 || shapes[other] != shapes[prev]) return -1;
  return other;
}

// The activation `next` applies to `prev`'s value, or DenseActivation::None.
DenseActivation activation_of(const Graph& g, int prev, int next, const std::vector<Shape>& shapes) {
  const Node& n = g.node(next);
  if (n.dtype != DType::F32 || shapes[next] != shapes[prev] || n.inputs.size() != 1) return DenseActivation::None;
  if (n.op == OpKind::Relu) return DenseActivation::Relu;
  return n.op == OpKind::Gelu ? DenseActivation::Gelu : DenseActivation::None;
}

// The heads layout when `reshape` takes `value` (N, T, H * D) to (N, T, H, D) and `transpose`
// moves its heads before its time, (0, 2, 1, 3): a projection split into attention heads.
// t == 0 otherwise.
HeadsLayout heads_of(const Graph& g, int value, int reshape, int transpose, const std::vector<Shape>& shapes) {
  if (reshape < 0 || transpose < 0) return {};
  const Node &r = g.node(reshape), &t = g.node(transpose);
  const Shape &in = shapes[value], &split = shapes[reshape];
  if (r.op != OpKind::Reshape || r.inputs[0] != value || t.op != OpKind::Transpose || t.inputs[0] != reshape ||
      t.attrs.ints != std::vector<int64_t>{0, 2, 1, 3} || in.size() != 3 || split.size() != 4 ||
      split[0] != in[0] || split[1] != in[1] || split[2] * split[3] != in[2] || t.dtype != DType::F32)
    return {};
  return {split[1], split[2], split[3]};
}

}  // namespace

int64_t packed_rows(const Shape& out) {
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < out.size(); ++d) rows *= out[d];
  return rows;
}

bool runs_on_packed_weights(const Graph& g, int id, const std::vector<Shape>& shapes, bool weights_persistent) {
  const Node& node = g.node(id);
  if (node.op != OpKind::MatMul || node.attrs.transpose_a || node.dtype != DType::F32 || !weights_persistent)
    return false;
  const int weights = node.inputs[1];
  const Shape &out = shapes[id], &a = shapes[node.inputs[0]];
  if (g.node(weights).dtype != DType::F32 || out.size() < 2 || a.size() != out.size() || shapes[weights].size() != 2)
    return false;
  // Leading axes of A are rows (a sequence model's (batch, time, features)), never broadcast.
  for (size_t d = 0; d + 1 < out.size(); ++d)
    if (a[d] != out[d]) return false;
  const int64_t m = packed_rows(out);
  if (m < kGemmPackedMinRows || m > kGemmPackedMaxRows || out.back() < 1 || a.back() < 1) return false;
  const char* forced = std::getenv("GOMETAL_GEMM_PACKED_KERNEL");
  if (out.back() < kGemmPackedMinColumns && (forced == nullptr || forced[0] == '\0')) return false;
  // A plan with a product of a transposed A computes weight gradients (dW = dY^T X): it keeps
  // the BLAS's products, so that its forward values are the training step's, bit for bit.
  for (int i = 0; i < g.size(); ++i)
    if (!shapes[i].empty() && g.node(i).op == OpKind::MatMul && g.node(i).attrs.transpose_a) return false;
  return choose_gemm_packed_path().has_value();
}

void fuse_dense_epilogues(const Graph& g, const Schedule& s, const FunctionSpec& fn, const std::vector<Shape>& shapes,
                          Fusion& f) {
  const int n = g.size();
  const ValueReaders value = value_readers(g, s, fn);
  const std::vector<std::vector<int>>& readers = value.readers;
  const std::vector<char>& returned = value.returned;
  // A plan that writes the weights (a training step) keeps its product as it was.
  std::vector<char> written(n, 0);
  for (int e : fn.effects)
    if (const OpDef& def = op_def(g.node(e).op); def.written != nullptr)
      for (int var : def.written(g.node(e))) written[var] = 1;
  auto stored = [&](int value) {
    const int root = s.alias_root[value];
    return (g.node(root).op == OpKind::Variable || g.node(root).op == OpKind::Constant) && !written[root];
  };
  // A row slice of a stored value (an attention's query, key or value part of its combined
  // in_proj weight or bias) read only by `reader`, in a step of its own: its rows lie
  // contiguously in the persistent pool, so `reader` reads them there and the copy's step
  // goes (stored_rows). The step's index, or -1.
  auto in_place_slice = [&](int value, int reader) {
    const Node& n = g.node(value);
    if (n.op != OpKind::Slice || n.attrs.axis != 0 || returned[value] || readers[value] != std::vector<int>{reader} ||
        !stored(n.inputs[0]))
      return -1;
    const int at = f.step_of[value];
    return at >= 0 && !f.steps[at].fused && f.steps[at].nodes == std::vector<int>{value} ? at : -1;
  };
  std::vector<char> dropped(f.steps.size(), 0);
  auto drop_slice = [&](int value, int at) {
    dropped[at] = 1;
    f.materialized[value] = 0;
    f.step_of[value] = -1;
  };

  for (size_t st = 0; st < f.steps.size(); ++st) {
    const Step& step = f.steps[st];
    if (step.fused || step.nodes.size() != 1) continue;
    const int mm = step.nodes[0];
    if (g.node(mm).op != OpKind::MatMul) continue;
    const int weights = g.node(mm).inputs[1];
    const int weights_slice = g.node(mm).inputs[0] == weights ? -1 : in_place_slice(weights, mm);
    if (!runs_on_packed_weights(g, mm, shapes, stored(weights) || weights_slice >= 0)) continue;
    if (weights_slice >= 0) drop_slice(weights, weights_slice);
    if (returned[mm] || readers[mm].size() != 1) continue;
    // The add, then maybe a relu or gelu, or the add of a residual (a transformer's
    // projection back into its stream): the whole of one fused step, ending in a buffer.
    const int add = readers[mm][0];
    const int at = f.step_of[add];
    if (at < 0 || !f.steps[at].fused || bias_added(g, mm, add, shapes) < 0) continue;
    std::vector<int> chain{add};
    if (!f.materialized[add] && !returned[add] && readers[add].size() == 1 &&
        (activation_of(g, add, readers[add][0], shapes) != DenseActivation::None ||
         residual_added(g, add, readers[add][0], shapes) >= 0))
      chain.push_back(readers[add][0]);
    const int last = chain.back();
    if (f.steps[at].nodes != chain || f.step_of[last] != at || !(f.materialized[last] || returned[last])) continue;
    // Then maybe a split into heads read by nothing else (its transpose in a step of its own):
    // the product stores in the heads' layout, and the merged step stands at the transpose's.
    int heads_at = -1, transpose = -1;
    const bool residual = last != add && residual_added(g, add, last, shapes) >= 0;
    if (!residual && !returned[last] && readers[last].size() == 1) {
      const int reshape = readers[last][0];
      if (!returned[reshape] && readers[reshape].size() == 1) transpose = readers[reshape][0];
      const int tat = transpose < 0 ? -1 : f.step_of[transpose];
      if (tat > at && !f.steps[tat].fused && f.steps[tat].nodes == std::vector<int>{transpose} &&
          heads_of(g, last, reshape, transpose, shapes).t > 0)
        heads_at = tat;
    }
    const int merged_at = heads_at >= 0 ? heads_at : at;
    // The matmul moves down to the epilogue's step: nothing between may write what it reads.
    if (effect_between(g, f, static_cast<int>(st), merged_at)) continue;
    Step merged{false, {mm}};
    merged.nodes.insert(merged.nodes.end(), chain.begin(), chain.end());
    if (heads_at >= 0) {
      merged.nodes.push_back(transpose);
      f.materialized[last] = 0;
      dropped[at] = 1;
    }
    f.steps[merged_at] = std::move(merged);
    f.materialized[mm] = 0;
    dropped[st] = 1;
    const int bias = bias_added(g, mm, add, shapes);
    if (const int bias_slice = in_place_slice(bias, add); bias_slice >= 0) drop_slice(bias, bias_slice);
  }

  drop_steps(dropped, f);
}

BufRef stored_rows(const Graph& g, int id, const MemoryPlan& mem, const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  if (mem.ref[id].region != Region::None || n.op != OpKind::Slice || n.attrs.axis != 0) return mem.ref[id];
  BufRef rows = mem.ref[n.inputs[0]];
  if (rows.region != Region::Persistent)
    throw std::logic_error("[cpu] matmul: a slice read in place does not lie in the persistent pool");
  const Shape& whole = shapes[n.inputs[0]];
  rows.offset += n.attrs.start * (numel(whole) / whole[0]) * dtype_size(n.dtype);
  return rows;
}

DenseEpilogue merged_dense_epilogue(const Graph& g, int id, const MemoryPlan& mem, const std::vector<Shape>& shapes) {
  // The chain again, as fuse_dense_epilogues found it: readers outside this function have no
  // shape here, and only the chain's last value has a buffer.
  auto reader_of = [&](int value) {
    for (int i = 0; i < g.size(); ++i) {
      const std::vector<int>& in = g.node(i).inputs;
      if (!shapes[i].empty() && std::find(in.begin(), in.end(), value) != in.end()) return i;
    }
    return -1;
  };
  DenseEpilogue epilogue;
  const int add = reader_of(id);
  if (add >= 0) epilogue.bias = bias_added(g, id, add, shapes);
  if (epilogue.bias < 0) throw std::logic_error("[cpu] matmul epilogue: the merged step's chain is broken");
  epilogue.last = add;
  if (mem.ref[add].region == Region::None) {
    const int next = reader_of(add);
    if (next >= 0) {
      epilogue.activation = activation_of(g, add, next, shapes);
      if (epilogue.activation == DenseActivation::None) epilogue.residual = residual_added(g, add, next, shapes);
    }
    if (epilogue.activation != DenseActivation::None || epilogue.residual >= 0) epilogue.last = next;
  }
  if (mem.ref[epilogue.last].region == Region::None) {
    const int reshape = reader_of(epilogue.last);
    const int transpose = reshape < 0 ? -1 : reader_of(reshape);
    epilogue.heads = heads_of(g, epilogue.last, reshape, transpose, shapes);
    if (epilogue.heads.t == 0)
      throw std::logic_error("[cpu] matmul epilogue: the merged step's activation, residual or heads are missing");
    epilogue.last = transpose;
  }
  return epilogue;
}

}  // namespace gometal
