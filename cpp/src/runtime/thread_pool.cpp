#include "runtime/thread_pool.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GOMETAL_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define GOMETAL_PAUSE() asm volatile("yield")
#else
#define GOMETAL_PAUSE() ((void)0)
#endif

namespace gometal {
namespace {

// Workers spin a while for the next op before sleeping: ops in a step come microseconds
// apart, and a futex wake-up costs more than that. Yielding in between keeps a loaded
// machine usable.
constexpr int kPauseRounds = 1 << 12;
constexpr int kYieldRounds = 1 << 10;

std::atomic<uint64_t> g_pool_generation{0};

// The current pool, replaced (never freed in place) by set_num_threads under the mutex.
std::mutex& pool_slot_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::shared_ptr<ThreadPool>& pool_slot() {
  static std::shared_ptr<ThreadPool> pool;
  return pool;
}

constexpr int kMostUnits = 0xffff;  // the front and back of a region are 16 bits each
constexpr uint64_t kFrontOne = uint64_t{1} << 16;

uint32_t generation_of(uint64_t state) { return static_cast<uint32_t>(state >> 32); }
int front_of(uint64_t state) { return static_cast<int>((state >> 16) & 0xffffu); }
int back_of(uint64_t state) { return static_cast<int>(state & 0xffffu); }

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    state_.fetch_add(uint64_t{1} << 32);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::drain(uint32_t gen, int thread) {
  const bool from_front = thread == 0;
  uint64_t cur = state_.load(std::memory_order_acquire);
  for (;;) {
    if (generation_of(cur) != gen) return;
    const int front = front_of(cur), back = back_of(cur);
    if (front >= back) return;
    const uint64_t claimed = from_front ? cur + kFrontOne : cur - 1;
    if (!state_.compare_exchange_weak(cur, claimed, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // Only now, with a unit of `gen` claimed (so its region cannot end), are the region's
    // fields read: before the claim they may already belong to the next region.
    const int64_t unit = from_front ? front : back - 1;
    const int64_t first = unit * tasks_ / units_, last = (unit + 1) * tasks_ / units_;
    if (!failed_.load(std::memory_order_relaxed)) {
      try {
        for (int64_t task = first; task < last; ++task) fn_(ctx_, static_cast<int>(task), thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
    done_.fetch_add(1, std::memory_order_acq_rel);  // publishes error_ to run()
    cur = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run(int tasks, TaskFn fn, void* ctx) {
  if (tasks <= 0) return;
  if (tasks == 1 || workers_.empty()) {
    for (int t = 0; t < tasks; ++t) fn(ctx, t, 0);
    return;
  }
  std::lock_guard<std::mutex> region(run_mutex_);
  fn_ = fn;
  ctx_ = ctx;
  tasks_ = tasks;
  units_ = std::min(tasks, kMostUnits);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = generation_of(state_.load(std::memory_order_relaxed)) + 1;
  // seq_cst: publishes fn_, ctx_, tasks_ and units_ to claimers, and pairs with the sleeper
  // count below
  state_.store((static_cast<uint64_t>(gen) << 32) | static_cast<uint64_t>(units_));
  if (sleeping_.load() > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }
  drain(gen, 0);
  // Only tasks already claimed by workers remain; idle workers are not waited for.
  for (int spins = 0; done_.load(std::memory_order_acquire) < units_; ++spins) {
    if (spins < kPauseRounds) GOMETAL_PAUSE();
    else std::this_thread::yield();
  }
  if (failed_.load(std::memory_order_relaxed)) {
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(error_mutex_);
      error = std::move(error_);
      error_ = nullptr;
    }
    failed_.store(false, std::memory_order_relaxed);
    std::rethrow_exception(error);
  }
}

void ThreadPool::worker_loop(int thread) {
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    uint32_t gen;
    while ((gen = generation_of(state_.load(std::memory_order_acquire))) == seen) {
      ++spins;
      if (spins < kPauseRounds) {
        GOMETAL_PAUSE();
      } else if (spins < kPauseRounds + kYieldRounds) {
        std::this_thread::yield();
      } else {
        std::unique_lock<std::mutex> lock(mutex_);
        sleeping_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_of(state_.load()) != seen; });
        sleeping_.fetch_sub(1);
        spins = 0;
      }
    }
    seen = gen;
    if (stop_.load()) return;
    drain(gen, thread);
  }
}

int default_num_threads() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::shared_ptr<ThreadPool> cpu_pool() {
  std::lock_guard<std::mutex> lock(pool_slot_mutex());
  auto& slot = pool_slot();
  if (!slot) slot = std::make_shared<ThreadPool>(default_num_threads());
  return slot;
}

void set_num_threads(int threads) {
  if (threads < 1)
    throw std::invalid_argument("[set_num_threads] threads must be >= 1, got " + std::to_string(threads));
  std::shared_ptr<ThreadPool> previous;
  {
    std::lock_guard<std::mutex> lock(pool_slot_mutex());
    auto& slot = pool_slot();
    if (slot && slot->size() == threads) return;
    previous = std::move(slot);
    slot = std::make_shared<ThreadPool>(threads);
    g_pool_generation.fetch_add(1);
  }
  // `previous` is released here, outside the lock: its threads stop now if no plan holds it,
  // or when the last plan compiled for it is dropped.
}

uint64_t pool_generation() { return g_pool_generation.load(); }

int get_num_threads() { return cpu_pool()->size(); }

}  // namespace gometal
