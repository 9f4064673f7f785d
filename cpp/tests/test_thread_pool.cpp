// Stress test of the thread pool: bursts of parallel regions with idle gaps between them, so
// workers fall asleep and wake late in the middle of later regions (as between a benchmark's
// windows or a server's requests). Every region must run each of its tasks exactly once, and
// none may still be running when run() returns: a late worker that claimed a task of the next
// region against the previous region's count broke both, and crashed kernels whose lambdas
// had already gone out of scope.
//
// Usage: test_thread_pool [seconds per thread count] (default 4; ThreadSanitizer builds
// report the data races directly).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/thread_pool.h"

namespace {

struct StressResult {
  long regions = 0;
  long wrong_sums = 0;      // a task run twice, never, or with another region's index
  long returned_early = 0;  // run() returned while a task of its region was still running
};

StressResult stress(int threads, double seconds) {
  gometal::ThreadPool pool(threads);
  std::atomic<long> task_sum{0};
  std::atomic<int> running{0};
  std::mt19937 rng(1234u + static_cast<unsigned>(threads));
  StressResult result;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    // Back-to-back tiny regions whose task counts alternate (small, then larger): a count
    // read from the wrong region is what a late worker misused.
    for (int b = 0; b < 1000; ++b, ++result.regions) {
      const int tasks = (result.regions & 1) ? threads : 4 * threads + static_cast<int>(rng() % 5);
      task_sum.store(0, std::memory_order_relaxed);
      pool.parallel_for(tasks, [&](int task, int) {
        running.fetch_add(1, std::memory_order_relaxed);
        task_sum.fetch_add(task + 1, std::memory_order_relaxed);
        running.fetch_sub(1, std::memory_order_release);
      });
      if (running.load(std::memory_order_acquire) != 0) ++result.returned_early;
      if (task_sum.load() != static_cast<long>(tasks) * (tasks + 1) / 2) ++result.wrong_sums;
    }
    // Idle gaps, often long enough for the workers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1000));
  }
  return result;
}

// A task that throws, on a worker or on the calling thread, makes run() rethrow its
// exception once no task is running, and the pool serves the next region in full.
bool exceptions_reach_the_caller(int threads) {
  gometal::ThreadPool pool(threads);
  for (int throwing : {5, -1}) {  // one task throws; every task throws
    for (int round = 0; round < 200; ++round) {
      std::atomic<int> running{0};
      std::string caught;
      try {
        pool.parallel_for(16, [&](int task, int) {
          running.fetch_add(1);
          std::this_thread::yield();
          running.fetch_sub(1);
          if (throwing < 0 || task == throwing) throw std::runtime_error("task " + std::to_string(task));
        });
      } catch (const std::runtime_error& e) {
        caught = e.what();
      }
      if (caught.rfind("task ", 0) != 0 || (throwing >= 0 && caught != "task 5") || running.load() != 0) return false;
      std::atomic<int> sum{0};
      pool.parallel_for(16, [&](int task, int) { sum.fetch_add(task + 1); });
      if (sum.load() != 16 * 17 / 2) return false;
    }
  }
  return true;
}

// With two threads the caller's tasks are a prefix of the region and the worker's a suffix,
// so each keeps the same rows from one kernel to the next; every task runs exactly once.
bool two_threads_keep_their_ends() {
  gometal::ThreadPool pool(2);
  for (int round = 0; round < 2000; ++round) {
    const int tasks = 2 + round % 37;
    std::vector<int> ran_on(static_cast<size_t>(tasks), -1);
    std::atomic<int> runs{0};
    pool.parallel_for(tasks, [&](int task, int thread) {
      ran_on[static_cast<size_t>(task)] = thread;
      runs.fetch_add(1);
    });
    if (runs.load() != tasks) return false;
    int t = 0;
    while (t < tasks && ran_on[static_cast<size_t>(t)] == 0) ++t;
    while (t < tasks && ran_on[static_cast<size_t>(t)] == 1) ++t;
    if (t != tasks) return false;
  }
  return true;
}

// A region of more tasks than the 16-bit claim holds runs them in runs of consecutive tasks,
// each exactly once.
bool many_tasks_run_once(int threads) {
  gometal::ThreadPool pool(threads);
  for (int tasks : {65535, 65536, 200003}) {
    std::vector<std::atomic<int>> runs(static_cast<size_t>(tasks));
    pool.parallel_for(tasks, [&](int task, int) { runs[static_cast<size_t>(task)].fetch_add(1); });
    for (auto& r : runs)
      if (r.load() != 1) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 4.0;
  int failures = 0;
  // More threads than cores too: preempted workers are the late ones.
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  for (int threads : {2, hardware + 1}) {
    if (threads < 2) continue;
    const StressResult r = stress(threads, seconds);
    const bool ok = r.wrong_sums == 0 && r.returned_early == 0;
    std::printf("%s %d threads: %ld regions, %ld without each task run once, %ld returned early\n",
                ok ? "PASS" : "FAIL", threads, r.regions, r.wrong_sums, r.returned_early);
    if (!ok) ++failures;
  }
  for (int threads : {2, 3}) {
    const bool ok = exceptions_reach_the_caller(threads);
    std::printf("%s %d threads: a task's exception is rethrown by run() and the pool runs on\n", ok ? "PASS" : "FAIL",
                threads);
    if (!ok) ++failures;
  }
  {
    const bool ok = two_threads_keep_their_ends();
    std::printf("%s 2 threads: the caller runs a prefix of each region and the worker the rest\n", ok ? "PASS" : "FAIL");
    if (!ok) ++failures;
  }
  for (int threads : {2, 3}) {
    const bool ok = many_tasks_run_once(threads);
    std::printf("%s %d threads: regions of 65535 to 200003 tasks run each task once\n", ok ? "PASS" : "FAIL", threads);
    if (!ok) ++failures;
  }
  return failures == 0 ? 0 : 1;
}
