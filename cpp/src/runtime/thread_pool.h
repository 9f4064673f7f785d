// A fixed pool of worker threads; the caller takes part as thread 0.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
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

  // Runs fn(ctx, task, thread) for task in [0, tasks); returns when all are done.
  void run(int tasks, TaskFn fn, void* ctx);

  // Lambda form; the callable is borrowed, never copied or allocated.
  template <class F>
  void parallel_for(int tasks, F&& f) {
    run(tasks, [](void* c, int task, int thread) { (*static_cast<std::remove_reference_t<F>*>(c))(task, thread); },
        static_cast<void*>(&f));
  }

 private:
  void worker_loop(int thread);
  void drain(int thread);

  int threads_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_task_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_{0};
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int tasks_ = 0;
  std::mutex mutex_;
  std::condition_variable wake_;
};

// The process-wide pool used by the CPU backend.
ThreadPool& cpu_pool();
void set_num_threads(int threads);
int get_num_threads();
int default_num_threads();
// Changes whenever set_num_threads replaces the pool: plans compiled before are stale.
uint64_t pool_generation();

}  // namespace gometal
