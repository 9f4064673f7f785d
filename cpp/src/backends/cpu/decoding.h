// Kernels of incremental decoding (ir/ops/decoding.cpp): the attention of a few new queries
// over a cached prefix of run-time length, and the write of new keys and values into a cache.
// Decoding one token is matrix-vector work, so both run on the calling thread unless the
// step is large (a long prompt, a big batch), and neither allocates.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/cpu/kernel.h"
#include "gometal/ir.h"

namespace gometal {

struct CachedAttentionGeometry {
  int64_t n = 0, h = 0, tq = 0, capacity = 0, d = 0;  // capacity: the cache's L
  float scale = 1.0f;
};

// out (N, H, Tq, D): query i attends k_cache[:, :, :length] and k_new[:, :, :i + 1].
// Throws std::invalid_argument when length is outside [0, capacity].
void cached_attention(const ExecContext& ctx, const CachedAttentionGeometry& geo, const float* q,
                      const float* k_cache, const float* v_cache, const float* k_new, const float* v_new,
                      int32_t length, float* out);

// cache[:, :, offset:offset + T] = value, over (N, H) planes of `capacity` rows of D floats.
// Throws std::invalid_argument, before writing, when the rows do not fit.
void cache_write(int64_t planes, int64_t t, int64_t capacity, int64_t d, const float* value, int32_t offset,
                 float* cache);

// The kernel of a cached_attention or cache_write node, or nullptr for any other op.
std::unique_ptr<Kernel> make_decoding_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                             const std::vector<Shape>& shapes);

}  // namespace gometal
