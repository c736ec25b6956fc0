// Random inputs for benchmarks and tests: standard normal tensors, reproducible from a seed.
//
// Element i is a pure function of (seed, i) (a counter-based hash feeding Box-Muller), so the
// result does not depend on the thread count, the standard library or the platform.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit {

// A C-order tensor of `shape` whose elements are N(0, stddev^2), rounded to `dtype`.
Tensor random_normal(const std::vector<int64_t>& shape, DType dtype, uint64_t seed,
                     float stddev = 1.0f);

}  // namespace attnkit
