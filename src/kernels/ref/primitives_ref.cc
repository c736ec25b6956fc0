// Scalar references of the planner primitives (see primitives_ref.h): the obvious loops,
// accumulating in double, written for clarity. Only tests call them.
#include "kernels/ref/primitives_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace attnkit::ref {
namespace {

double dot(const float* a, const float* b, int64_t dim) {
  double acc = 0.0;
  for (int64_t c = 0; c < dim; ++c) acc += static_cast<double>(a[c]) * b[c];
  return acc;
}

}  // namespace

void mean_pool(const float* x, int64_t n, int64_t dim, int64_t ldx, int64_t kernel, int64_t stride,
               float* out) {
  const int64_t count = n < kernel ? 0 : (n - kernel) / stride + 1;
  for (int64_t m = 0; m < count; ++m)
    for (int64_t c = 0; c < dim; ++c) {
      double acc = 0.0;
      for (int64_t t = 0; t < kernel; ++t) acc += x[(m * stride + t) * ldx + c];
      out[m * dim + c] = static_cast<float>(acc / kernel);
    }
}

void lse_pass(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk, int64_t ldk,
              int64_t dim, float scale, const int64_t* limit, float* lse) {
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t lim = std::min(nk, limit ? limit[i] : nk);
    double best = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < lim; ++j)
      best = std::max(best, scale * dot(q + i * ldq, keys + j * ldk, dim));
    double sum = 0.0;
    for (int64_t j = 0; j < lim; ++j)
      sum += std::exp(scale * dot(q + i * ldq, keys + j * ldk, dim) - best);
    lse[i] = lim > 0 ? static_cast<float>(best + std::log(sum))
                     : -std::numeric_limits<float>::infinity();
  }
}

void prob_reduce(const float* q, int64_t nq, int64_t ldq, const float* lse, const float* keys,
                 int64_t nk, int64_t ldk, int64_t dim, float scale, const int64_t* limit,
                 int64_t row_group, int64_t col_group, float* out) {
  const int64_t out_cols = (nk + col_group - 1) / col_group;
  for (int64_t i = 0; i < nq; ++i) {
    if (std::isinf(lse[i])) continue;
    const int64_t lim = std::min(nk, limit ? limit[i] : nk);
    for (int64_t j = 0; j < lim; ++j)
      out[(i / row_group) * out_cols + j / col_group] += static_cast<float>(
          std::exp(scale * dot(q + i * ldq, keys + j * ldk, dim) - static_cast<double>(lse[i])));
  }
}

std::vector<int32_t> topk_indices(const float* score, int64_t n, int64_t k) {
  std::vector<int32_t> index(n);
  std::iota(index.begin(), index.end(), 0);
  std::stable_sort(index.begin(), index.end(), [score](int32_t a, int32_t b) {
    const bool nan_a = std::isnan(score[a]), nan_b = std::isnan(score[b]);
    if (nan_a || nan_b) return !nan_a && nan_b;
    return score[a] > score[b];
  });
  index.resize(std::clamp<int64_t>(k, 0, n));
  std::sort(index.begin(), index.end());
  return index;
}

void gather_rows(const TensorView& x, int64_t b, int64_t h, const int32_t* index, int64_t count,
                 float* out) {
  const int64_t dim = x.shape[3];
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < dim; ++c) out[r * dim + c] = x.get(b, h, index[r], c);
}

std::vector<int32_t> stable_argsort(const std::vector<uint32_t>& keys) {
  std::vector<int32_t> perm(keys.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&keys](int32_t a, int32_t b) { return keys[a] < keys[b]; });
  return perm;
}

}  // namespace attnkit::ref
