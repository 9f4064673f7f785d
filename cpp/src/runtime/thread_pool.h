// A fixed pool of worker threads; the caller takes part as thread 0.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace gometal {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int task, int thread);

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // Runs fn(ctx, task, thread) for task in [0, tasks); returns when all are done. A task
  // that throws ends the region (tasks not yet started are skipped) and run() rethrows its
  // exception on the calling thread once no task is running: thrown on a worker it would end
  // the process, and thrown past the caller's own task it would leave workers on its stack.
  void run(int tasks, TaskFn fn, void* ctx);

  // Lambda form; the callable is borrowed, never copied or allocated.
  template <class F>
  void parallel_for(int tasks, F&& f) {
    run(tasks, [](void* c, int task, int thread) { (*static_cast<std::remove_reference_t<F>*>(c))(task, thread); },
        static_cast<void*>(&f));
  }

 private:
  void worker_loop(int thread);
  // Claims and runs units of generation `gen` until none are left: the calling thread from
  // the front, workers from the back.
  void drain(uint32_t gen, int thread);

  int threads_;
  std::vector<std::thread> workers_;
  // High 32 bits: generation; then the first unclaimed unit (16 bits) and one past the last
  // (16 bits). The caller claims from the front and workers from the back, so with two
  // threads each keeps the same end of every region, and a kernel reads the rows that the
  // previous kernel wrote on the same thread (its own cache). A claim is one compare-exchange
  // on all three, so a worker that wakes late (after an idle gap, or preempted) claims nothing
  // once its generation is over: it never reads the next region's fn_, ctx_, tasks_ or units_
  // before its claim succeeded, and those stay fixed until the claimed unit is done.
  std::atomic<uint64_t> state_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_{0};
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int tasks_ = 0;
  int units_ = 0;  // tasks_, or fewer where tasks_ does not fit 16 bits: a unit is a run of tasks
  std::mutex mutex_;
  std::condition_variable wake_;
  std::mutex run_mutex_;  // one parallel region at a time (engines on several user threads)
  std::atomic<bool> failed_{false};  // a task of this region threw: skip the rest
  std::mutex error_mutex_;
  std::exception_ptr error_;  // the region's first exception, rethrown by run()
};

// The process-wide pool used by the CPU backend. A plan keeps the pool it was compiled for
// alive (shared ownership), so set_num_threads never frees a pool that a running step uses:
// it installs a new pool for plans compiled from then on, and the old one goes away with
// the last plan holding it.
std::shared_ptr<ThreadPool> cpu_pool();
void set_num_threads(int threads);
int get_num_threads();
int default_num_threads();
// Changes whenever set_num_threads replaces the pool: plans compiled before are stale.
uint64_t pool_generation();

}  // namespace gometal
