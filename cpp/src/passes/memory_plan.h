// Liveness-based arena plan: every materialised intermediate gets an offset in one arena,
// and buffers whose lifetimes do not overlap share memory.
#pragma once

#include <cstdint>
#include <vector>

#include "gometal/ir.h"
#include "passes/fusion.h"
#include "passes/sample_tiling.h"
#include "passes/schedule.h"

namespace gometal {

// Tile: a value made and read only inside one sample-tiled run lives in a per-thread
// buffer holding one image, reused image after image.
enum class Region : uint8_t { None, Arena, Persistent, Input, Tile };

struct BufRef {
  Region region = Region::None;
  int32_t index = 0;          // input slot for Region::Input
  int64_t offset = 0;         // in floats (all element types are 4 bytes)
  int64_t sample_floats = 0;  // Region::Tile: floats per image
};

struct MemoryPlan {
  std::vector<BufRef> ref;  // per node id (aliases resolved to their root's buffer)
  int64_t arena_floats = 0;
  int64_t tile_floats = 0;  // per thread
};

// `persistent` holds the offsets of variables, scalars and constants in the engine's pool.
// `tiling` (or nullptr: no runs) gives the sample-tiled runs: a buffer that dies inside a
// run is freed only after the run, since the run's steps interleave image by image, and a
// value made and read only inside one run gets a one-image tile.
MemoryPlan plan_memory(const Graph& g, const Schedule& s, const Fusion& f, const FunctionSpec& fn,
                       const std::vector<Shape>& shapes, const std::vector<int64_t>& persistent_offset,
                       const SampleTiling* tiling = nullptr);

}  // namespace gometal
