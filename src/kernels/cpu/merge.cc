// Exact merge of two partial attention results over disjoint key sets, by log-sum-exp, and its
// backward.
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

namespace {

void check_like(const TensorLayout& t, const TensorLayout& like, const char* name) {
  bool same = t.dtype == DType::kF32;
  for (int i = 0; i < 4; ++i) same = same && t.shape[i] == like.shape[i];
  check(same, name, "must be f32 shaped like " + like.describe() + ", got " + t.describe());
}

}  // namespace

void merge_backward(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
                    const TensorView& lse_b, const TensorView& out, const TensorView& lse,
                    const TensorView& dout, const TensorView& dlse, const MergeGrads& grads) {
  check(!out.empty() && !lse.empty(), "out", "merge_backward needs the merged out and lse");
  for (const TensorView* t : {&out_a, &out_b, &dout}) {
    check(!t->empty(), "out", "merge_backward needs out_a, out_b and dout");
    check_like(*t, out, "out");
  }
  for (const TensorView* t : {&lse_a, &lse_b}) {
    check(!t->empty(), "lse", "merge_backward needs lse_a and lse_b");
    check_like(*t, lse, "lse");
  }
  if (!dlse.empty()) check_like(dlse, lse, "dlse");
  check_like(grads.dout_a, out, "dout_a");
  check_like(grads.dout_b, out, "dout_b");
  check_like(grads.dlse_a, lse, "dlse_a");
  check_like(grads.dlse_b, lse, "dlse_b");
  check(grads.dout_a.data && grads.dout_b.data && grads.dlse_a.data && grads.dlse_b.data, "dout_a",
        "merge_backward needs all four gradient outputs");
  const int64_t heads = out.shape[1], n = out.shape[2], dim_v = out.shape[3];
  const int64_t rows = out.shape[0] * heads * n;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / (heads * n), h = row / n % heads, i = row % n;
    const float merged = *lse.row<float>(b, h, i);
    const bool seen = merged != -std::numeric_limits<float>::infinity();
    // w_x = exp(lse_x - lse): a side that saw no key has weight 0, as in merge().
    const float wa = seen ? std::exp(*lse_a.row<float>(b, h, i) - merged) : 0.0f;
    const float wb = seen ? std::exp(*lse_b.row<float>(b, h, i) - merged) : 0.0f;
    const float* o = out.row<float>(b, h, i);
    const float* oa = out_a.row<float>(b, h, i);
    const float* ob = out_b.row<float>(b, h, i);
    const float* g = dout.row<float>(b, h, i);
    float* ga = grads.dout_a.row<float>(b, h, i);
    float* gb = grads.dout_b.row<float>(b, h, i);
    float dot_a = 0.0f, dot_b = 0.0f;
    for (int64_t d = 0; d < dim_v; ++d) {
      ga[d] = wa * g[d];
      gb[d] = wb * g[d];
      dot_a += g[d] * (oa[d] - o[d]);
      dot_b += g[d] * (ob[d] - o[d]);
    }
    const float dl = dlse.empty() ? 0.0f : *dlse.row<float>(b, h, i);
    *grads.dlse_a.row<float>(b, h, i) = wa * (dot_a + dl);
    *grads.dlse_b.row<float>(b, h, i) = wb * (dot_b + dl);
  }
}

}  // namespace attnkit
