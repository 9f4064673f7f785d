// Data movement: transpose, slice, pad, concat, one-hot and copies (casts: cast.h).
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

// Split by output rows across the pool when large.
void transpose(ThreadPool& pool, const Shape& in, const std::vector<int64_t>& perm, const float* x, float* y);
// Copies a window along `axis`: (outer, src_len, inner) -> (outer, dst_len, inner) at offsets.
void copy_along_axis(int64_t outer, int64_t inner, const float* src, int64_t src_len, int64_t src_start,
                     float* dst, int64_t dst_len, int64_t dst_start, int64_t count);
void one_hot(const int32_t* labels, int64_t n, int64_t depth, float* out);
// `planes` planes of (h, w) to (h + 2 pad_h, w + 2 pad_w) with zeros around each (the
// whole destination is written: zeros, then the rows).
void pad_planes(const float* src, int64_t planes, int64_t h, int64_t w, int64_t pad_h, int64_t pad_w, float* dst);

}  // namespace gometal
