#include "operators/soft_common.h"

#include <cmath>
#include <string>

#include "attnkit/error.h"
#include "core/memory.h"
#include "core/view_checks.h"

namespace attnkit {

int64_t soft_landmark_count(const SoftArgs& a) {
  if (!a.landmarks.empty()) return a.landmarks.shape[2];
  if (a.stride <= 0) return 0;
  if (a.grid_height > 0) return (a.grid_height / a.stride) * (a.grid_width / a.stride);
  return a.q.shape[2] / a.stride;
}

namespace {

// Everything but the outputs: what the forward and the backward share.
SoftShape validate_inputs(const SoftArgs& a) {
  check_nonempty(a.q, "q");
  check_nonempty(a.v, "v");
  SoftShape s{a.q.shape[0], a.q.shape[1], a.q.shape[2], a.q.shape[3], a.v.shape[3], 0};
  check(a.v.dtype == a.q.dtype, "v",
        std::string("q and v must share one dtype, got ") + dtype_name(a.q.dtype) + " and " +
            dtype_name(a.v.dtype));
  check_shaped(a.v, {s.batch, s.heads, s.n, s.dim_v}, "v");
  check(s.dim <= 1024 && s.dim_v <= 1024, "q",
        "head dims above 1024 are not supported: q " + a.q.describe() + ", v " + a.v.describe());
  check(unit_last_stride(a.q), "q", "the head dim must be contiguous (stride 1)");
  check(unit_last_stride(a.v), "v", "the head dim must be contiguous (stride 1)");
  if (!a.landmarks.empty()) {
    check_nonempty(a.landmarks, "landmarks");
    check(a.landmarks.shape[0] == s.batch && a.landmarks.shape[1] == s.heads &&
              a.landmarks.shape[3] == s.dim,
          "landmarks",
          "must be [B, H, m, D] = [" + std::to_string(s.batch) + ", " + std::to_string(s.heads) +
              ", m, " + std::to_string(s.dim) + "], got " + a.landmarks.describe());
    check(unit_last_stride(a.landmarks), "landmarks", "the head dim must be contiguous (stride 1)");
  } else {
    check(a.stride >= 1, "stride",
          "pooled landmarks need a stride >= 1 (or give landmarks), got " +
              std::to_string(a.stride));
    check(a.grid_height >= 0 && a.grid_width >= 0, "grid_height",
          "must be >= 0, got " + std::to_string(a.grid_height) + " x " +
              std::to_string(a.grid_width));
    check((a.grid_height == 0) == (a.grid_width == 0), "grid_width",
          "give both grid_height and grid_width, or neither (a 1-D sequence)");
    if (a.grid_height > 0)
      check(a.grid_height * a.grid_width == s.n, "grid_height",
            "grid " + std::to_string(a.grid_height) + " x " + std::to_string(a.grid_width) +
                " does not hold the " + std::to_string(s.n) + " tokens");
  }
  s.landmarks = soft_landmark_count(a);
  check(s.landmarks >= 1, "stride",
        "leaves no landmark: stride " + std::to_string(a.stride) + " is larger than the " +
            (a.grid_height > 0 ? "grid" : "sequence"));
  check(s.landmarks <= 4096, "landmarks",
        "at most 4096 landmarks (m x m matrices), got " + std::to_string(s.landmarks));
  check(std::isfinite(a.scale) && a.scale >= 0.0f, "scale",
        "must be finite and >= 0 (0: D^(-1/4)), got " + std::to_string(a.scale));
  check(a.newton_iterations >= 0 && a.newton_iterations <= 100, "newton_iterations",
        "must be in [0, 100], got " + std::to_string(a.newton_iterations));
  check(a.threads >= 0 && a.threads <= 1024, "threads",
        "must be in [0, 1024], got " + std::to_string(a.threads));
  // Per thread: Q' and dQ', a chunk's panels, about ten m x m matrices.
  check_memory(2.0 * 4.0 * double(s.n) * double(2 * s.dim) +
                   10.0 * 4.0 * double(s.landmarks) * double(s.landmarks + s.dim + s.dim_v),
               "q", "SOFT's working memory");
  return s;
}

}  // namespace

SoftShape validate_soft(const SoftArgs& a) {
  const SoftShape s = validate_inputs(a);
  check_f32_output(a.out, {s.batch, s.heads, s.n, s.dim_v}, "out");
  return s;
}

SoftShape validate_soft(const SoftBackwardArgs& g) {
  const SoftShape s = validate_inputs(g.forward);
  check(g.dout.data != nullptr, "dout", "is missing (null data)");
  check_shaped(g.dout, {s.batch, s.heads, s.n, s.dim_v}, "dout");
  check(unit_last_stride(g.dout), "dout", "the head dim must be contiguous (stride 1)");
  check_f32_output(g.dq, {s.batch, s.heads, s.n, s.dim}, "dq");
  check_f32_output(g.dv, {s.batch, s.heads, s.n, s.dim_v}, "dv");
  if (!g.forward.landmarks.empty()) {
    check_f32_output(g.dlandmarks, {s.batch, s.heads, s.landmarks, s.dim}, "dlandmarks");
  } else {
    check(g.dlandmarks.empty(), "dlandmarks", "pooled landmarks have no gradient of their own");
  }
  return s;
}

double soft_scale(const SoftArgs& a) {
  return a.scale != 0.0f ? double(a.scale) : std::pow(double(a.q.shape[3]), -0.25);
}

LandmarkWindows landmark_windows(const SoftArgs& a, int64_t n) {
  LandmarkWindows w;
  w.window.assign(n, -1);
  if (!a.landmarks.empty()) return w;  // given: no token is pooled
  const int64_t sr = a.stride;
  if (a.grid_height > 0) {
    const int64_t rows = a.grid_height / sr, cols = a.grid_width / sr;
    for (int64_t y = 0; y < rows * sr; ++y)
      for (int64_t x = 0; x < cols * sr; ++x)
        w.window[y * a.grid_width + x] = static_cast<int32_t>((y / sr) * cols + x / sr);
    w.size = sr * sr;
  } else {
    for (int64_t t = 0; t < (n / sr) * sr; ++t) w.window[t] = static_cast<int32_t>(t / sr);
    w.size = sr;
  }
  return w;
}

bool spd_inverse(const std::vector<double>& a, int64_t m, std::vector<double>& inverse) {
  // A = C C^T (C lower triangular), then A^-1 column by column from C y = e, C^T x = y.
  std::vector<double> c(m * m, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double sum = a[i * m + j];
      for (int64_t p = 0; p < j; ++p) sum -= c[i * m + p] * c[j * m + p];
      if (i == j) {
        if (!(sum > 1e-300)) return false;
        c[i * m + i] = std::sqrt(sum);
      } else {
        c[i * m + j] = sum / c[j * m + j];
      }
    }
  inverse.assign(m * m, 0.0);
  std::vector<double> y(m);
  for (int64_t col = 0; col < m; ++col) {
    for (int64_t i = 0; i < m; ++i) {
      double sum = i == col ? 1.0 : 0.0;
      for (int64_t p = 0; p < i; ++p) sum -= c[i * m + p] * y[p];
      y[i] = sum / c[i * m + i];
    }
    for (int64_t i = m - 1; i >= 0; --i) {
      double sum = y[i];
      for (int64_t p = i + 1; p < m; ++p) sum -= c[p * m + i] * inverse[p * m + col];
      inverse[i * m + col] = sum / c[i * m + i];
    }
  }
  return true;
}

}  // namespace attnkit
