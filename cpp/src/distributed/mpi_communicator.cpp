// The MPI communicator, bound at run time to the libmpi that mpi4py already loaded.
//
// gometal's wheel builds and installs without MPI, yet the collectives must run inside the
// compiled step. So nothing here includes mpi.h or links libmpi: the functions are looked up
// with dlsym in the library the process already holds (dlopen with RTLD_NOLOAD takes a new
// reference to it, loads nothing), and the communicator, datatypes and reduction come from
// mpi4py as integers. Whichever MPI the user's mpi4py loaded (Open MPI, MPICH) is the one used.
//
// ABI: handles are pointers in Open MPI and ints in MPICH, so the function types are
// instantiated for the library's handle width (gm.distributed asks the library); requests are the
// same kind of handle and get 8-byte slots; an MPI_Status is 24 bytes in Open MPI and 20 in
// MPICH, and MPI_STATUS_IGNORE is 0 in one and 1 in the other, so waits pass real storage of
// 64 bytes instead.
//
// Progress: a non-blocking collective advances only while the process is inside an MPI call
// (Open MPI's libnbc schedules, MPICH without async progress), and the engine runs kernels in
// between. So while a collective is in flight the engine calls progress() after every kernel,
// which tests each request once (GOMETAL_MPI_PROGRESS=steps, the default): no thread, no
// sleep. GOMETAL_MPI_PROGRESS=thread instead starts a progress thread that calls MPI_Test
// every GOMETAL_MPI_PROGRESS_US microseconds (default 50; 0 leaves all the work to the wait)
// and sleeps on a condition variable while nothing is in flight; its wake-ups cost CPU the
// kernels need on a machine with no spare core. Either way the same collectives run (the same
// bits). Every MPI call on a request happens under one mutex, so MPI_THREAD_SERIALIZED
// suffices (mpi4py asks for MULTIPLE).
//
// Waiting: MPI's own waits poll (Open MPI spins, or calls sched_yield with
// mpi_yield_when_idle), so a rank that waits for its peer keeps taking a core, and on a
// machine with no spare core that is the core the peer needs to catch up. So a wait, and the
// blocking all-reduce (started and waited alike), test the request and sleep in between
// (GOMETAL_MPI_WAIT=poll, the default); GOMETAL_MPI_WAIT=block calls MPI_Wait/MPI_Allreduce.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "distributed/communicator.h"

namespace gometal {
namespace {

// A symbol of the loaded library, or a clear error naming it.
void* symbol(void* library, const std::string& path, const char* name) {
  void* f = dlsym(library, name);
  if (f == nullptr)
    throw std::invalid_argument("[distributed] " + path + " has no function " + name + "; is it an MPI library?");
  return f;
}

template <class Handle>
class MpiCommunicator final : public Communicator {
  using Allreduce = int (*)(const void*, void*, int, Handle, Handle, Handle);
  using Iallreduce = int (*)(const void*, void*, int, Handle, Handle, Handle, Handle*);
  using IreduceScatterBlock = int (*)(const void*, void*, int, Handle, Handle, Handle, Handle*);
  using Wait = int (*)(Handle*, void*);
  using Test = int (*)(Handle*, int*, void*);
  using Bcast = int (*)(void*, int, Handle, int, Handle);
  using Allgather = int (*)(const void*, int, Handle, void*, int, Handle, Handle);
  using Barrier = int (*)(Handle);
  using CommInt = int (*)(Handle, int*);
  using ErrorString = int (*)(int, char*, int*);

