// DHSA chunk boundaries without the learned predictor (Xiong et al., arXiv 2510.24606).
//
// The paper's boundary predictor (an MLP over left/right key windows, trained on attention-mass
// shifts) is not available, so the SCORE is a training-free heuristic over the same inputs:
//   f_t    = concat over kv heads of the L2-normalised key k_t            (shared by all heads)
//   l_t    = mean f over [t - w, t),  r_t = mean f over [t, t + w)          (w = window, 4)
//   s_t    = 1 - cos(l_t, r_t)     dissimilarity of the two sides of a boundary before token t
//   candidates: s_t > mean(s) + sigma * std(s) (sigma = 1; stands in for the predictor's
//   threshold theta = 1.1 on its ratio)
// The SELECTION of candidates follows the official code (legacy/utils/helper.py,
// _select_boundary_candidates and predict_boundaries) with rules=official (the default):
//   - no boundary within w of either end (the code masks the first w - 1 and last w scores);
//   - the instruction boundary Nk - local is accepted first, and no candidate after it;
//   - candidates in descending score order, each dropped if within nms (8) tokens of one
//     already accepted (greedy suppression), until (Nk / 64) * beta (beta = 8) are accepted.
// rules=local_max (attnkit's earlier rule): candidates that are local maxima within +-nms, the
// top (Nk / 64) * beta of them, anywhere.
//   boundaries = {0, Nk - local, Nk} U accepted candidates
// Prefix sums make every window mean O(1), so the rule costs O(Nk * Hkv * d).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dhsa.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {

std::vector<int64_t> dhsa_boundaries(const PlanInputs& in, int64_t b, const DhsaBoundaryParams& p) {
  const Dims d = dims_of(in);
  const int64_t n = d.nk, width = d.heads_kv * d.dim, w = std::max<int64_t>(1, p.window);
  // Prefix sums of the normalised, concatenated keys: prefix[(t + 1) * width + c].
  std::vector<double> prefix((n + 1) * width, 0.0);
  std::vector<float> row(d.dim);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < d.heads_kv; ++g) {
      cpu::load_rows(in.k, b, g, t, 1, row.data());
      double norm = 0.0;
      for (float x : row) norm += double(x) * x;
      const double inv = norm > 0.0 ? 1.0 / std::sqrt(norm) : 0.0;
      for (int64_t c = 0; c < d.dim; ++c)
        prefix[(t + 1) * width + g * d.dim + c] = prefix[t * width + g * d.dim + c] + row[c] * inv;
    }
  }
  std::vector<double> score(n, 0.0);
  for (int64_t t = 1; t < n; ++t) {
    const int64_t l0 = std::max<int64_t>(0, t - w), r1 = std::min(n, t + w);
    double dot = 0.0, nl = 0.0, nr = 0.0;
    for (int64_t c = 0; c < width; ++c) {
      const double left = (prefix[t * width + c] - prefix[l0 * width + c]) / double(t - l0);
      const double right = (prefix[r1 * width + c] - prefix[t * width + c]) / double(r1 - t);
      dot += left * right, nl += left * left, nr += right * right;
    }
    score[t] = nl > 0 && nr > 0 ? 1.0 - dot / std::sqrt(nl * nr) : 0.0;
  }
  double mean = 0.0, var = 0.0;
  for (int64_t t = 1; t < n; ++t) mean += score[t] / double(std::max<int64_t>(1, n - 1));
  for (int64_t t = 1; t < n; ++t)
    var += (score[t] - mean) * (score[t] - mean) / double(std::max<int64_t>(1, n - 1));
  const double threshold = mean + p.sigma * std::sqrt(var);
  const int64_t cap = std::max<int64_t>(1, n / 64 * p.beta);
  const int64_t instruction = n - p.local;  // forced boundary (when inside (0, n))
  std::vector<int64_t> candidates;
  if (p.official_rules) {
    // Greedy suppression in score order, after the pre-accepted instruction boundary.
    std::vector<int64_t> order;
    const int64_t last = std::min(n - w, instruction > 0 ? instruction - 1 : n - 1);
    for (int64_t t = w; t <= last; ++t)
      if (score[t] > threshold) order.push_back(t);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t c) { return score[a] > score[c]; });
    std::vector<uint8_t> suppressed(n + 1, 0);  // within nms of an accepted boundary
    const auto accept = [&](int64_t t) {
      std::fill(suppressed.begin() + std::max<int64_t>(0, t - p.nms),
                suppressed.begin() + std::min(n, t + p.nms) + 1, uint8_t{1});
    };
    if (instruction > 0 && instruction < n) accept(instruction);
    for (int64_t t : order) {
      if (static_cast<int64_t>(candidates.size()) >= cap) break;
      if (suppressed[t]) continue;
      accept(t);
      candidates.push_back(t);
    }
  } else {
    for (int64_t t = 1; t < n; ++t) {
      if (score[t] <= threshold) continue;
      bool is_max = true;
      for (int64_t u = std::max<int64_t>(1, t - p.nms); u <= std::min(n - 1, t + p.nms) && is_max;
           ++u)
        is_max = score[u] < score[t] || (score[u] == score[t] && u >= t);
      if (is_max) candidates.push_back(t);
    }
    if (static_cast<int64_t>(candidates.size()) > cap) {
      std::stable_sort(candidates.begin(), candidates.end(),
                       [&](int64_t a, int64_t c) { return score[a] > score[c]; });
      candidates.resize(cap);
    }
  }
  candidates.push_back(0);
  if (instruction > 0) candidates.push_back(instruction);
  candidates.push_back(n);
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  return candidates;
}

}  // namespace attnkit::dynamic_patterns
