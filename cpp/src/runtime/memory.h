// Engine-owned memory. Every allocation the engine makes goes through here and is
// counted, so a test can hold steady-state training to zero allocations.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gometal {

inline constexpr size_t kAlignment = 64;

uint64_t engine_allocation_count();

// A zero-initialised, 64-byte aligned block of floats; from 2 MB up, on whole 2 MB pages
// advised as huge pages (GOMETAL_HUGE_PAGES=0: 4 KB pages).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_) {
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  float* data() const { return static_cast<float*>(data_); }
  char* raw() const { return static_cast<char*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

inline size_t align_up(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace gometal
