// Top-k selection: the k largest scores of n, returned as indices in ascending order.
// Order: larger score first, then lower index (so ties are deterministic); NaN ranks last.
// nth_element is O(n) on average; the k winners are then sorted by index for the block lists.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/cpu/planner_ops.h"

namespace attnkit::cpu {

std::vector<int32_t> topk_indices(const float* score, int64_t n, int64_t k) {
  k = std::clamp<int64_t>(k, 0, n);
  std::vector<int32_t> index(n);
  std::iota(index.begin(), index.end(), 0);
  if (k == 0) return {};
  auto better = [score](int32_t a, int32_t b) {
    const bool nan_a = std::isnan(score[a]), nan_b = std::isnan(score[b]);
    if (nan_a != nan_b) return nan_b;
    if (!nan_a && score[a] != score[b]) return score[a] > score[b];
    return a < b;
  };
  if (k < n) std::nth_element(index.begin(), index.begin() + k, index.end(), better);
  index.resize(k);
  std::sort(index.begin(), index.end());
  return index;
}

}  // namespace attnkit::cpu
