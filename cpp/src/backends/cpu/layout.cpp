#include "backends/cpu/layout.h"

#include <algorithm>
#include <cstring>

namespace gometal {

void transpose(const Shape& in, const std::vector<int64_t>& perm, const float* x, float* y) {
  const size_t rank = in.size();
  std::vector<int64_t> in_stride(rank, 1), dims(rank), strides(rank);
  for (size_t d = rank; d-- > 1;) in_stride[d - 1] = in_stride[d] * in[d];
  for (size_t d = 0; d < rank; ++d) {
    dims[d] = in[perm[d]];
    strides[d] = in_stride[perm[d]];
  }
  const int64_t total = numel(in);
  if (rank == 0 || total == 0) {
    if (total) y[0] = x[0];
    return;
  }
  std::vector<int64_t> idx(rank, 0);
  int64_t off = 0;
  const int64_t inner = dims[rank - 1], st = strides[rank - 1];
  for (int64_t i = 0; i < total; i += inner) {
    for (int64_t j = 0; j < inner; ++j) y[i + j] = x[off + j * st];
    for (size_t d = rank - 1; d-- > 0;) {
      ++idx[d];
      off += strides[d];
      if (idx[d] < dims[d]) break;
      off -= strides[d] * dims[d];
      idx[d] = 0;
    }
  }
}

void copy_along_axis(int64_t outer, int64_t inner, const float* src, int64_t src_len, int64_t src_start,
                     float* dst, int64_t dst_len, int64_t dst_start, int64_t count) {
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(dst + (o * dst_len + dst_start) * inner, src + (o * src_len + src_start) * inner,
                count * inner * sizeof(float));
}

void one_hot(const int32_t* labels, int64_t n, int64_t depth, float* out) {
  std::fill(out, out + n * depth, 0.0f);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0 && labels[i] < depth) out[i * depth + labels[i]] = 1.0f;
}

}  // namespace gometal
