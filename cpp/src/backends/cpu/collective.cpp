#include "backends/cpu/collective.h"

#include <cstring>

#include "distributed/communicator.h"

namespace gometal {
namespace {

// Runs on the calling thread: the communicator's call blocks until every rank brought its
// buffer, and every rank runs its collectives in the same order.
struct AllReduceMeanKernel final : Kernel {
  BufRef x, y;
  int64_t count = 0;
  void run(const ExecContext& ctx) const override {
    const float* in = ctx.ptr(x);
    float* out = ctx.ptr(y);
    const std::shared_ptr<Communicator> comm = current_communicator();
    if (comm == nullptr || comm->size() == 1) {
      if (out != in) std::memmove(out, in, static_cast<size_t>(count) * sizeof(float));
      return;
    }
    if (out == in) throw std::logic_error("[all_reduce_mean] input and output share a buffer");
    comm->all_reduce_sum(in, out, count);
    const float inverse = 1.0f / static_cast<float>(comm->size());
    for (int64_t i = 0; i < count; ++i) out[i] *= inverse;
  }
};

}  // namespace

std::unique_ptr<Kernel> make_collective_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                               const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  if (n.op != OpKind::AllReduceMean) return nullptr;
  auto k = std::make_unique<AllReduceMeanKernel>();
  k->x = mem.ref[n.inputs[0]];
  k->y = mem.ref[id];
  k->count = numel(shapes[id]);
  return k;
}

}  // namespace gometal
