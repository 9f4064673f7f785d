// Engine buffers: zero-initialised and 64-byte aligned, their size the one asked for rounded
// to 64 bytes; those of 2 MB and more start on a 2 MB page boundary (advised as huge pages)
// unless GOMETAL_HUGE_PAGES=0. Each allocation is counted.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/memory.h"

namespace {
int g_failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

bool all_zero(const gometal::AlignedBuffer& b) {
  for (size_t i = 0; i < b.bytes(); ++i)
    if (b.raw()[i] != 0) return false;
  return true;
}

uintptr_t address(const gometal::AlignedBuffer& b) { return reinterpret_cast<uintptr_t>(b.raw()); }
}  // namespace

int main() {
  constexpr size_t kHuge = size_t{2} << 20;
  const char* setting = std::getenv("GOMETAL_HUGE_PAGES");
  const bool huge = setting == nullptr || std::strcmp(setting, "0") != 0;
  const uint64_t before = gometal::engine_allocation_count();

  gometal::AlignedBuffer small(1000);
  check(small.bytes() == 1024 && address(small) % gometal::kAlignment == 0 && all_zero(small),
        "a small buffer: 64-byte multiple, aligned, zero");

  gometal::AlignedBuffer large(3 * (size_t{1} << 20) + 5);
  const size_t expected = gometal::align_up(3 * (size_t{1} << 20) + 5);
  check(large.bytes() == expected, "a 3 MB buffer takes " + std::to_string(expected) + " bytes, got " +
                                       std::to_string(large.bytes()));
  check(address(large) % (huge ? kHuge : gometal::kAlignment) == 0, "a 3 MB buffer's alignment");
  check(all_zero(large), "a 3 MB buffer is zero");
  large.data()[large.bytes() / sizeof(float) - 1] = 1.0f;  // its last float is writable

  gometal::AlignedBuffer moved(std::move(large));
  check(moved.bytes() == expected && large.bytes() == 0 && large.raw() == nullptr, "a move hands the block over");
  check(gometal::engine_allocation_count() - before == 2, "two allocations counted");
  return g_failures == 0 ? 0 : 1;
}
