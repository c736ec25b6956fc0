// Machine peak probe: the FMA throughput and memory read bandwidth that `attnkit peak` reports and
// that every benchmark divides by (fraction_of_peak).
#pragma once

#include <string>

namespace attnkit {

struct Peak {
  double fma_gflops = 0.0;  // 2 flops per FMA lane, all threads, best pass
  double read_gbps = 0.0;   // streaming vector loads from a buffer far beyond L3, median pass
  int threads = 0;
  std::string target;  // the SIMD target Highway dispatched to, e.g. "AVX3"
};

// Runs for about one second. threads <= 0 means every core (OpenMP's default team size).
Peak measure_peak(int threads);

}  // namespace attnkit
