#include "backends/cpu/collective.h"

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "distributed/communicator.h"

namespace gometal {
namespace {

// The non-blocking all-reduces in flight, by the buffer each sums into: a start's buffer stays
// live until its wait reads it, so no two in flight share one, and the wait finds its ticket
// from the start's buffer alone (kernels are built one node at a time).
std::mutex in_flight_mutex;
std::map<const float*, int64_t> in_flight;
std::atomic<int> in_flight_count{0};  // in_flight.size(), read without the mutex between kernels

void copy_floats(const float* in, float* out, int64_t count) {
  if (out != in) std::memmove(out, in, static_cast<size_t>(count) * sizeof(float));
}

void scale(float* out, const float* in, int64_t count, int ranks) {
  const float inverse = 1.0f / static_cast<float>(ranks);
  for (int64_t i = 0; i < count; ++i) out[i] = in[i] * inverse;
}

// Waits for the all-reduce summing into `sum` (none: a job of one rank copied it already).
void wait_for(Communicator& comm, const float* sum) {
  int64_t ticket = -1;
  {
    std::lock_guard<std::mutex> lock(in_flight_mutex);
    const auto it = in_flight.find(sum);
    if (it == in_flight.end()) return;
    ticket = it->second;
    in_flight.erase(it);
    in_flight_count.store(static_cast<int>(in_flight.size()), std::memory_order_relaxed);
  }
  comm.wait(ticket);
}

// Starts the sum of every rank's `in` into `sum` (count floats): all of it, or with `parts`
// (a reduce-scatter) this rank's part of an input `parts` times as long.
void start(Communicator& comm, const float* in, float* sum, int64_t count, int64_t parts) {
  // A step that failed between a start and its wait left its request behind: finish it
  // before the buffer is reused.
  wait_for(comm, sum);
  const int64_t ticket =
      parts == 0 ? comm.start_all_reduce_sum(in, sum, count) : comm.start_reduce_scatter_sum(in, sum, count);
  std::lock_guard<std::mutex> lock(in_flight_mutex);
  in_flight[sum] = ticket;
  in_flight_count.store(static_cast<int>(in_flight.size()), std::memory_order_relaxed);
}

// The job's size, checked against the `parts` a reduce-scatter was built for (0: any size).
int job_size(const std::shared_ptr<Communicator>& comm, int64_t parts, const char* op) {
  const int ranks = comm == nullptr ? 1 : comm->size();
  if (parts != 0 && ranks != parts)
    throw std::runtime_error("[" + std::string(op) + "] the graph was built for " + std::to_string(parts) +
                             " ranks (parts), the job has " + std::to_string(ranks));
  return ranks;
}

// The blocking mean: a start and its wait back to back, so that it sums in the same order as
// the overlapped pair (the same MPI algorithm), bit for bit. Runs on the calling thread.
struct AllReduceMeanKernel final : Kernel {
  BufRef x, y;
  int64_t count = 0;  // of the output
  int64_t parts = 0;
  void run(const ExecContext& ctx) const override {
    const float* in = ctx.ptr(x);
    float* out = ctx.ptr(y);
    const std::shared_ptr<Communicator> comm = current_communicator();
    if (job_size(comm, parts, "all_reduce_mean") == 1) return copy_floats(in, out, count);
    if (out == in) throw std::logic_error("[all_reduce_mean] input and output share a buffer");
    start(*comm, in, out, count, parts);
    wait_for(*comm, out);
    scale(out, out, count, comm->size());
  }
};

struct AllReduceStartKernel final : Kernel {
  BufRef x, sum;
  int64_t count = 0;  // of the output
  int64_t parts = 0;
  void run(const ExecContext& ctx) const override {
    const float* in = ctx.ptr(x);
    float* out = ctx.ptr(sum);
    const std::shared_ptr<Communicator> comm = current_communicator();
    if (job_size(comm, parts, "all_reduce_mean_start") == 1) return copy_floats(in, out, count);
    if (out == in) throw std::logic_error("[all_reduce_mean_start] input and output share a buffer");
    start(*comm, in, out, count, parts);
  }
};

struct AllReduceWaitKernel final : Kernel {
  BufRef sum, y;
  int64_t count = 0;
  void run(const ExecContext& ctx) const override {
    const float* summed = ctx.ptr(sum);
    float* out = ctx.ptr(y);
    const std::shared_ptr<Communicator> comm = current_communicator();
    if (comm == nullptr || comm->size() == 1) return copy_floats(summed, out, count);
    wait_for(*comm, summed);
    scale(out, summed, count, comm->size());
  }
};

// Blocking, on the calling thread: the gathered values are read right after.
struct AllGatherKernel final : Kernel {
  BufRef x, y;
  int64_t bytes = 0;  // one rank's part
  int64_t parts = 1;
  void run(const ExecContext& ctx) const override {
    const char* in = ctx.bytes(x);
    char* out = ctx.bytes(y);
    const std::shared_ptr<Communicator> comm = current_communicator();
    const int ranks = comm == nullptr ? 1 : comm->size();
    if (ranks != parts)
      throw std::runtime_error("[all_gather] the graph was built for " + std::to_string(parts) +
                               " ranks, the job has " + std::to_string(ranks));
    if (ranks == 1) {
      if (out != in) std::memmove(out, in, static_cast<size_t>(bytes));
      return;
    }
    comm->all_gather(in, bytes, out);
  }
};

}  // namespace

void progress_collectives() {
  if (in_flight_count.load(std::memory_order_relaxed) == 0) return;
  if (const std::shared_ptr<Communicator> comm = current_communicator()) comm->progress();
}

std::unique_ptr<Kernel> make_collective_kernel(const Graph& g, int id, const MemoryPlan& mem,
                                               const std::vector<Shape>& shapes) {
  const Node& n = g.node(id);
  const int64_t count = numel(shapes[id]);
  switch (n.op) {
    case OpKind::AllReduceMean: {
      auto k = std::make_unique<AllReduceMeanKernel>();
      k->x = mem.ref[n.inputs[0]];
      k->y = mem.ref[id];
      k->count = count;
      k->parts = n.attrs.depth;
      return k;
    }
    case OpKind::AllReduceMeanStart: {
      auto k = std::make_unique<AllReduceStartKernel>();
      k->x = mem.ref[n.inputs[0]];
      k->sum = mem.ref[id];
      k->count = count;
      k->parts = n.attrs.depth;
      return k;
    }
    case OpKind::AllReduceMeanWait: {
      auto k = std::make_unique<AllReduceWaitKernel>();
      k->sum = mem.ref[n.inputs[0]];
      k->y = mem.ref[id];
      k->count = count;
      return k;
    }
    case OpKind::AllGather: {
      auto k = std::make_unique<AllGatherKernel>();
      k->x = mem.ref[n.inputs[0]];
      k->y = mem.ref[id];
      k->parts = n.attrs.depth;
      k->bytes = count / n.attrs.depth * static_cast<int64_t>(sizeof(float));
      return k;
    }
    default:
      return nullptr;
  }
}

}  // namespace gometal
