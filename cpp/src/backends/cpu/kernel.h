// What a CPU kernel sees when it runs: resolved base pointers and the thread pool.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "backends/cpu/passes/memory_plan.h"
#include "runtime/thread_pool.h"

namespace gometal {

struct ExecContext {
  char* arena = nullptr;       // buffers are located by byte offsets
  char* persistent = nullptr;
  const void* const* inputs = nullptr;  // one pointer per function input
  ThreadPool* pool = nullptr;
  float* scratch = nullptr;             // per-thread scratch, scratch_stride floats each
  float* shared = nullptr;              // one workspace for all threads of the running kernel
  int64_t scratch_stride = 0;
  uint64_t seed = 0;
  uint64_t rng_step = 0;
  char* tiles = nullptr;      // per-thread tile buffers, tile_stride bytes each
  int64_t tile_stride = 0;
  char* tile = nullptr;       // inside a tiled run: this thread's tiles, holding image tile_sample
  int64_t tile_sample = 0;

  // The buffer's first element. Kernels read and write float32 through ptr (or int32
  // through iptr); other dtypes through bytes.
  char* bytes(const BufRef& r) const {
    switch (r.region) {
      case Region::Arena: return arena + r.offset;
      case Region::Persistent: return persistent + r.offset;
      case Region::Input: return const_cast<char*>(static_cast<const char*>(inputs[r.index])) + r.offset;
      case Region::Tile: {
        // A base such that base + tile_sample * sample_bytes is the tile: kernels index
        // images of a tile as they index images of a full buffer.
        const auto at = reinterpret_cast<std::uintptr_t>(tile + r.offset);
        return reinterpret_cast<char*>(at - static_cast<std::uintptr_t>(tile_sample * r.sample_bytes));
      }
      case Region::None: break;
    }
    return nullptr;
  }
  float* ptr(const BufRef& r) const { return reinterpret_cast<float*>(bytes(r)); }
  int32_t* iptr(const BufRef& r) const { return reinterpret_cast<int32_t*>(bytes(r)); }
  float* thread_scratch(int thread) const { return scratch + thread * scratch_stride; }
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(const ExecContext& ctx) const = 0;
  // Scratch each thread needs while this kernel runs, and the workspace its threads share.
  virtual int64_t scratch_floats() const { return 0; }
  virtual int64_t shared_floats() const { return 0; }
  // Samples [n0, n1) of a batch-first step on the calling thread, with that thread's
  // scratch: how a sample-tiled run (passes/sample_tiling.h) executes its steps.
  virtual void run_samples(const ExecContext& ctx, int64_t n0, int64_t n1, int thread) const;
};

inline void Kernel::run_samples(const ExecContext&, int64_t, int64_t, int) const {
  throw std::logic_error("[cpu] this kernel cannot run sample by sample");
}

// How many tasks to cut `units` of independent work into: a few per thread, so threads
// that finish early (another process took a core for a while) take over the rest.
inline int balanced_tasks(const ThreadPool& pool, int64_t units) {
  constexpr int64_t kTasksPerThread = 8;
  const int64_t most = pool.size() == 1 ? 1 : pool.size() * kTasksPerThread;
  return static_cast<int>(units < most ? units : most);
}

// Splits [0, n) into `parts` near-equal ranges aligned to `align`.
inline void split_range(int64_t n, int parts, int part, int64_t align, int64_t* begin, int64_t* end) {
  const int64_t units = (n + align - 1) / align;
  const int64_t per = units / parts, extra = units % parts;
  const int64_t ub = part * per + (part < extra ? part : extra);
  const int64_t ue = ub + per + (part < extra ? 1 : 0);
  *begin = ub * align < n ? ub * align : n;
  *end = ue * align < n ? ue * align : n;
}

// Runs fn(begin, end) over [0, n) cut by split_range into `parts` (on the calling thread alone
// when parts <= 1); empty ranges are skipped.
template <class F>
void for_split_ranges(ThreadPool& pool, int64_t n, int parts, int64_t align, F&& fn) {
  if (parts <= 1) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  pool.parallel_for(parts, [&](int part, int) {
    int64_t lo, hi;
    split_range(n, parts, part, align, &lo, &hi);
    if (lo < hi) fn(lo, hi);
  });
}

}  // namespace gometal
