#include "backends/cpu/packed_weight_cache.h"

#include <cstddef>
#include <cstring>
#include <vector>

namespace gometal {
namespace {

struct CachedPacking {
  PackedWeightKey key{};
  const float* source = nullptr;
  std::vector<float> seen, packed;
  int64_t floats() const { return static_cast<int64_t>(seen.size() + packed.size()); }
};

// Enough for every convolution of a model's step on one thread; past either bound the oldest
// entries go, so a model of large convolutions holds at most about 64 MB per thread here.
constexpr size_t kEntries = 16;
constexpr int64_t kMostFloats = int64_t{1} << 24;
thread_local std::vector<CachedPacking> t_entries;  // oldest first

bool same_key(const PackedWeightKey& a, const PackedWeightKey& b) {
  return std::strcmp(a.layout, b.layout) == 0 && a.rows == b.rows && a.columns == b.columns && a.lanes == b.lanes;
}

// Room for an entry of `floats` more: the oldest entries dropped while the cache is full.
void make_room(int64_t floats) {
  int64_t held = 0;
  for (const CachedPacking& e : t_entries) held += e.floats();
  size_t dropped = 0;
  while (dropped < t_entries.size() && (t_entries.size() - dropped >= kEntries || held + floats > kMostFloats))
    held -= t_entries[dropped++].floats();
  t_entries.erase(t_entries.begin(), t_entries.begin() + static_cast<std::ptrdiff_t>(dropped));
}

}  // namespace

const float* cached_packed_weights(const PackedWeightKey& key, const float* source, int64_t floats,
                                   int64_t packed_floats, PackWeights pack) {
  CachedPacking* entry = nullptr;
  for (CachedPacking& e : t_entries)
    if (e.source == source && same_key(e.key, key) && static_cast<int64_t>(e.seen.size()) == floats) entry = &e;
  if (entry != nullptr && std::memcmp(entry->seen.data(), source, floats * sizeof(float)) == 0)
    return entry->packed.data();
  if (entry == nullptr) {
    make_room(floats + packed_floats);
    entry = &t_entries.emplace_back();
    entry->key = key;
    entry->source = source;
  }
  entry->seen.assign(source, source + floats);
  entry->packed.resize(packed_floats);
  pack(key, source, entry->packed.data());
  return entry->packed.data();
}

}  // namespace gometal
