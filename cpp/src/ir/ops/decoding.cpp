// Incremental decoding: the ops of a plan that extends sequences by a few tokens while the
// keys and values of the earlier ones stay in engine variables (the KV cache).
//   cached_attention(q, k_cache, v_cache, k_new, v_new, length)
//       query i of the Tq new positions attends the first `length` cached keys and the new
//       keys 0..i (causal among the new ones); `length` is read when the step runs, so one
//       plan serves every cache length
//   cache_write(cache, value, offset)   effect: cache[:, :, offset:offset + T] = value
// `length` and `offset` are int32 tensors of one element (an input or a variable), checked
// against the cache's size by the kernels before anything is written. The decompositions
// (the references) mask by the run-time position; they need a known number of new positions.
#include <cmath>
#include <string>
#include <utility>

#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void require_rank4_f32(const Node& n, const Node& in, const char* role) {
  require_dtype(n, in, DType::F32, role);
  if (in.shape.size() != 4)
    fail(name_of(n), std::string(role) + " must have rank 4 (N, H, T, D), got " + shape_str(in.shape));
}

// The run-time position: int32, one element.
void require_position(const Node& n, const Node& in, const char* role) {
  require_dtype(n, in, DType::I32, role);
  if (numel(in.shape) != 1 || (!in.shape.empty() && in.shape.size() != 1))
    fail(name_of(n), std::string(role) + " must be one int32 value of shape () or (1,), got " + shape_str(in.shape));
}

// q (N, H, Tq, D); caches (N, H, L, D); new keys and values (N, H, Tq, D); length.
void cached_attention_shape(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 6)
    fail(name_of(n), "expects 6 inputs (q, k_cache, v_cache, k_new, v_new, length), got " +
                         std::to_string(n.inputs.size()));
  const Node& q = input(n, nodes, 0);
  const Node& kc = input(n, nodes, 1);
  require_rank4_f32(n, q, "q");
  require_rank4_f32(n, kc, "k_cache");
  require_rank4_f32(n, input(n, nodes, 2), "v_cache");
  require_rank4_f32(n, input(n, nodes, 3), "k_new");
  require_rank4_f32(n, input(n, nodes, 4), "v_new");
  const Shape &qs = q.shape, &cs = kc.shape;
  if (cs[0] != qs[0] || cs[1] != qs[1] || cs[3] != qs[3])
    fail(name_of(n), "k_cache " + shape_str(cs) + " must match q " + shape_str(qs) + " in N, H and D");
  if (is_symbol(cs[2])) fail(name_of(n), "the cache length must be known, got k_cache " + shape_str(cs));
  if (input(n, nodes, 2).shape != cs)
    fail(name_of(n), "v_cache " + shape_str(input(n, nodes, 2).shape) + " must have k_cache's shape " + shape_str(cs));
  for (size_t i : {size_t{3}, size_t{4}})
    if (input(n, nodes, i).shape != qs)
      fail(name_of(n), std::string(i == 3 ? "k_new " : "v_new ") + shape_str(input(n, nodes, i).shape) +
                           " must have q's shape " + shape_str(qs));
  require_position(n, input(n, nodes, 5), "length");
  if (!(n.attrs.scale >= 0.0f) || !std::isfinite(n.attrs.scale))
    fail(name_of(n), "scale must be a finite number >= 0 (0: 1/sqrt(D)), got " + std::to_string(n.attrs.scale));
  n.shape = qs;
  n.dtype = DType::F32;
}

// cache (N, H, L, D) a variable; value (N, H, T, D); offset. The node itself has no value.
void cache_write_shape(Node& n, const std::vector<Node>& nodes) {
  if (n.inputs.size() != 3)
    fail(name_of(n), "expects 3 inputs (cache, value, offset), got " + std::to_string(n.inputs.size()));
  const Node& cache = input(n, nodes, 0);
  if (cache.op != OpKind::Variable)
    fail(name_of(n), "first input must be a variable, got '" + std::string(op_name(cache.op)) + "'");
  const Node& value = input(n, nodes, 1);
  require_rank4_f32(n, cache, "cache");
  require_rank4_f32(n, value, "value");
  const Shape &cs = cache.shape, &vs = value.shape;
  if (vs[0] != cs[0] || vs[1] != cs[1] || vs[3] != cs[3])
    fail(name_of(n), "value " + shape_str(vs) + " must match cache '" + cache.attrs.name + "' " + shape_str(cs) +
                         " in N, H and D");
  if (!is_symbol(vs[2]) && vs[2] > cs[2])
    fail(name_of(n), "value " + shape_str(vs) + " has more positions than cache '" + cache.attrs.name + "' " +
                         shape_str(cs));
  require_position(n, input(n, nodes, 2), "offset");
  n.shape = {};
  n.dtype = DType::F32;
}

std::vector<int> cache_write_writes(const Node& n) { return {n.inputs[0]}; }

