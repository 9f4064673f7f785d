#include "runtime/memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gometal {
namespace {
std::atomic<uint64_t> g_allocations{0};

constexpr size_t kHugePage = size_t{2} << 20;

// GOMETAL_HUGE_PAGES=0 keeps 4 KB pages (for comparisons); read once.
bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* value = std::getenv("GOMETAL_HUGE_PAGES");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return wanted;
}

void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(data, bytes, MADV_HUGEPAGE);  // a hint: without transparent huge pages it does nothing
#else
  (void)data;
  (void)bytes;
#endif
}
}  // namespace

uint64_t engine_allocation_count() { return g_allocations.load(std::memory_order_relaxed); }

AlignedBuffer::AlignedBuffer(size_t bytes) : bytes_(align_up(bytes == 0 ? kAlignment : bytes)) {
  if (bytes_ >= kHugePage && huge_pages_wanted()) {
    // Whole 2 MB pages for large buffers (a step's arena, big weights): the kernels' strided
    // rows (a sequence's steps, a product's panels) then miss the TLB far less often. The
    // size stays the one asked for (callers compare it); the block ends on a page boundary.
    const size_t pages = (bytes_ + kHugePage - 1) / kHugePage * kHugePage;
    data_ = std::aligned_alloc(kHugePage, pages);
    if (data_) advise_huge_pages(data_, pages);
  } else {
    data_ = std::aligned_alloc(kAlignment, bytes_);
  }
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
