#include "backends/cpu/support.h"

#include <array>

#include "backends/cpu/fused_elementwise.h"

namespace gometal {
namespace {

constexpr uint32_t bit(DType d) { return 1u << static_cast<uint32_t>(d); }
constexpr uint32_t kF32 = bit(DType::F32), kI32 = bit(DType::I32);

// The input dtypes each op's CPU kernel takes: float32 everywhere; copies move 4-byte
// elements whatever they mean, so layout ops take int32 too; one_hot reads int32 labels;
// gather and scatter_add read int32 indices; cast converts between every pair.
std::array<uint32_t, static_cast<size_t>(OpKind::kCount)> make_table() {
  std::array<uint32_t, static_cast<size_t>(OpKind::kCount)> t{};
  for (const OpDef& def : op_table())
    if (!def.has(trait::kLeaf) && (!def.has(trait::kElementwise) || fusable_on_cpu(def.kind)))
      t[static_cast<size_t>(def.kind)] = kF32;
  for (OpKind op : {OpKind::Reshape, OpKind::Transpose, OpKind::Slice, OpKind::Concat})
    t[static_cast<size_t>(op)] = kF32 | kI32;
  uint32_t every = 0;
  for (size_t d = 0; d < static_cast<size_t>(DType::kCount); ++d) every |= 1u << d;
  t[static_cast<size_t>(OpKind::Cast)] = every;
  t[static_cast<size_t>(OpKind::OneHot)] = kI32;
  // float32 rows, int32 indices
  for (OpKind op : {OpKind::Gather, OpKind::ScatterAdd}) t[static_cast<size_t>(op)] = kF32 | kI32;
  // float32 caches and values, an int32 length or offset
  for (OpKind op : {OpKind::CachedAttention, OpKind::CacheWrite}) t[static_cast<size_t>(op)] = kF32 | kI32;
  // float32 sequences, optional int32 lengths
  for (OpKind op : {OpKind::Recurrence, OpKind::RecurrenceGrad, OpKind::SequenceEnd, OpKind::SequenceEndGrad})
    t[static_cast<size_t>(op)] = kF32 | kI32;
  // positions reads only its input's shape
  t[static_cast<size_t>(OpKind::Positions)] = every;
  // int8 or uint8 values, int8 weights, float32 scales and biases
  for (OpKind op : {OpKind::Quantize, OpKind::Dequantize, OpKind::QuantizedMatMul, OpKind::QuantizedConv2D})
    t[static_cast<size_t>(op)] = kF32 | bit(DType::I8) | bit(DType::U8);
  return t;
}

}  // namespace

bool cpu_runs(const Graph& g, const Node& n) {
  static const auto table = make_table();
  const uint32_t allowed = table[static_cast<size_t>(n.op)];
  if (allowed == 0) return false;
  for (int in : n.inputs)
    if ((allowed & bit(g.node(in).dtype)) == 0) return false;
  return true;
}

}  // namespace gometal
