#include "backends/cpu/gemm_packed_weights.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

#include "backends/cpu/elementwise_ops.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_packed.h"
#include "backends/cpu/passes/dense_epilogues.h"
#include "ir/op_registry.h"

namespace gometal {
namespace {

// Every write to a persistent pool, process-wide: ranges by address with the epoch of their
// latest write. Engines own disjoint pools, so addresses identify weights across them.
class WriteLog {
 public:
  static WriteLog& instance() {
    static WriteLog log;
    return log;
  }

  void note(const void* begin, int64_t bytes) {
    const auto b = reinterpret_cast<std::uintptr_t>(begin), e = b + static_cast<std::uintptr_t>(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    const uint64_t epoch = epoch_.load(std::memory_order_relaxed) + 1;
    // Ranges the new one covers are superseded; past kMostRanges (pools of engines long
    // gone) the log starts over, every older epoch counting as written.
    writes_.erase(std::remove_if(writes_.begin(), writes_.end(),
                                 [&](const Write& w) { return w.begin >= b && w.end <= e; }),
                  writes_.end());
    if (writes_.size() >= kMostRanges) {
      writes_.clear();
      floor_ = epoch;
    }
    writes_.push_back({b, e, epoch});
    epoch_.store(epoch, std::memory_order_release);
  }

  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }

  // Whether anything in [begin, begin + bytes) was written after `since`.
  bool written_since(const void* begin, int64_t bytes, uint64_t since) {
    const auto b = reinterpret_cast<std::uintptr_t>(begin), e = b + static_cast<std::uintptr_t>(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    if (since < floor_) return true;
    for (const Write& w : writes_)
      if (w.epoch > since && w.begin < e && b < w.end) return true;
    return false;
  }

 private:
  static constexpr size_t kMostRanges = 1 << 14;
  struct Write {
    std::uintptr_t begin, end;
    uint64_t epoch;
  };
  std::mutex mutex_;
  std::vector<Write> writes_;
  std::atomic<uint64_t> epoch_{0};
  uint64_t floor_ = 0;
};

// One weight's packed copy, shared by the plans of its engine (which run one at a time):
// packed on first use, packed again on the first use after a write.
class PackedEntry {
 public:
  const PackedWeights& prepare(const float* w, bool transpose_b, int64_t n, int64_t k, SimdPath path) {
    WriteLog& log = WriteLog::instance();
    const uint64_t now = log.epoch();
    if (valid_ && now != checked_ && log.written_since(w, n * k * static_cast<int64_t>(sizeof(float)), checked_))
      valid_ = false;
    checked_ = now;
    if (!valid_) {
      pack_weights(path, transpose_b, n, k, w, &packed_);
      valid_ = true;
    }
    return packed_;
  }

 private:
  PackedWeights packed_;
  uint64_t checked_ = 0;  // the write epoch when validity was last checked
  bool valid_ = false;    // packed_ holds the weights as they are
};

// The writes of the plan running on this thread (PersistentWrites::note runs first in every
// plan): a plan that writes its own weights (a training step) never packs them.
thread_local const PersistentWrites* t_running_writes = nullptr;
thread_local const char* t_running_pool = nullptr;

bool running_plan_writes(const float* w, int64_t bytes) {
  if (t_running_writes == nullptr) return false;
  const char* begin = reinterpret_cast<const char*>(w);
  for (const auto& [offset, length] : t_running_writes->ranges) {
    const char* at = t_running_pool + offset;
    if (at < begin + bytes && begin < at + length) return true;
  }
  return false;
}

using EntryKey = std::tuple<const float*, bool, int64_t, int64_t, SimdPath>;

std::shared_ptr<PackedEntry> shared_entry(const EntryKey& key) {
  static std::mutex mutex;
  static std::map<EntryKey, std::weak_ptr<PackedEntry>> entries;
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = entries.begin(); it != entries.end();) it = it->second.expired() ? entries.erase(it) : std::next(it);
  std::shared_ptr<PackedEntry> entry = entries[key].lock();
  if (!entry) {
    entry = std::make_shared<PackedEntry>();
    entries[key] = entry;
  }
  return entry;
}

struct PackedMatMulKernel final : Kernel {
  BufRef a, b, c, bias, residual;  // bias, residual: Region::None without them in the epilogue
  bool tb = false;
  DenseActivation activation = DenseActivation::None;
  HeadsLayout heads;
  int64_t m = 0, n = 0, k = 0;
  SimdPath path = SimdPath::Portable;
  // Found on the first run, when the pool's address is known.
  mutable std::shared_ptr<PackedEntry> entry;
  mutable const float* entry_weights = nullptr;
  mutable bool plan_writes_weights = false;
  // Runs alternate the panels' order: a model's weights a little larger than the L2 cache,
  // read in one order every run, would miss on every panel; read back and forth, each run
  // starts on the panels the last one read most recently, which are still cached.
  mutable bool backwards = false;