 public:
  explicit MpiCommunicator(const MpiHandles& h)
      : comm_(from(h.comm)), float_(from(h.float_type)), byte_(from(h.byte_type)), sum_(from(h.sum_op)) {
    library_ = dlopen(h.library.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (library_ == nullptr)
      throw std::invalid_argument("[distributed] the MPI library " + h.library +
                                  " is not loaded in this process (import mpi4py.MPI first)");
    allreduce_ = reinterpret_cast<Allreduce>(symbol(library_, h.library, "MPI_Allreduce"));
    iallreduce_ = reinterpret_cast<Iallreduce>(symbol(library_, h.library, "MPI_Iallreduce"));
    ireduce_scatter_block_ =
        reinterpret_cast<IreduceScatterBlock>(symbol(library_, h.library, "MPI_Ireduce_scatter_block"));
    wait_ = reinterpret_cast<Wait>(symbol(library_, h.library, "MPI_Wait"));
    test_ = reinterpret_cast<Test>(symbol(library_, h.library, "MPI_Test"));
    bcast_ = reinterpret_cast<Bcast>(symbol(library_, h.library, "MPI_Bcast"));
    allgather_ = reinterpret_cast<Allgather>(symbol(library_, h.library, "MPI_Allgather"));
    barrier_ = reinterpret_cast<Barrier>(symbol(library_, h.library, "MPI_Barrier"));
    error_string_ = reinterpret_cast<ErrorString>(symbol(library_, h.library, "MPI_Error_string"));
    auto comm_rank = reinterpret_cast<CommInt>(symbol(library_, h.library, "MPI_Comm_rank"));
    auto comm_size = reinterpret_cast<CommInt>(symbol(library_, h.library, "MPI_Comm_size"));
    check(comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(comm_size(comm_, &size_), "MPI_Comm_size");
  }
  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_.notify_all();
    if (progress_.joinable()) progress_.join();
    if (library_ != nullptr) dlclose(library_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(const float* in, float* out, int64_t count) override {
    // MPI counts are ints: a larger buffer goes in pieces.
    for (int64_t done = 0; done < count;) {
      const int piece = static_cast<int>(std::min<int64_t>(count - done, INT_MAX));
      if (sleeping_waits_) wait(start_all_reduce_sum(in + done, out + done, piece));
      else check(allreduce_(in + done, out + done, piece, float_, sum_, comm_), "MPI_Allreduce");
      done += piece;
    }
  }

  int64_t start_all_reduce_sum(const float* in, float* out, int64_t count) override {
    return start(iallreduce_, "MPI_Iallreduce", in, out, count);
  }

  int64_t start_reduce_scatter_sum(const float* in, float* out, int64_t count) override {
    return start(ireduce_scatter_block_, "MPI_Ireduce_scatter_block", in, out, count);
  }

  void wait(int64_t ticket) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (ticket < 0 || static_cast<size_t>(ticket) >= in_use_.size() || !in_use_[ticket])
      throw std::invalid_argument("[distributed] wait on an unknown ticket " + std::to_string(ticket));
    // A request the progress thread completed is MPI_REQUEST_NULL, which MPI_Wait and
    // MPI_Test report complete at once. The slot stays in use until the request is done, so
    // no start takes it while the lock is released for a sleep.
    alignas(8) unsigned char status[64] = {};
    auto release = [&] {
      in_use_[ticket] = false;
      --in_flight_;
    };
    if (!sleeping_waits_) {
      release();
      check(wait_(&requests_[ticket].handle, status), "MPI_Wait");
      return;
    }
    auto pause = std::chrono::microseconds(kFirstWaitPauseUs);
    for (;;) {
      int done = 0;
      const int code = test_(&requests_[ticket].handle, &done, status);
      if (code != 0 || done) {
        release();
        check(code, "MPI_Test");
        return;
      }
      lock.unlock();
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(kLongestWaitPauseUs));
      lock.lock();
    }
  }

  void progress() override {
    if (progress_thread_mode_) return;  // the thread tests the requests
    std::lock_guard<std::mutex> lock(mutex_);
    if (in_flight_ > 0) test_requests_in_flight();
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes;) {
      const int piece = static_cast<int>(std::min<int64_t>(bytes - done, INT_MAX));
      check(bcast_(p + done, piece, byte_, root, comm_), "MPI_Bcast");
      done += piece;
    }
  }

  void all_gather(const void* in, int64_t bytes, void* out) override {
    if (bytes > INT_MAX)
      throw std::invalid_argument("[distributed] all_gather takes at most " + std::to_string(INT_MAX) +
                                  " bytes per rank, got " + std::to_string(bytes));
    const int n = static_cast<int>(bytes);
    check(allgather_(in, n, byte_, out, n, byte_, comm_), "MPI_Allgather");
  }

  void barrier() override { check(barrier_(comm_), "MPI_Barrier"); }

 private:
  // 8 bytes whichever the handle's width; a deque keeps slots in place while it grows.
  union RequestSlot {
    Handle handle;
    int64_t storage;
  };

  // Starts a non-blocking sum (MPI_Iallreduce or MPI_Ireduce_scatter_block, which take the same
  // arguments) in a free request slot; the slot's index is the ticket.
  template <class Start>
  int64_t start(Start function, const char* name, const float* in, float* out, int64_t count) {
    if (count > INT_MAX)
      throw std::invalid_argument("[distributed] " + std::string(name) + " takes at most " + std::to_string(INT_MAX) +
                                  " floats, got " + std::to_string(count));
    size_t slot;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto free_slot = std::find(in_use_.begin(), in_use_.end(), false);
      slot = static_cast<size_t>(free_slot - in_use_.begin());
      if (slot == requests_.size()) {
        requests_.emplace_back();
        in_use_.push_back(false);
      }
      std::memset(&requests_[slot], 0, sizeof(RequestSlot));
      check(function(in, out, static_cast<int>(count), float_, sum_, comm_, &requests_[slot].handle), name);
      in_use_[slot] = true;
      ++in_flight_;
      if (progress_thread_mode_ && progress_interval_us_ > 0 && !progress_.joinable())
        progress_ = std::thread([this] { progress_loop(); });
    }
    work_.notify_one();
    return static_cast<int64_t>(slot);
  }

  static Handle from(intptr_t value) {
    if constexpr (sizeof(Handle) == sizeof(intptr_t)) return reinterpret_cast<Handle>(value);
    else return static_cast<Handle>(value);
  }

