#include "backends/cpu/passes/memory_plan.h"

#include <algorithm>
#include <iterator>
#include <map>

namespace gometal {
namespace {

constexpr int64_t kAlignBytes = 64;

int64_t aligned(int64_t bytes) { return (bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes; }

// Best-fit allocator over offsets; frees coalesce with their neighbours.
class OffsetAllocator {
 public:
  int64_t allocate(int64_t size) {
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second >= size && (best == free_.end() || it->second < best->second)) best = it;
    if (best == free_.end()) {
      // Grow the arena, reusing a free block that ends at the top.
      if (!free_.empty()) {
        auto last = std::prev(free_.end());
        if (last->first + last->second == top_) {
          const int64_t off = last->first;
          free_.erase(last);
          top_ = off + size;
          return off;
        }
      }
      const int64_t off = top_;
      top_ += size;
      return off;
    }
    const int64_t off = best->first;
    const int64_t rest = best->second - size;
    free_.erase(best);
    if (rest > 0) free_[off + size] = rest;
    return off;
  }

  void release(int64_t off, int64_t size) {
    auto it = free_.emplace(off, size).first;
    auto next = std::next(it);
    if (next != free_.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free_.erase(next);
    }
    if (it != free_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free_.erase(it);
      }
    }
  }

  int64_t top() const { return top_; }

 private:
  std::map<int64_t, int64_t> free_;
  int64_t top_ = 0;
};

}  // namespace

MemoryPlan plan_memory(const Graph& g, const Schedule& s, const Fusion& f, const FunctionSpec& fn,
                       const std::vector<Shape>& shapes, const std::vector<int64_t>& persistent_offset,
                       const SampleTiling* tiling) {
  const int n = g.size();
  MemoryPlan plan;
  plan.ref.assign(n, {});

  for (int i = 0; i < n; ++i) {
    if (!s.needed[i]) continue;
    const Node& node = g.node(i);
    if (node.op == OpKind::Variable || node.op == OpKind::Scalar || node.op == OpKind::Constant) {
      plan.ref[i] = {Region::Persistent, 0, persistent_offset[i]};
    } else if (node.op == OpKind::Input) {
      const auto slot = std::find(fn.inputs.begin(), fn.inputs.end(), i) - fn.inputs.begin();
      plan.ref[i] = {Region::Input, static_cast<int32_t>(slot), 0};
    }
  }

  // Last step that reads each buffer (outputs stay alive to the end).
  const int steps = static_cast<int>(f.steps.size());
  std::vector<int> last_use(n, -1);
  for (int st = 0; st < steps; ++st)
    for (int id : f.steps[st].nodes)
      for (int in : g.node(id).inputs) {
        const int root = s.alias_root[in];
        last_use[root] = std::max(last_use[root], st);
      }
  for (int out : fn.outputs) last_use[s.alias_root[out]] = steps;

  // Buffers dying at each step, and the step after which their memory may be reused.
  auto release_step = [&](int st) { return st < steps && tiling ? tiling->run_end[st] : st; };
  std::vector<std::vector<int>> dies_at(steps + 1), freed_after(steps + 1);
  for (int i = 0; i < n; ++i)
    if (f.materialized[i] && last_use[i] >= 0) {
      dies_at[last_use[i]].push_back(i);
      freed_after[release_step(last_use[i])].push_back(i);
    }

  // Values made in a tiled run and read only inside it (not returned) live in tiles.
  auto in_run = [&](int st) {
    return tiling && st >= 0 && tiling->run_begin[st] != tiling->run_end[st];
  };
  auto in_tile = [&](int id) {
    const int st = f.step_of[id];
    if (!in_run(st)) return false;
    const Shape& shape = shapes[id];
    return !shape.empty() && shape[0] > 1 && last_use[id] <= tiling->run_end[st];
  };

  OffsetAllocator alloc, tiles;
  auto bytes_of = [&](int id, int64_t elements) { return elements * dtype_size(g.node(id).dtype); };
  auto size_of = [&](int id) { return aligned(bytes_of(id, std::max<int64_t>(numel(shapes[id]), 1))); };
  auto sample_bytes = [&](int id) { return bytes_of(id, numel(shapes[id]) / shapes[id][0]); };
  auto tile_size_of = [&](int id) { return aligned(sample_bytes(id)); };
  std::vector<char> released(n, 0);
  for (int st = 0; st < steps; ++st) {
    const Step& step = f.steps[st];
    // A fused group may write an output exactly over a full-shape input that dies here:
    // it reads each block before writing it. Only an exact overlap is safe.
    std::vector<int> reusable;
    if (step.fused) {
      const Shape& group_shape = shapes[step.nodes.front()];
      for (int id : dies_at[st])
        if ((plan.ref[id].region == Region::Arena || plan.ref[id].region == Region::Tile) &&
            shapes[id] == group_shape)
          reusable.push_back(id);
    }
    for (int id : step.nodes) {
      if (!f.materialized[id]) continue;
      const Region region = in_tile(id) ? Region::Tile : Region::Arena;
      auto same_region = std::find_if(reusable.begin(), reusable.end(),
                                      [&](int r) { return plan.ref[r].region == region; });
      if (same_region != reusable.end()) {
        plan.ref[id] = plan.ref[*same_region];
        released[*same_region] = 1;  // its block now belongs to `id`
        reusable.erase(same_region);
      } else if (region == Region::Tile) {
        plan.ref[id] = {Region::Tile, 0, tiles.allocate(tile_size_of(id)), sample_bytes(id)};
      } else {
        plan.ref[id] = {Region::Arena, 0, alloc.allocate(size_of(id))};
      }
    }
    // A value nobody reads still needs a place to be written; it dies at once.
    for (int id : step.nodes)
      if (f.materialized[id] && last_use[id] < 0) {
        if (plan.ref[id].region == Region::Tile) dies_at[st].push_back(id);
        else freed_after[release_step(st)].push_back(id);
      }
    // Tiles hold one image, and a run finishes each image's steps in order: they are
    // free again as soon as their last reader has run.
    for (int id : dies_at[st]) {
      if (released[id] || plan.ref[id].region != Region::Tile) continue;
      tiles.release(plan.ref[id].offset, tile_size_of(id));
      released[id] = 1;
    }
    for (int id : freed_after[st]) {
      if (released[id] || plan.ref[id].region != Region::Arena) continue;
      alloc.release(plan.ref[id].offset, size_of(id));
      released[id] = 1;
    }
  }
  plan.tile_bytes = tiles.top();
  plan.arena_bytes = alloc.top();

  for (int i = 0; i < n; ++i)
    if (s.needed[i] && s.alias_root[i] != i) plan.ref[i] = plan.ref[s.alias_root[i]];
  return plan;
}

}  // namespace gometal
