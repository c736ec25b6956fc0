#include "eval/fidelity.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "attnkit/error.h"

namespace attnkit {

Fidelity measure_fidelity(const TensorView& out, const TensorView& lse, const TensorView& exact_out,
                          const TensorView& exact_lse) {
  for (int d = 0; d < 4; ++d)
    check(out.shape[d] == exact_out.shape[d], "out",
          "shape " + out.describe() + " differs from the exact result's " + exact_out.describe());
  Fidelity f;
  double diff2 = 0.0, ref2 = 0.0;
  for (int64_t b = 0; b < out.shape[0]; ++b)
    for (int64_t h = 0; h < out.shape[1]; ++h)
      for (int64_t i = 0; i < out.shape[2]; ++i) {
        const float* o = out.row<float>(b, h, i);
        const float* e = exact_out.row<float>(b, h, i);
        for (int64_t d = 0; d < out.shape[3]; ++d) {
          const double delta = double(o[d * out.stride[3]]) - double(e[d * exact_out.stride[3]]);
          diff2 += delta * delta;
          ref2 += double(e[d * exact_out.stride[3]]) * e[d * exact_out.stride[3]];
          f.max_abs_error = std::max(f.max_abs_error, std::fabs(delta));
        }
      }
  f.rel_l2_error = ref2 > 0.0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  if (lse.empty() || exact_lse.empty()) return f;
  double sum = 0.0;
  for (int64_t b = 0; b < out.shape[0]; ++b)
    for (int64_t h = 0; h < out.shape[1]; ++h)
      for (int64_t i = 0; i < out.shape[2]; ++i) {
        const double want = *exact_lse.row<float>(b, h, i), got = *lse.row<float>(b, h, i);
        if (std::isinf(want) && want < 0) continue;
        const double recall = std::isinf(got) && got < 0 ? 0.0 : std::exp(got - want);
        sum += recall;
        f.recall_min = f.rows == 0 ? recall : std::min(f.recall_min, recall);
        ++f.rows;
      }
  f.recall_mean = f.rows > 0 ? sum / double(f.rows) : 1.0;
  return f;
}

}  // namespace attnkit
