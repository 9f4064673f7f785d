// Collectives: values exchanged between the processes of a data-parallel job inside a step.
//
// all_reduce_mean(x) is the mean of x over every rank, computed by the CPU kernel through the
// process's communicator (distributed/communicator.h); a process without one is a job of one
// rank and gets x back. The training step wraps each gradient in it, so the optimizer, the
// clipping and the loss scaling read the global gradient without a return to Python.
//
// Why a communicator bound at run time rather than linking MPI: the wheel builds without MPI
// (an isolated build, a base install without it), and the user's mpi4py decides which MPI the
// job runs; the kernel calls that library's MPI_Allreduce directly, with no Python round trip
// per step.
//
// all_reduce_mean_start(x) and all_reduce_mean_wait(started, x) are the same mean in two
// halves, so that the exchange runs while other kernels do: start hands x to a non-blocking
// MPI_Iallreduce whose sum lands in start's buffer; wait blocks until it is there and gives the
// mean. Reading start's value anywhere but in its wait would read a sum still in flight, so the
// shape rule holds wait to its start; wait also reads x, which keeps x's buffer (MPI reads it
// until the end) alive until then. The schedule runs a start as soon as it can and a wait as
// late as it can (passes/schedule.cpp).
//
// With `parts` N (0, the default: none), all_reduce_mean and all_reduce_mean_start keep only
// this rank's share of the mean: x's first axis is cut into N equal parts and rank r gets the
// mean of part r (a reduce-scatter, MPI_Ireduce_scatter_block). ZeRO-1 needs no more of each
// gradient than the shard it updates, and a ring reduce-scatter sends half of an all-reduce.
// N is the job's size the graph was built for, checked when the step runs.
//
// all_gather(x, parts) stacks every rank's x along axis 0 in rank order (ZeRO-1 gathers the
// parameter shards each rank updated); `parts` is the job's size the graph was built for.
//
// Every rank must run the same collectives in the same order: the ranks build the same graph,
// and the schedule of a graph is deterministic, so they do.
#include "ir/ops/op_support.h"

namespace gometal {
namespace {

using namespace ops;

void all_reduce_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  require_dtype(n, x, DType::F32, "input");
  n.shape = x.shape;
  n.dtype = x.dtype;
  const int64_t parts = n.attrs.depth;
  if (parts == 0) return;
  if (parts < 0) fail(name_of(n), "expects parts >= 0, got " + std::to_string(parts));
  if (x.shape.empty() || is_symbol(x.shape[0]) || x.shape[0] % parts != 0)
    fail(name_of(n), "with parts " + std::to_string(parts) + " expects a fixed first axis that " +
                         std::to_string(parts) + " divides, got shape " + shape_str(x.shape));
  n.shape[0] /= parts;
}

void all_reduce_wait_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& started = input(n, nodes, 0);
  if (started.op != OpKind::AllReduceMeanStart || started.inputs.empty() || started.inputs[0] != n.inputs[1])
    fail(name_of(n), "expects (all_reduce_mean_start(x), x), got a '" + std::string(name_of(started)) +
                         "' node and a value that is not its input");
  n.shape = started.shape;
  n.dtype = started.dtype;
}

void all_gather_shape(Node& n, const std::vector<Node>& nodes) {
  const Node& x = input(n, nodes, 0);
  require_dtype(n, x, DType::F32, "input");
  if (x.shape.empty() || is_symbol(x.shape[0]))
    fail(name_of(n), "expects an input with a fixed first axis, got shape " + shape_str(x.shape));
  if (n.attrs.depth < 1) fail(name_of(n), "expects parts >= 1, got " + std::to_string(n.attrs.depth));
  n.shape = x.shape;
  n.shape[0] *= n.attrs.depth;
  n.dtype = x.dtype;
}

// Every rank's loss reads the same mean, so the gradient reaching x_r is the mean of every
// rank's gradient of it: the same collective.
void vjp_all_reduce_mean(Graph& gr, int id, int g, std::vector<int>& dx) {
  if (gr.node(id).attrs.depth != 0)
    fail("all_reduce_mean", "has no gradient with parts (a reduce-scatter); the training step only reduces gradients with it");
  dx[0] = gr.op(OpKind::AllReduceMean, {g});
}

}  // namespace

std::vector<OpDef> collective_op_defs() {
  return {
      {OpKind::AllReduceMean, "all_reduce_mean", 1, {attr("parts", &Attrs::depth)}, all_reduce_shape,
       Gradient::Rule, vjp_all_reduce_mean},
      {OpKind::AllReduceMeanStart, "all_reduce_mean_start", 1, {attr("parts", &Attrs::depth)}, all_reduce_shape,
       Gradient::None},
      {OpKind::AllReduceMeanWait, "all_reduce_mean_wait", 2, {}, all_reduce_wait_shape, Gradient::None},
      {OpKind::AllGather, "all_gather", 1, {attr("parts", &Attrs::depth)}, all_gather_shape, Gradient::None},
  };
}

}  // namespace gometal
