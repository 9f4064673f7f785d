// Shapes and dtypes: printing, parsing and element counts.
#include <stdexcept>

#include "gometal/ir.h"

namespace gometal {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += s[i] == kBatch ? std::string("batch") : std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

std::string_view dtype_name(DType d) { return d == DType::F32 ? "float32" : "int32"; }

DType dtype_from_name(std::string_view name) {
  if (name == "float32") return DType::F32;
  if (name == "int32") return DType::I32;
  throw std::invalid_argument("[graph] unknown dtype '" + std::string(name) +
                              "'; expected 'float32' or 'int32'");
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape concretize(const Shape& s, int64_t batch) {
  Shape out = s;
  for (auto& d : out)
    if (d == kBatch) d = batch;
  return out;
}

}  // namespace gometal
