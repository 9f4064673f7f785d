// Incremental decoding: the ops of a plan that extends sequences by a few tokens while the
// keys and values of the earlier ones stay in engine variables (the KV cache).
//   cached_attention(q, k_cache, v_cache, k_new, v_new, length)
//       query i of the Tq new positions attends the first `length` cached keys and the new
//       keys 0..i (causal among the new ones); `length` is read when the step runs, so one
//       plan serves every cache length
//   cache_write(cache, value, offset)   effect: cache[:, :, offset:offset + T] = value
// `length` and `offset` are int32 tensors of one element (an input or a variable), checked
// against the cache's size by the kernels before anything is written.
#include <cmath>

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

}  // namespace

std::vector<OpDef> decoding_op_defs() {
  return {
      {OpKind::CachedAttention, "cached_attention", 6, {attr("scale", &Attrs::scale)}, cached_attention_shape,
       Gradient::None},
      {OpKind::CacheWrite, "cache_write", 3, {}, cache_write_shape, Gradient::None, nullptr, trait::kEffect,
       cache_write_writes},
  };
}

}  // namespace gometal
