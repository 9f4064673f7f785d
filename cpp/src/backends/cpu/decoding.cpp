#include "backends/cpu/decoding.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backends/cpu/vec8.h"
#include "backends/cpu/vector_math.h"

namespace gometal {
namespace {

// Below this many multiply-adds a step runs on the calling thread: waking the pool costs
// more than one token's attention.
constexpr int64_t kParallelWork = 1 << 16;

typedef float Vec4 __attribute__((vector_size(16)));

// Halves added pairwise: three dependent adds instead of eight.
float horizontal_sum(Vec8 v) {
  Vec4 s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  s += __builtin_shufflevector(s, s, 2, 3, 0, 1);
  s += __builtin_shufflevector(s, s, 1, 0, 3, 2);
  return s[0];
}

float dot(const float* a, const float* b, int64_t d) {
  int64_t i = 0;
  float sum = 0.0f;
  if (d >= 8) {
    Vec8 acc = {};
    for (; i + 8 <= d; i += 8) acc += load8(a + i) * load8(b + i);
    sum = horizontal_sum(acc);
  }
  for (; i < d; ++i) sum += a[i] * b[i];
  return sum;
}

// scores[j] = scale * q . keys[j] for j < count; four keys at a time when d is a multiple
// of 8, so that four independent sums are in flight.
void scaled_dots(const float* q, const float* keys, int64_t count, int64_t d, float scale, float* scores) {
  int64_t j = 0;
  if (d % 8 == 0) {
    for (; j + 4 <= count; j += 4) {
      const float* k0 = keys + j * d;
      Vec8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int64_t c = 0; c < d; c += 8) {
        const Vec8 qc = load8(q + c);
        a0 += qc * load8(k0 + c);
        a1 += qc * load8(k0 + d + c);
        a2 += qc * load8(k0 + 2 * d + c);
        a3 += qc * load8(k0 + 3 * d + c);
      }
      scores[j] = horizontal_sum(a0) * scale;
      scores[j + 1] = horizontal_sum(a1) * scale;
      scores[j + 2] = horizontal_sum(a2) * scale;
      scores[j + 3] = horizontal_sum(a3) * scale;
    }
  }
  for (; j < count; ++j) scores[j] = dot(q, keys + j * d, d) * scale;
}

float sum_of(const float* x, int64_t n) {
  int64_t i = 0;
  Vec8 acc = {};
  for (; i + 8 <= n; i += 8) acc += load8(x + i);
  float sum = horizontal_sum(acc);
  for (; i < n; ++i) sum += x[i];
  return sum;
}

// out[0, 8V) += sum_j p[j] rows[j][0, 8V): 2V independent sums (even and odd rows), so the
// loop is not one chain of dependent multiply-adds.
template <int V>
void add_weighted_block(const float* p, const float* rows, int64_t count, int64_t d, float* out) {
  Vec8 even[V] = {}, odd[V] = {};
  int64_t j = 0;
  for (; j + 2 <= count; j += 2) {
    const float* a = rows + j * d;
    for (int v = 0; v < V; ++v) {
      even[v] += p[j] * load8(a + 8 * v);
      odd[v] += p[j + 1] * load8(a + d + 8 * v);
    }
  }
  if (j < count)
    for (int v = 0; v < V; ++v) even[v] += p[j] * load8(rows + j * d + 8 * v);
  for (int v = 0; v < V; ++v) store8(out + 8 * v, load8(out + 8 * v) + even[v] + odd[v]);
}

// out (d) += sum_j p[j] rows[j], 32 columns at a time.
void add_weighted_rows(const float* p, const float* rows, int64_t count, int64_t d, float* out) {
  int64_t c = 0;
  for (; c + 32 <= d; c += 32) add_weighted_block<4>(p, rows + c, count, d, out + c);
  for (; c + 8 <= d; c += 8) add_weighted_block<1>(p, rows + c, count, d, out + c);
  for (; c < d; ++c)
    for (int64_t j = 0; j < count; ++j) out[c] += p[j] * rows[j * d + c];
}

// One head: rows of q against `length` cached keys then the new keys up to each row's own.
// Scores, then their exponentials in a loop of their own (it vectorizes), then the values.
void attend_head(const CachedAttentionGeometry& geo, const float* q, const float* kc, const float* vc,
                 const float* kn, const float* vn, int64_t length, float* out, float* scores) {
  const int64_t d = geo.d;
  for (int64_t i = 0; i < geo.tq; ++i) {
    const float* qi = q + i * d;
    const int64_t keys = length + i + 1;
    scaled_dots(qi, kc, length, d, geo.scale, scores);
    scaled_dots(qi, kn, i + 1, d, geo.scale, scores + length);
    float top = -FLT_MAX;
    for (int64_t j = 0; j < keys; ++j) top = std::max(top, scores[j]);
    for (int64_t j = 0; j < keys; ++j) scores[j] = vector_math::exp(scores[j] - top);
    const float inv = 1.0f / sum_of(scores, keys);
    float* oi = out + i * d;
    std::fill(oi, oi + d, 0.0f);
    add_weighted_rows(scores, vc, length, d, oi);
    add_weighted_rows(scores + length, vn, i + 1, d, oi);
    for (int64_t c = 0; c < d; ++c) oi[c] *= inv;
  }
}

int32_t read_position(const ExecContext& ctx, const BufRef& ref) { return ctx.iptr(ref)[0]; }

struct CachedAttentionKernel final : Kernel {
  BufRef q, kc, vc, kn, vn, length, y;
  CachedAttentionGeometry geo;
  void run(const ExecContext& ctx) const override {
    cached_attention(ctx, geo, ctx.ptr(q), ctx.ptr(kc), ctx.ptr(vc), ctx.ptr(kn), ctx.ptr(vn),
                     read_position(ctx, length), ctx.ptr(y));
  }
  int64_t scratch_floats() const override { return geo.capacity + geo.tq; }
};

// An effect: its node gets no buffer of its own (the fusion pass materializes none).
struct CacheWriteKernel final : Kernel {
  BufRef cache, value, offset;
  int64_t planes = 0, t = 0, capacity = 0, d = 0;
  void run(const ExecContext& ctx) const override {
    cache_write(planes, t, capacity, d, ctx.ptr(value), read_position(ctx, offset), ctx.ptr(cache));
  }
};

}  // namespace

