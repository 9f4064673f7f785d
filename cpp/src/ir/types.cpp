// Shapes and dtypes: printing, parsing and element counts.
#include <iterator>
#include <mutex>
#include <stdexcept>

#include "gometal/ir.h"

namespace gometal {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += is_symbol(s[i]) ? symbol_name(s[i]) : std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  int64_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "float32", 4}, {DType::F16, "float16", 2}, {DType::BF16, "bfloat16", 2},
    {DType::I8, "int8", 1},     {DType::U8, "uint8", 1},     {DType::I32, "int32", 4},
    {DType::I64, "int64", 8},   {DType::Bool, "bool", 1},
};
static_assert(std::size(kDTypes) == static_cast<size_t>(DType::kCount), "every DType needs its row");

const DTypeInfo& info(DType d) { return kDTypes[static_cast<size_t>(d)]; }

}  // namespace

std::string_view dtype_name(DType d) { return info(d).name; }
int64_t dtype_size(DType d) { return info(d).size; }
bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

DType dtype_from_name(std::string_view name) {
  std::string known;
  for (const DTypeInfo& d : kDTypes) {
    if (name == d.name) return d.dtype;
    known += std::string(known.empty() ? "" : ", ") + "'" + d.name + "'";
  }
  throw std::invalid_argument("[graph] unknown dtype '" + std::string(name) + "'; expected one of " + known);
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

namespace {

std::mutex& symbols_mutex() {
  static std::mutex m;
  return m;
}

std::vector<std::string>& symbol_names() {
  static std::vector<std::string> names{"batch"};
  return names;
}

}  // namespace

int64_t dim_symbol(const std::string& name) {
  if (name.empty()) throw std::invalid_argument("[graph] a dimension symbol needs a name");
  std::lock_guard<std::mutex> lock(symbols_mutex());
  auto& names = symbol_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return -static_cast<int64_t>(i) - 1;
  names.push_back(name);
  return -static_cast<int64_t>(names.size());
}

std::string symbol_name(int64_t symbol) {
  std::lock_guard<std::mutex> lock(symbols_mutex());
  const auto& names = symbol_names();
  const auto index = static_cast<size_t>(-symbol - 1);
  return symbol < 0 && index < names.size() ? names[index] : "?" + std::to_string(symbol);
}

Shape concretize(const Shape& s, const SymbolBinding& binding) {
  Shape out = s;
  for (auto& d : out)
    if (is_symbol(d)) {
      const auto index = static_cast<size_t>(-d - 1);
      d = index < binding.size() ? binding[index] : 1;
    }
  return out;
}

Shape concretize(const Shape& s, int64_t batch) {
  Shape out = s;
  for (auto& d : out)
    if (d == kBatch) d = batch;
  return out;
}

}  // namespace gometal
