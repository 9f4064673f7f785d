// Philox4x32-10: a counter-based generator. Every draw is a pure function of
// (seed, stream, step, index), so results do not depend on threading or blocking.
#pragma once

#include <cstdint>

namespace gometal {

struct PhiloxKey {
  uint32_t k0, k1;
};

inline void philox4x32_10(uint32_t ctr[4], PhiloxKey key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t c0 = hi1 ^ ctr[1] ^ k0, c2 = hi0 ^ ctr[3] ^ k1;
    ctr[0] = c0;
    ctr[1] = lo1;
    ctr[2] = c2;
    ctr[3] = lo0;
    k0 += kW0;
    k1 += kW1;
  }
}

inline float philox_to_unit(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);  // [0, 1) with 24 bits
}

// Fills out[0..n) with U[0,1) for global element indices [first, first + n).
inline void philox_uniform(uint64_t seed, uint32_t stream, uint64_t step, int64_t first, int64_t n,
                           float* out) {
  const PhiloxKey key{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  int64_t i = 0;
  while (i < n) {
    const int64_t idx = first + i;
    const uint64_t quad = static_cast<uint64_t>(idx) >> 2;
    uint32_t ctr[4] = {static_cast<uint32_t>(quad), stream ^ static_cast<uint32_t>(quad >> 32),
                       static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32)};
    philox4x32_10(ctr, key);
    for (int lane = static_cast<int>(idx & 3); lane < 4 && i < n; ++lane, ++i) out[i] = philox_to_unit(ctr[lane]);
  }
}

}  // namespace gometal