  void check(int code, const char* function) const {
    if (code == 0) return;  // MPI_SUCCESS is 0 in every MPI
    char text[1024] = {};
    int length = 0;
    if (error_string_ == nullptr || error_string_(code, text, &length) != 0) length = 0;
    throw std::runtime_error("[distributed] " + std::string(function) + " failed on rank " + std::to_string(rank_) +
                             " of " + std::to_string(size_) + ": " +
                             (length > 0 ? std::string(text, static_cast<size_t>(length))
                                         : "MPI error " + std::to_string(code)));
  }

  // One MPI_Test of every request in flight, under mutex_. A request already complete is
  // MPI_REQUEST_NULL, which MPI reports complete without entering its progress engine. Each
  // test of an unfinished one runs the whole progress engine, yet stopping at the first
  // unfinished (D: 140 runs a step, not 540) cost more CPU, not less (2 ranks x 1 thread,
  // load 8-19: +1.5 ms a step in 6 of 7 alternating runs), presumably as the buckets then
  // finish later and the waits at the end of the step sleep and test longer.
  void test_requests_in_flight() {
    for (size_t i = 0; i < in_use_.size(); ++i) {
      if (!in_use_[i]) continue;
      int done = 0;
      alignas(8) unsigned char status[64] = {};
      if (test_(&requests_[i].handle, &done, status) != 0) return;  // the wait reports the error
    }
  }

  // Calls MPI_Test on every request in flight, every progress_interval_us_, until none is.
  void progress_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      if (in_flight_ == 0) {
        work_.wait(lock, [this] { return stopping_ || in_flight_ > 0; });
        continue;
      }
      test_requests_in_flight();
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(progress_interval_us_));
      lock.lock();
    }
  }

  // A sleeping wait's pauses double from the first to the longest: a short exchange costs
  // little more than a spinning wait, a long one at most this much after it completes.
  static constexpr int kFirstWaitPauseUs = 10;
  static constexpr int kLongestWaitPauseUs = 160;

  static bool sleeping_waits_from_environment() {
    const char* text = std::getenv("GOMETAL_MPI_WAIT");
    if (text == nullptr || text[0] == '\0' || std::strcmp(text, "poll") == 0) return true;
    if (std::strcmp(text, "block") == 0) return false;
    throw std::invalid_argument(std::string("[distributed] GOMETAL_MPI_WAIT must be poll or block, got '") + text +
                                "'");
  }

  static bool progress_thread_from_environment() {
    const char* text = std::getenv("GOMETAL_MPI_PROGRESS");
    if (text == nullptr || text[0] == '\0' || std::strcmp(text, "steps") == 0) return false;
    if (std::strcmp(text, "thread") == 0) return true;
    throw std::invalid_argument(std::string("[distributed] GOMETAL_MPI_PROGRESS must be steps or thread, got '") +
                                text + "'");
  }

  static int progress_interval_from_environment() {
    const char* text = std::getenv("GOMETAL_MPI_PROGRESS_US");
    if (text == nullptr || text[0] == '\0') return 50;
    return std::max(0, std::atoi(text));
  }

  void* library_ = nullptr;
  Handle comm_, float_, byte_, sum_;
  int rank_ = -1, size_ = 0;
  Allreduce allreduce_ = nullptr;
  Iallreduce iallreduce_ = nullptr;
  IreduceScatterBlock ireduce_scatter_block_ = nullptr;
  Wait wait_ = nullptr;
  Test test_ = nullptr;
  Bcast bcast_ = nullptr;
  Allgather allgather_ = nullptr;
  Barrier barrier_ = nullptr;
  ErrorString error_string_ = nullptr;
  std::mutex mutex_;
  std::deque<RequestSlot> requests_;
  std::vector<bool> in_use_;
  int in_flight_ = 0;
  bool stopping_ = false;
  const bool progress_thread_mode_ = progress_thread_from_environment();
  const int progress_interval_us_ = progress_interval_from_environment();
  const bool sleeping_waits_ = sleeping_waits_from_environment();
  std::condition_variable work_;
  std::thread progress_;
};

std::mutex current_mutex;
std::shared_ptr<Communicator> current;

}  // namespace

std::shared_ptr<Communicator> make_mpi_communicator(const MpiHandles& handles) {
  if (handles.handle_bytes == static_cast<int>(sizeof(void*)))
    return std::make_shared<MpiCommunicator<void*>>(handles);
  if (handles.handle_bytes == static_cast<int>(sizeof(int32_t)))
    return std::make_shared<MpiCommunicator<int32_t>>(handles);
  throw std::invalid_argument("[distributed] MPI handles of " + std::to_string(handles.handle_bytes) +
                              " bytes are not supported; expected 4 (MPICH) or 8 (Open MPI)");
}

std::shared_ptr<Communicator> current_communicator() {
  std::lock_guard<std::mutex> lock(current_mutex);
  return current;
}

void set_current_communicator(std::shared_ptr<Communicator> communicator) {
  std::lock_guard<std::mutex> lock(current_mutex);
  current = std::move(communicator);
}

}  // namespace gometal
