#include "ir/op_registry.h"

#include <mutex>
#include <stdexcept>

namespace gometal {
namespace {

// Adding an op: a value in OpKind, then its entry in one family (ir/ops/). The table refuses
// to build until every kind has exactly one entry with the rules its kind needs.
static_assert(static_cast<int>(OpKind::kCount) == 86, "a new OpKind needs an entry in ir/ops/ (then update this count)");

std::vector<OpDef> build_table(std::vector<std::string>* problems) {
  std::vector<OpDef> table(static_cast<size_t>(OpKind::kCount));
  std::vector<int> seen(table.size(), 0);
  for (auto family : {leaf_op_defs, elementwise_op_defs, reduce_op_defs, layout_op_defs, linalg_op_defs,
                      indexing_op_defs, normalization_op_defs, window_op_defs, misc_op_defs, effect_op_defs,
                      attention_op_defs, decoding_op_defs, recurrent_op_defs,
                      positions_op_defs, quantized_op_defs, collective_op_defs})
    for (OpDef& def : family()) {
      const auto index = static_cast<size_t>(def.kind);
      if (seen[index]++) problems->push_back(std::string("op '") + def.name + "' has two entries");
      table[index] = std::move(def);
    }
  for (size_t i = 0; i < table.size(); ++i) {
    const OpDef& def = table[i];
    if (!seen[i]) {
      problems->push_back("OpKind " + std::to_string(i) + " has no entry");
      continue;
    }
    const std::string who = std::string("op '") + def.name + "'";
    if (def.has(trait::kLeaf)) continue;
    if (def.infer == nullptr) problems->push_back(who + " has no shape rule");
    if (def.gradient == Gradient::Rule && def.vjp == nullptr) problems->push_back(who + " promises a VJP rule it lacks");
    if (def.gradient != Gradient::Rule && def.vjp != nullptr) problems->push_back(who + " has a VJP rule it does not use");
    if (def.has(trait::kEffect) && def.written == nullptr) problems->push_back(who + " is an effect without its writes");
    if (def.has(trait::kEffect) && def.gradient != Gradient::None)
      problems->push_back(who + " is an effect: it cannot pass a gradient");
  }
  return table;
}

struct Registry {
  std::vector<OpDef> table;
  std::vector<std::string> problems;
};

const Registry& registry() {
  static const Registry r = [] {
    Registry built;
    built.table = build_table(&built.problems);
    return built;
  }();
  return r;
}

const std::vector<OpDef>& checked_table() {
  const Registry& r = registry();
  if (!r.problems.empty()) throw std::logic_error("[ops] the op registry is incomplete: " + r.problems.front());
  return r.table;
}

template <class T>
const T* stored_as(const AttrValue& value) {
  return std::get_if<T>(&value);
}

std::string describe_value(const AttrValue& value) {
  struct Show {
    std::string operator()(int64_t v) const { return "the int " + std::to_string(v); }
    std::string operator()(const std::vector<int64_t>&) const { return "a list of ints"; }
    std::string operator()(double v) const { return "the float " + std::to_string(v); }
    std::string operator()(bool v) const { return v ? "True" : "False"; }
    std::string operator()(const std::string& v) const { return "the string '" + v + "'"; }
  };
  return std::visit(Show{}, value);
}

}  // namespace

const std::vector<OpDef>& op_table() { return checked_table(); }
const OpDef& op_def(OpKind op) { return checked_table()[static_cast<size_t>(op)]; }
std::vector<std::string> op_table_problems() { return registry().problems; }

std::string_view attr_type_name(const AttrField& field) {
  switch (field.index()) {
    case 0: return "an int";
    case 1: return "a list of ints";
    case 2: return "a number";
    case 3: return "a bool";
    case 4: return "a dtype name";
    default: return "a string";
  }
}

void set_attribute(OpKind kind, Attrs& attrs, const std::string& key, const AttrValue& value) {
  const OpDef& def = op_def(kind);
  const AttrSpec* spec = nullptr;
  for (const AttrSpec& s : def.attrs)
    if (key == s.key) spec = &s;
  if (spec == nullptr) {
    std::string takes;
    for (const AttrSpec& s : def.attrs) takes += std::string(takes.empty() ? "" : ", ") + s.key;
    throw std::invalid_argument("[" + std::string(def.name) + "] unknown attribute '" + key + "'; " +
                                (takes.empty() ? std::string("it takes none") : "it takes: " + takes));
  }
  const auto wrong = [&] {
    return std::invalid_argument("[" + std::string(def.name) + "] attribute '" + key + "' must be " +
                                 std::string(attr_type_name(spec->field)) + ", got " + describe_value(value));
  };
  struct Store {
    Attrs& attrs;
    const AttrValue& value;
    bool operator()(int64_t Attrs::*f) const {
      const auto* v = stored_as<int64_t>(value);
      return v && (attrs.*f = *v, true);
    }
    bool operator()(std::vector<int64_t> Attrs::*f) const {
      const auto* v = stored_as<std::vector<int64_t>>(value);
      return v && (attrs.*f = *v, true);
    }
    bool operator()(float Attrs::*f) const {
      if (const auto* v = stored_as<double>(value)) return attrs.*f = static_cast<float>(*v), true;
      if (const auto* v = stored_as<int64_t>(value)) return attrs.*f = static_cast<float>(*v), true;
      return false;
    }
    bool operator()(bool Attrs::*f) const {
      const auto* v = stored_as<bool>(value);
      return v && (attrs.*f = *v, true);
    }
    bool operator()(DType Attrs::*f) const {
      const auto* v = stored_as<std::string>(value);
      return v && (attrs.*f = dtype_from_name(*v), true);
    }
    bool operator()(std::string Attrs::*f) const {
      const auto* v = stored_as<std::string>(value);
      return v && (attrs.*f = *v, true);
    }
  };
  if (!std::visit(Store{attrs, value}, spec->field)) throw wrong();
}

// ---- the queries the rest of the engine uses ----

std::string_view op_name(OpKind op) { return op_def(op).name; }

OpKind op_from_name(std::string_view name) {
  for (const OpDef& d : op_table())
    if (name == d.name && !d.has(trait::kLeaf)) return d.kind;
  std::string known;
  for (const OpDef& d : op_table())
    if (!d.has(trait::kLeaf)) known += std::string(known.empty() ? "" : ", ") + d.name;
  throw std::invalid_argument("[graph] unknown op '" + std::string(name) + "'; known ops: " + known);
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const OpDef& d : op_table())
    if (!d.has(trait::kLeaf)) names.emplace_back(d.name);
  return names;
}

int op_arity(OpKind op) { return op_def(op).arity; }
bool is_elementwise(OpKind op) { return op_def(op).has(trait::kElementwise); }
bool is_effect(OpKind op) { return op_def(op).has(trait::kEffect); }
bool is_check(OpKind op) { return op_def(op).has(trait::kCheck); }

std::vector<int> written_variables(const Node& n) {
  const OpDef& def = op_def(n.op);
  return def.written ? def.written(n) : std::vector<int>{};
}

}  // namespace gometal