  void run(const ExecContext& ctx) const override {
    const float* w = ctx.ptr(b);
    if (w != entry_weights) {
      plan_writes_weights = running_plan_writes(w, n * k * static_cast<int64_t>(sizeof(float)));
      if (!plan_writes_weights) entry = shared_entry({w, tb, n, k, path});
      entry_weights = w;
    }
    const float* bias_values = bias.region == Region::None ? nullptr : ctx.ptr(bias);
    const float* residual_values = residual.region == Region::None ? nullptr : ctx.ptr(residual);
    float* out = ctx.ptr(c);
    if (!plan_writes_weights) {
      gemm_packed(*ctx.pool, m, ctx.ptr(a), entry->prepare(w, tb, n, k, path), out, bias_values, activation,
                  backwards, residual_values, heads);
      backwards = !backwards;
      return;
    }
    // Weights this plan writes (not packed): rows stored in order first, split into heads
    // after (a rare path, so its buffer is made here).
    std::vector<float> rows(heads.t > 0 ? m * n : 0);
    float* sums = heads.t > 0 ? rows.data() : out;
    gemm(*ctx.pool, false, tb, m, n, k, ctx.ptr(a), w, sums);
    if (bias_values != nullptr)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          float v = sums[i * n + j] + bias_values[j];
          if (residual_values != nullptr) v += residual_values[i * n + j];
          sums[i * n + j] = activation == DenseActivation::Relu   ? std::max(v, 0.0f)
                            : activation == DenseActivation::Gelu ? ew::gelu(v)
                                                                  : v;
        }
    if (heads.t > 0)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j)
          out[((i / heads.t * heads.heads + j / heads.d) * heads.t + i % heads.t) * heads.d + j % heads.d] =
              sums[i * n + j];
  }
};

}  // namespace

void note_persistent_write(const void* begin, int64_t bytes) { WriteLog::instance().note(begin, bytes); }

void PersistentWrites::note(const char* persistent) const {
  t_running_writes = this;
  t_running_pool = persistent;
  for (const auto& [offset, bytes] : ranges) note_persistent_write(persistent + offset, bytes);
}

PersistentWrites persistent_writes(const Graph& g, const FunctionSpec& fn, const std::vector<int64_t>& persistent_offset) {
  PersistentWrites writes;
  for (int e : fn.effects) {
    const Node& node = g.node(e);
    const OpDef& def = op_def(node.op);
    if (def.written == nullptr) continue;
    for (int var : def.written(node)) {
      const Node& v = g.node(var);
      if (persistent_offset[var] >= 0)
        writes.ranges.emplace_back(persistent_offset[var], numel(v.shape) * dtype_size(v.dtype));
    }
  }
  return writes;
}

std::unique_ptr<Kernel> make_packed_matmul_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                                  const std::vector<Shape>& shapes) {
  const Node& node = g.node(id);
  if (node.op != OpKind::MatMul) return nullptr;
  const BufRef weights = stored_rows(g, node.inputs[1], mem, shapes);
  if (!runs_on_packed_weights(g, id, shapes, weights.region == Region::Persistent)) return nullptr;
  auto kernel = std::make_unique<PackedMatMulKernel>();
  kernel->a = mem.ref[node.inputs[0]];
  kernel->b = weights;
  kernel->c = mem.ref[id];
  if (mem.ref[id].region == Region::None) {
    const DenseEpilogue epilogue = merged_dense_epilogue(g, id, mem, shapes);
    kernel->bias = stored_rows(g, epilogue.bias, mem, shapes);
    kernel->activation = epilogue.activation;
    if (epilogue.residual >= 0) kernel->residual = mem.ref[epilogue.residual];
    kernel->heads = epilogue.heads;
    kernel->c = mem.ref[epilogue.last];
  }
  kernel->tb = node.attrs.transpose_b;
  kernel->m = packed_rows(shapes[id]);
  kernel->n = shapes[id].back();
  kernel->k = shapes[node.inputs[0]].back();
  kernel->path = *choose_gemm_packed_path();
  return kernel;
}

}  // namespace gometal
