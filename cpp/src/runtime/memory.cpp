#include "runtime/memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

namespace gometal {
namespace {
std::atomic<uint64_t> g_allocations{0};
}

uint64_t engine_allocation_count() { return g_allocations.load(std::memory_order_relaxed); }

AlignedBuffer::AlignedBuffer(size_t bytes) : bytes_(align_up(bytes == 0 ? kAlignment : bytes)) {
  data_ = std::aligned_alloc(kAlignment, bytes_);
  if (!data_) throw std::bad_alloc();
  std::memset(data_, 0, bytes_);
  g_allocations.fetch_add(1, std::memory_order_relaxed);
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = o.data_;
    bytes_ = o.bytes_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

}  // namespace gometal
