#include "backends/cpu/indexing.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace gometal {
namespace {
// Row copies below this many floats run on one thread.
constexpr int64_t kParallelFloats = 1 << 15;
// Scatter-adds below this many floats of updates run on one thread (see scatter_add_rows).
constexpr int64_t kParallelScatterFloats = int64_t{1} << 24;
}  // namespace

void check_indices(const int32_t* indices, const Shape& shape, int64_t rows, const std::string& op) {
  const int64_t n = numel(shape);
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= indices[i] < 0 || indices[i] >= rows;
  if (!bad) return;
  int64_t first = 0;
  while (indices[first] >= 0 && indices[first] < rows) ++first;
  std::vector<int64_t> position(shape.size());
  int64_t rest = first;
  for (size_t d = shape.size(); d-- > 0;) {
    position[d] = rest % shape[d];
    rest /= shape[d];
  }
  std::ostringstream text;
  text << "[" << op << "] index " << indices[first] << " at position (";
  for (size_t d = 0; d < position.size(); ++d) text << (d ? ", " : "") << position[d];
  text << (position.size() == 1 ? ",)" : ")") << " of the indices of shape " << shape_str(shape)
       << " is out of range for a table of " << rows << " rows (0 to " << rows - 1 << ")";
  throw std::invalid_argument(text.str());
}

void gather_rows(ThreadPool& pool, const float* table, int64_t dim, const int32_t* indices, int64_t count,
                 float* out) {
  const auto copy = [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      std::memcpy(out + i * dim, table + static_cast<int64_t>(indices[i]) * dim, sizeof(float) * dim);
  };
  const int tasks = count * dim < kParallelFloats ? 1 : balanced_tasks(pool, count);
  if (tasks <= 1) return copy(0, count);
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(count, tasks, task, 1, &lo, &hi);
    copy(lo, hi);
  });
}

void scatter_add_rows(ThreadPool& pool, const float* updates, int64_t dim, int64_t ld, const int32_t* indices,
                      int64_t count, int64_t rows, float* out) {
  const auto add = [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < rows; ++r) std::fill(out + r * dim + c0, out + r * dim + c1, 0.0f);
    for (int64_t i = 0; i < count; ++i) {
      float* dst = out + static_cast<int64_t>(indices[i]) * dim;
      const float* src = updates + i * ld;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  };
  // Each task owns a block of columns: no two threads write the same element. Split, every
  // thread streams all the rows for a part of each: on 2 threads (Zen 4, loaded) 2048 x 1024
  // updates took 0.8-1.0 ms against 0.3 on one, 8192 x 1024 8.8-11.9 against 6.7-7.2.
  const int tasks = count * dim < kParallelScatterFloats ? 1 : balanced_tasks(pool, (dim + 15) / 16);
  if (tasks <= 1) return add(0, dim);
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(dim, tasks, task, 16, &lo, &hi);
    if (lo < hi) add(lo, hi);
  });
}

}  // namespace gometal
