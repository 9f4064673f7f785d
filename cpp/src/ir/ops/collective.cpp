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
}

// Every rank's loss reads the same mean, so the gradient reaching x_r is the mean of every
// rank's gradient of it: the same collective.
void vjp_all_reduce_mean(Graph& gr, int, int g, std::vector<int>& dx) { dx[0] = gr.op(OpKind::AllReduceMean, {g}); }

}  // namespace

std::vector<OpDef> collective_op_defs() {
  return {
      {OpKind::AllReduceMean, "all_reduce_mean", 1, {}, all_reduce_shape, Gradient::Rule, vjp_all_reduce_mean},
  };
}

}  // namespace gometal
