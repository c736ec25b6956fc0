// Wall-clock timing for benchmarks: the median of repeated runs after a warm-up.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace attnkit {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

// Calls `body()` `warmup` times untimed, then `reps` times; returns the median seconds per call.
template <typename Body>
double median_seconds(int reps, Body&& body, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) body();
  std::vector<double> seconds;
  seconds.reserve(reps);
  for (int i = 0; i < reps; ++i) {
    const double start = now_seconds();
    body();
    seconds.push_back(now_seconds() - start);
  }
  return median(std::move(seconds));
}

}  // namespace attnkit
