#include "backends/cpu/positions.h"

#include <sstream>
#include <stdexcept>
#include <string>

namespace gometal {
namespace {

// Runs on the calling thread: a few int32 stores, and a check whose exception must leave
// the step before any effect.
struct PositionsKernel final : Kernel {
  BufRef y;
  int64_t length = 0, limit = 0;
  std::string label, message;
  void run(const ExecContext& ctx) const override { fill_positions(length, limit, label, message, ctx.iptr(y)); }
};

}  // namespace

void fill_positions(int64_t length, int64_t limit, const std::string& label, const std::string& message,
                    int32_t* out) {
  if (limit > 0 && length > limit) {
    std::ostringstream text;
    text << "[" << label << "] " << message << ", got " << length;
    throw std::invalid_argument(text.str());
  }
  for (int64_t i = 0; i < length; ++i) out[i] = static_cast<int32_t>(i);
}

std::unique_ptr<Kernel> make_positions_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                              const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  if (n.op != OpKind::Positions) return nullptr;
  auto k = std::make_unique<PositionsKernel>();
  k->y = mem.ref[id];
  k->length = shapes[id][0];
  k->limit = n.attrs.depth;
  k->label = n.attrs.name;
  k->message = n.attrs.message;
  return k;
}

}  // namespace gometal
