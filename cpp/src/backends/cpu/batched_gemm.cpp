#include "backends/cpu/batched_gemm.h"

#include <algorithm>

#include "backends/cpu/gemm.h"

namespace gometal {
namespace {

// Offsets of operand `s`'s matrices for each output batch index: its batch dims aligned
// on the right of the output's, a dim of 1 repeating.
std::vector<int64_t> matrix_offsets(const Shape& s, const Shape& out_batch) {
  const size_t lead = s.size() - 2, rank = out_batch.size();
  const int64_t matrix = s[lead] * s[lead + 1];
  std::vector<int64_t> stride(rank, 0);
  int64_t step = matrix;
  for (size_t i = lead; i-- > 0;) {
    const size_t o = i + (rank - lead);
    stride[o] = s[i] == 1 ? 0 : step;
    step *= s[i];
  }
  const int64_t count = numel(out_batch);
  std::vector<int64_t> offsets(static_cast<size_t>(count), 0);
  std::vector<int64_t> index(rank, 0);
  for (int64_t b = 0; b < count; ++b) {
    int64_t at = 0;
    for (size_t d = 0; d < rank; ++d) at += index[d] * stride[d];
    offsets[static_cast<size_t>(b)] = at;
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out_batch[d]) break;
      index[d] = 0;
    }
  }
  return offsets;
}

}  // namespace

BatchedGemm batched_gemm_geometry(const Shape& a, const Shape& b, const Shape& out, bool ta, bool tb) {
  BatchedGemm geo;
  geo.ta = ta;
  geo.tb = tb;
  const size_t ra = a.size();
  geo.m = out[out.size() - 2];
  geo.n = out[out.size() - 1];
  geo.k = ta ? a[ra - 2] : a[ra - 1];
  const Shape out_batch(out.begin(), out.end() - 2);
  geo.a_offset = matrix_offsets(a, out_batch);
  geo.b_offset = matrix_offsets(b, out_batch);
  // (..., M, K) x (K, N): the batch folds into the rows of one product.
  bool one_block = !ta;
  for (size_t i = 0; i < geo.a_offset.size() && one_block; ++i)
    one_block = geo.b_offset[i] == 0 && geo.a_offset[i] == static_cast<int64_t>(i) * geo.m * geo.k;
  geo.a_is_one_block = one_block;
  return geo;
}

void batched_gemm(ThreadPool& pool, const BatchedGemm& geo, const float* a, const float* b, float* c) {
  const int64_t count = static_cast<int64_t>(geo.a_offset.size());
  if (geo.a_is_one_block) return gemm(pool, false, geo.tb, count * geo.m, geo.n, geo.k, a, b, c);
  const int64_t lda = geo.ta ? geo.m : geo.k, ldb = geo.tb ? geo.k : geo.n;
  const int64_t matrix = geo.m * geo.n;
  // Many small products: one per task; a few large ones: each split across the pool.
  if (count < 2 * pool.size()) {
    for (int64_t i = 0; i < count; ++i)
      gemm(pool, geo.ta, geo.tb, geo.m, geo.n, geo.k, a + geo.a_offset[i], b + geo.b_offset[i], c + i * matrix);
    return;
  }
  const int tasks = balanced_tasks(pool, count);
  pool.parallel_for(tasks, [&](int task, int) {
    int64_t lo, hi;
    split_range(count, tasks, task, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; ++i) {
      if (geo.k == 0) {
        std::fill(c + i * matrix, c + (i + 1) * matrix, 0.0f);
        continue;
      }
      gemm_serial(geo.ta, geo.tb, geo.m, geo.n, geo.k, a + geo.a_offset[i], lda, b + geo.b_offset[i], ldb, 0.0f,
                  c + i * matrix, geo.n);
    }
  });
}

}  // namespace gometal
