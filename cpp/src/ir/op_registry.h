// The op registry: one entry per primitive holds everything the engine knows about it —
// its name and arity, its attribute schema, its shape and dtype rule, its gradient, its
// traits and, optionally, a decomposition into other primitives. Autodiff, the verifier,
// the Python binding, the passes and the backends all read the entry; nothing else lists
// ops. The entries live in one file per op family under ir/ops/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "gometal/ir.h"

namespace gometal {

// An attribute value as it arrives from a caller (the Python binding), before it is stored.
using AttrValue = std::variant<int64_t, std::vector<int64_t>, double, bool, std::string>;

// Where an attribute is stored in a node's Attrs; the member's type is the attribute's type
// (a DType arrives as its name).
using AttrField = std::variant<int64_t Attrs::*, std::vector<int64_t> Attrs::*, float Attrs::*,
                               bool Attrs::*, DType Attrs::*, std::string Attrs::*>;

struct AttrSpec {
  const char* key;
  AttrField field;
};

// "an int", "a list of ints", ...: for messages.
std::string_view attr_type_name(const AttrField& field);

// How the loss's gradient passes through an op.
enum class Gradient : uint8_t {
  Rule,  // the VJP rule below
  Zero,  // no gradient flows through, by definition (stop_gradient, comparisons, checks)
  None,  // not differentiable: asking for a gradient through it is an error
};

namespace trait {
inline constexpr uint32_t kElementwise = 1u << 0;  // one output element per input element; fusable
inline constexpr uint32_t kEffect = 1u << 1;       // writes variables instead of producing a value
inline constexpr uint32_t kCheck = 1u << 2;        // validates a value; runs before every effect
inline constexpr uint32_t kRandom = 1u << 3;       // draws from the engine's counter-based RNG
inline constexpr uint32_t kLeaf = 1u << 4;         // input, variable, scalar, constant
}  // namespace trait

using ShapeRule = void (*)(Node& n, const std::vector<Node>& nodes);
// Appends nodes computing d(loss)/d(input i) into dx[i] (left -1 for no gradient), given
// node y and the gradient g of the loss w.r.t. y. Copy what you need out of a Node before
// adding nodes: adding nodes can move the node storage.
using VjpRule = void (*)(Graph& graph, int y, int g, std::vector<int>& dx);
// The variables an effect writes.
using WrittenRule = std::vector<int> (*)(const Node& n);
// Whether node n only renames its input's buffer (no kernel, no memory of its own).
using AliasRule = bool (*)(const Graph& g, const Node& n);
// Builds the same computation from other primitives, reading node `id`; returns what
// replaces it: one node for a value, the effect nodes for an effect. The reference a
// backend without a kernel falls back to, and what the op tests compare the kernel with.
using Decomposition = std::vector<int> (*)(Graph& graph, int id);

struct OpDef {
  OpKind kind;
  const char* name;
  int arity;  // -1: one or more (variadic); 0: a leaf
  std::vector<AttrSpec> attrs;
  ShapeRule infer = nullptr;
  Gradient gradient = Gradient::None;
  VjpRule vjp = nullptr;
  uint32_t traits = 0;
  WrittenRule written = nullptr;
  AliasRule alias = nullptr;
  Decomposition decompose = nullptr;

  bool has(uint32_t t) const { return (traits & t) != 0; }
};

// The entry of `op`; the table is built once and checked complete (every OpKind exactly once,
// every rule its kind needs present) the first time any entry is read.
const OpDef& op_def(OpKind op);
// Every entry, in OpKind order.
const std::vector<OpDef>& op_table();
// Problems with the table (missing kinds or rules), empty when it is complete; the C++ test
// and the first lookup both use it.
std::vector<std::string> op_table_problems();

// Stores named attribute values into `attrs` for op `kind`, checking each key against the
// op's schema and each value's type: an unknown or irrelevant key, or a wrong type, throws
// std::invalid_argument naming the op and the attribute.
void set_attribute(OpKind kind, Attrs& attrs, const std::string& key, const AttrValue& value);

// The entries of each op family, defined in ir/ops/*.cpp.
std::vector<OpDef> leaf_op_defs();
std::vector<OpDef> elementwise_op_defs();
std::vector<OpDef> reduce_op_defs();
std::vector<OpDef> layout_op_defs();
std::vector<OpDef> linalg_op_defs();
std::vector<OpDef> indexing_op_defs();
std::vector<OpDef> normalization_op_defs();
std::vector<OpDef> window_op_defs();
std::vector<OpDef> misc_op_defs();
std::vector<OpDef> effect_op_defs();
std::vector<OpDef> attention_op_defs();
std::vector<OpDef> decoding_op_defs();
std::vector<OpDef> recurrent_op_defs();
std::vector<OpDef> positions_op_defs();
std::vector<OpDef> quantized_op_defs();
std::vector<OpDef> collective_op_defs();

}  // namespace gometal
