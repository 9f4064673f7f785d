// The communicator the collective kernels call: the processes of a data-parallel job, each
// holding one engine, exchange float buffers inside a compiled step, with no return to Python.
// One communicator per process (an MPI job has one world); without one, a process is a job
// of size 1 and the collectives copy their input.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace gometal {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // out = the element-wise sum of every rank's `in` (count floats); in and out may not overlap.
  virtual void all_reduce_sum(const float* in, float* out, int64_t count) = 0;
  // The same, started without waiting: returns a ticket for wait(). The buffers must stay
  // untouched until wait(ticket) returns.
  virtual int64_t start_all_reduce_sum(const float* in, float* out, int64_t count) = 0;
  // out (count floats) = the element-wise sum of block rank() of every rank's `in` (size() *
  // count floats): a reduce-scatter, started without waiting like start_all_reduce_sum.
  virtual int64_t start_reduce_scatter_sum(const float* in, float* out, int64_t count) = 0;
  virtual void wait(int64_t ticket) = 0;
  // Advances the collectives in flight (one test of each request), without waiting: the
  // engine calls it between kernels while any is in flight. Cheap and a no-op by default.
  virtual void progress() {}
  // Every rank's `data` (bytes) becomes root's.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  // out (size() * bytes) = every rank's `in` (bytes), in rank order.
  virtual void all_gather(const void* in, int64_t bytes, void* out) = 0;
  virtual void barrier() = 0;
};

// The handles an MPI job's Python side (mpi4py) gives: the library it loaded and the
// communicator, datatypes and reduction, each as a pointer-sized integer (an int handle of
// MPICH fits, and is narrowed back when the functions are called).
struct MpiHandles {
  std::string library;      // path of the libmpi already loaded in this process
  intptr_t comm = 0;        // MPI_Comm
  intptr_t float_type = 0;  // MPI_FLOAT
  intptr_t byte_type = 0;   // MPI_BYTE
  intptr_t sum_op = 0;      // MPI_SUM
  int handle_bytes = 8;     // sizeof(MPI_Comm): 8 in Open MPI (pointers), 4 in MPICH (ints)
};

// An MPI communicator over the functions of the already-loaded `handles.library`.
// Throws std::invalid_argument when the library is not loaded or lacks a function.
std::shared_ptr<Communicator> make_mpi_communicator(const MpiHandles& handles);

// The process's communicator (nullptr: a job of one process).
std::shared_ptr<Communicator> current_communicator();
void set_current_communicator(std::shared_ptr<Communicator> communicator);

}  // namespace gometal
