// Exact merge of two partial attention results over disjoint key sets, by log-sum-exp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/error.h"

namespace attnkit {

void merge(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
           const TensorView& lse_b, const MutableTensorView& out, const MutableTensorView& lse) {
  for (int i = 0; i < 4; ++i) {
    check(out_a.shape[i] == out.shape[i] && out_b.shape[i] == out.shape[i], "out",
          "merge operands must share one shape, got " + out_a.describe() + ", " + out_b.describe() +
              " and " + out.describe());
  }
  check(out_a.dtype == DType::kF32 && out_b.dtype == DType::kF32 && out.dtype == DType::kF32, "out",
        "merge works on f32 outputs");
  check(!lse_a.empty() && !lse_b.empty() && !lse.empty(), "lse",
        "merge needs the LSE of both operands and of the result");
  for (const TensorView& l : {lse_a, lse_b, static_cast<TensorView>(lse)}) {
    check(l.dtype == DType::kF32 && l.shape[0] == out.shape[0] && l.shape[1] == out.shape[1] &&
              l.shape[2] == out.shape[2] && l.shape[3] == 1,
          "lse",
          "must be f32 [B,H,N,1] like the outputs " + out.describe() + ", got " + l.describe());
  }
  const int64_t heads = out.shape[1], n = out.shape[2], dim_v = out.shape[3];
  const int64_t rows = out.shape[0] * heads * n;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / (heads * n), h = row / n % heads, i = row % n;
    const float la = *lse_a.row<float>(b, h, i), lb = *lse_b.row<float>(b, h, i);
    const float top = std::max(la, lb);
    float wa = 0.0f, wb = 0.0f, merged = -std::numeric_limits<float>::infinity();
    if (top != -std::numeric_limits<float>::infinity()) {  // at least one side saw a key
      const float sa = std::exp(la - top), sb = std::exp(lb - top);
      merged = top + std::log(sa + sb);
      wa = sa / (sa + sb);
      wb = sb / (sa + sb);
    }
    const float* a = out_a.row<float>(b, h, i);
    const float* bb = out_b.row<float>(b, h, i);
    float* o = out.row<float>(b, h, i);
    for (int64_t d = 0; d < dim_v; ++d) o[d] = wa * a[d] + wb * bb[d];
    *lse.row<float>(b, h, i) = merged;
  }
}

}  // namespace attnkit
