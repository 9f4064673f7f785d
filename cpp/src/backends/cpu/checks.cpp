#include "backends/cpu/checks.h"

#include <sstream>
#include <stdexcept>

namespace gometal {

void check_range(const float* x, const Shape& shape, float low, float high, const std::string& label,
                 const std::string& message) {
  const int64_t n = numel(shape);
  // The common case passes with one branch-free sweep; only a failure looks for the index.
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !(x[i] >= low && x[i] <= high);
  if (!bad) return;
  int64_t first = 0;
  while (x[first] >= low && x[first] <= high) ++first;
  std::ostringstream where;
  int64_t rest = first;
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = rest % shape[d];
    rest /= shape[d];
  }
  where << "(";
  for (size_t d = 0; d < index.size(); ++d) where << (d ? ", " : "") << index[d];
  where << (index.size() == 1 ? ",)" : ")");
  std::ostringstream text;
  text << "[" << label << "] " << message << ", got " << x[first] << " at index " << where.str()
       << " of shape " << shape_str(shape);
  throw std::invalid_argument(text.str());
}

}  // namespace gometal