// ---- the decompositions ----

// Masked scores are this low instead of -inf, so that 0 * mask stays 0.
constexpr float kMasked = -1e30f;

int64_t known_new_positions(const View& v, int64_t t) {
  if (is_symbol(t))
    fail(op_name(v.op), "the decomposition needs a known number of new positions, got " + shape_str({t}));
  return t;
}

// The position as float32 (1,), plus a zero that makes the step fail unless it lies in
// [0, high]: add the zero to a result so that the check runs.
std::pair<int, int> checked_position(Graph& gr, const View& v, int position, int64_t high, const char* what) {
  Attrs to_float;
  to_float.dtype = DType::F32;
  const int value = gr.reshape(gr.op(OpKind::Cast, {position}, to_float), {1});
  Attrs check;
  check.low = 0.0f;
  check.high = static_cast<float>(high);
  check.name = std::string(op_name(v.op));
  check.message = std::string(what) + " must lie in [0, " + std::to_string(high) + "]";
  return {value, gr.op(OpKind::CheckRange, {value}, check)};
}

// 0, 1, ..., count - 1 as a float32 constant of `shape` (count elements).
int positions(Graph& gr, int64_t count, const Shape& shape) {
  std::vector<float> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) values[static_cast<size_t>(i)] = static_cast<float>(i);
  return gr.constant(shape, std::move(values));
}

std::vector<int> decompose_cached_attention(Graph& gr, int id) {
  const View v = view(gr, id);
  const Shape qs = shape_of(gr, v.in[0]), cs = shape_of(gr, v.in[1]);
  const int64_t tq = known_new_positions(v, qs[2]), capacity = cs[2];
  Attrs concat_keys;
  concat_keys.axis = 2;
  const int keys = gr.op(OpKind::Concat, {v.in[1], v.in[3]}, concat_keys);
  const int values = gr.op(OpKind::Concat, {v.in[2], v.in[4]}, concat_keys);
  const float scale = v.attrs.scale > 0.0f ? v.attrs.scale : 1.0f / std::sqrt(static_cast<float>(qs[3]));
  int s = gr.mul(gr.matmul(v.in[0], keys, false, true), k(gr, scale));
  // Cached key l is visible while l < length; new key j to new query i while j <= i.
  const auto [length, check] = checked_position(gr, v, v.in[5], capacity, "length");
  const int visible = cmp(gr, OpKind::Less, positions(gr, capacity, {1, capacity}), length);
  const int cached = gr.broadcast_to(gr.mul(gr.sub(k(gr, 1.0f), visible), k(gr, kMasked)), {tq, capacity});
  std::vector<float> causal(static_cast<size_t>(tq * tq), 0.0f);
  for (int64_t i = 0; i < tq; ++i)
    for (int64_t j = i + 1; j < tq; ++j) causal[static_cast<size_t>(i * tq + j)] = kMasked;
  Attrs along_keys;
  along_keys.axis = 1;
  const int mask = gr.op(OpKind::Concat, {cached, gr.constant({tq, tq}, std::move(causal))}, along_keys);
  s = gr.add(gr.add(s, mask), check);
  const int e = gr.unary(OpKind::Exp, gr.sub(s, gr.max(s, {3}, true)));
  return {gr.matmul(gr.div(e, gr.sum(e, {3}, true)), values)};
}

// One-hot rows P (T, L), P[t, l] = (l == offset + t): the cache keeps the rows no new
// position covers and takes P^T value in the others.
std::vector<int> decompose_cache_write(Graph& gr, int id) {
  const View v = view(gr, id);
  const Shape cs = shape_of(gr, v.in[0]), vs = shape_of(gr, v.in[1]);
  const int64_t t = known_new_positions(v, vs[2]), capacity = cs[2];
  const auto [offset, check] = checked_position(gr, v, v.in[2], capacity - t, "offset");
  const int rows = gr.add(positions(gr, t, {t, 1}), offset);
  const int placement = cmp(gr, OpKind::Equal, positions(gr, capacity, {1, capacity}), rows);
  const int covered = gr.reshape(gr.sum(placement, {0}), {1, 1, capacity, 1});
  const int kept = gr.mul(v.in[0], gr.sub(k(gr, 1.0f), covered));
  const int placed = gr.matmul(placement, v.in[1], true, false);
  return {gr.assign(v.in[0], gr.add(gr.add(kept, placed), check))};
}

}  // namespace

std::vector<OpDef> decoding_op_defs() {
  return {
      {OpKind::CachedAttention, "cached_attention", 6, {attr("scale", &Attrs::scale)}, cached_attention_shape,
       Gradient::None, nullptr, 0, nullptr, nullptr, decompose_cached_attention},
      {OpKind::CacheWrite, "cache_write", 3, {}, cache_write_shape, Gradient::None, nullptr, trait::kEffect,
       cache_write_writes, nullptr, decompose_cache_write},
  };
}

}  // namespace gometal
