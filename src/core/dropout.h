// Attention dropout's keep mask: a pure function of (seed, b, h, i, j), so the forward, the
// backward and the reference draw the same mask without storing it (memory stays O(N * D)).
//
//   row_key(b, h, i) = splitmix64 chain over (seed, b, h, i), top 32 bits
//   bits(b, h, i, j) = fmix32(row_key ^ (j * 0x9E3779B9))          (murmur3's finaliser)
//   keep             = (bits >> 8) >= threshold,  threshold = round(p * 2^24)
// so P(drop) = threshold / 2^24 (p to within 3e-8). Kept probabilities are scaled by 1 / (1 - p)
// (torch's convention). b, h, i, j are the indices the kernel is called with (absolute query head
// and positions). The SIMD kernels evaluate the same integer arithmetic per lane.
#pragma once

#include <cmath>
#include <cstdint>

namespace attnkit {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  return x ^ (x >> 16);
}

inline constexpr uint32_t kDropoutKeyStep = 0x9E3779B9u;

inline uint32_t dropout_row_key(uint64_t seed, int64_t b, int64_t h, int64_t i) {
  uint64_t x = splitmix64(seed);
  x = splitmix64(x ^ static_cast<uint64_t>(b));
  x = splitmix64(x ^ static_cast<uint64_t>(h));
  x = splitmix64(x ^ static_cast<uint64_t>(i));
  return static_cast<uint32_t>(x >> 32);
}

inline int32_t dropout_threshold(float p) {
  return static_cast<int32_t>(std::lround(static_cast<double>(p) * 16777216.0));
}

inline bool dropout_keeps(uint32_t row_key, int64_t j, int32_t threshold) {
  const uint32_t bits = fmix32(row_key ^ (static_cast<uint32_t>(j) * kDropoutKeyStep));
  return static_cast<int32_t>(bits >> 8) >= threshold;
}

}  // namespace attnkit
