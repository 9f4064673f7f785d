// Liveness-based arena plan: every materialised intermediate gets an offset in one arena,
// and buffers whose lifetimes do not overlap share memory.
#pragma once

#include <cstdint>
#include <vector>

#include "gometal/ir.h"
#include "backends/cpu/passes/fusion.h"
#include "backends/cpu/passes/sample_tiling.h"
#include "passes/schedule.h"

namespace gometal {

// Tile: a value made and read only inside one sample-tiled run lives in a per-thread
// buffer holding one image, reused image after image.
enum class Region : uint8_t { None, Arena, Persistent, Input, Tile };

struct BufRef {
  Region region = Region::None;
  int32_t index = 0;         // input slot for Region::Input
  int64_t offset = 0;        // in bytes
  int64_t sample_bytes = 0;  // Region::Tile: bytes per image
};

// Sizes are in bytes; every buffer starts on a 64-byte boundary, which every dtype's
// vector loads accept.
struct MemoryPlan {
  std::vector<BufRef> ref;  // per node id (aliases resolved to their root's buffer)
  int64_t arena_bytes = 0;
  int64_t tile_bytes = 0;  // per thread
};

// `persistent` holds the byte offsets of variables, scalars and constants in the engine's pool.
// `tiling` (or nullptr: no runs) gives the sample-tiled runs: a buffer that dies inside a
// run is freed only after the run, since the run's steps interleave image by image, and a
// value made and read only inside one run gets a one-image tile.
MemoryPlan plan_memory(const Graph& g, const Schedule& s, const Fusion& f, const FunctionSpec& fn,
                       const std::vector<Shape>& shapes, const std::vector<int64_t>& persistent_offset,
                       const SampleTiling* tiling = nullptr);

}  // namespace gometal
