// Mean-pooled keys ("semantic kernels" of InfLLM-V2): window m covers rows
// [m * stride, m * stride + kernel) and only full windows are kept, so pooled key m summarises
// exactly `kernel` raw keys and is visible to a causal query only once all of them are.
// Overlapping windows (kernel > stride) are summed from a running window sum: O(n * dim).
#include <algorithm>
#include <vector>

#include "kernels/cpu/planner_ops.h"

namespace attnkit::cpu {

int64_t pooled_count(int64_t n, int64_t kernel, int64_t stride) {
  return n < kernel ? 0 : (n - kernel) / stride + 1;
}

int64_t pooled_visible(int64_t last, int64_t kernel, int64_t stride, int64_t pooled) {
  if (last < kernel - 1) return 0;
  return std::min(pooled, (last - kernel + 1) / stride + 1);
}

void mean_pool(const float* x, int64_t n, int64_t dim, int64_t ldx, int64_t kernel, int64_t stride,
               float* out) {
  const int64_t count = pooled_count(n, kernel, stride);
  if (count == 0) return;  // fewer rows than one window (the segments below would read past x)
  const float inv = 1.0f / static_cast<float>(kernel);
  // Windows with kernel a multiple of stride (the defaults 32/16 and 128/64) are sums of
  // stride-sized segments; sum each segment once and add kernel/stride of them per window.
  if (kernel % stride == 0) {
    const int64_t per = kernel / stride;
    const int64_t segments = count + per - 1;
    std::vector<float> seg(segments * dim, 0.0f);
    for (int64_t s = 0; s < segments; ++s) {
      float* dst = seg.data() + s * dim;
      for (int64_t t = s * stride; t < (s + 1) * stride; ++t) {
        const float* row = x + t * ldx;
        for (int64_t c = 0; c < dim; ++c) dst[c] += row[c];
      }
    }
    for (int64_t m = 0; m < count; ++m) {
      float* dst = out + m * dim;
      std::fill(dst, dst + dim, 0.0f);
      for (int64_t p = 0; p < per; ++p) {
        const float* src = seg.data() + (m + p) * dim;
        for (int64_t c = 0; c < dim; ++c) dst[c] += src[c];
      }
      for (int64_t c = 0; c < dim; ++c) dst[c] *= inv;
    }
    return;
  }
  for (int64_t m = 0; m < count; ++m) {
    float* dst = out + m * dim;
    std::fill(dst, dst + dim, 0.0f);
    for (int64_t t = m * stride; t < m * stride + kernel; ++t) {
      const float* row = x + t * ldx;
      for (int64_t c = 0; c < dim; ++c) dst[c] += row[c];
    }
    for (int64_t c = 0; c < dim; ++c) dst[c] *= inv;
  }
}

}  // namespace attnkit::cpu