void cached_attention(const ExecContext& ctx, const CachedAttentionGeometry& geo, const float* q,
                      const float* k_cache, const float* v_cache, const float* k_new, const float* v_new,
                      int32_t length, float* out) {
  if (length < 0 || length > geo.capacity)
    throw std::invalid_argument("[cached_attention] length " + std::to_string(length) +
                                " is outside the cache of " + std::to_string(geo.capacity) + " positions (0 to " +
                                std::to_string(geo.capacity) + ")");
  const int64_t heads = geo.n * geo.h, row = geo.tq * geo.d, plane = geo.capacity * geo.d;
  const auto head = [&](int64_t hd, float* scores) {
    attend_head(geo, q + hd * row, k_cache + hd * plane, v_cache + hd * plane, k_new + hd * row, v_new + hd * row,
                length, out + hd * row, scores);
  };
  const int64_t work = heads * geo.tq * (length + geo.tq) * geo.d;
  const int tasks = work < kParallelWork ? 1 : balanced_tasks(*ctx.pool, heads);
  if (tasks <= 1) {
    for (int64_t hd = 0; hd < heads; ++hd) head(hd, ctx.thread_scratch(0));
    return;
  }
  ctx.pool->parallel_for(tasks, [&](int task, int thread) {
    int64_t lo, hi;
    split_range(heads, tasks, task, 1, &lo, &hi);
    for (int64_t hd = lo; hd < hi; ++hd) head(hd, ctx.thread_scratch(thread));
  });
}

void cache_write(int64_t planes, int64_t t, int64_t capacity, int64_t d, const float* value, int32_t offset,
                 float* cache) {
  if (offset < 0 || offset + t > capacity)
    throw std::invalid_argument("[cache_write] " + std::to_string(t) + " new positions at offset " +
                                std::to_string(offset) + " do not fit the cache of " + std::to_string(capacity) +
                                " positions");
  for (int64_t p = 0; p < planes; ++p)
    std::memcpy(cache + (p * capacity + offset) * d, value + p * t * d, sizeof(float) * t * d);
}

std::unique_ptr<Kernel> make_decoding_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                             const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  auto in = [&](size_t i) { return mem.ref[n.inputs[i]]; };
  auto in_shape = [&](size_t i) -> const Shape& { return shapes[n.inputs[i]]; };
  switch (n.op) {
    case OpKind::CachedAttention: {
      auto k = std::make_unique<CachedAttentionKernel>();
      k->q = in(0);
      k->kc = in(1);
      k->vc = in(2);
      k->kn = in(3);
      k->vn = in(4);
      k->length = in(5);
      k->y = mem.ref[id];
      const Shape& qs = in_shape(0);
      k->geo = {qs[0], qs[1], qs[2], in_shape(1)[2], qs[3], 1.0f};
      k->geo.scale = n.attrs.scale > 0.0f ? n.attrs.scale : 1.0f / std::sqrt(static_cast<float>(qs[3]));
      return k;
    }
    case OpKind::CacheWrite: {
      auto k = std::make_unique<CacheWriteKernel>();
      k->cache = in(0);
      k->value = in(1);
      k->offset = in(2);
      const Shape& cs = in_shape(0);
      k->planes = cs[0] * cs[1];
      k->t = in_shape(1)[2];
      k->capacity = cs[2];
      k->d = cs[3];
      return k;
    }
    default:
      return nullptr;
  }
}

}  // namespace gometal
