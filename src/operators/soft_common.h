// What SOFT's fast operator and its oracle share (internal): argument checks, the pooled
// landmarks' windows, the scale, and the exact inverse.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/soft.h"

namespace attnkit {

struct SoftShape {
  int64_t batch, heads, n, dim, dim_v, landmarks;
};

// Throws Error naming the argument (see soft.h); the backward form also checks dout, dq, dv and
// dlandmarks.
SoftShape validate_soft(const SoftArgs& args);
SoftShape validate_soft(const SoftBackwardArgs& args);

// args.scale, or D^(-1/4) when it is 0.
double soft_scale(const SoftArgs& args);

// Pooled landmarks: token t is averaged into landmark window[t] (-1: in no window, past the
// grid's or sequence's last full window); every landmark averages `size` tokens. With given
// landmarks every entry is -1.
struct LandmarkWindows {
  std::vector<int32_t> window;
  int64_t size = 0;
};
LandmarkWindows landmark_windows(const SoftArgs& args, int64_t n);

// The official Newton-Schulz iteration on K2 [m, m] (row-major) in f32 on cpu::gemm: x receives
// X after `iterations` steps (defined in soft.cc).
void newton_inverse(const float* k2, int64_t m, int iterations, float* x);

// The inverse of a symmetric positive definite m x m matrix (row-major) by Cholesky, in double;
// false when the matrix is not positive definite (to rounding).
bool spd_inverse(const std::vector<double>& a, int64_t m, std::vector<double>& inverse);

}  // namespace attnkit
