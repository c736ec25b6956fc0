// Routing Transformer routing (Roy et al., arXiv 2003.05997): spherical k-means on the input and
// balanced top-w membership. See routing.cc for the full rule.
//
// Choices, documented:
// - Routing features are the L2-normalised queries and keys (lucidrains' variant; the official
//   code routes its layer-normalised q and k, which differ from these by the centring only).
//   Q and K share centroids; with share_qk the keys are the queries themselves.
// - Centroids are computed on the input (the trained EMA centroids are not available): spherical
//   k-means over the normalised queries and keys together, initialised with keys at evenly
//   spaced positions, `iters` (default 4) Lloyd iterations; an empty cluster keeps its centroid.
// - Balanced routing: cluster c takes the top-min(window, n) queries and, separately, keys by
//   x . mu_c (ties to the lower position), so a token may be in several clusters or none.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/planner.h"
#include "patterns/dynamic/routing.h"

namespace attnkit::dynamic_patterns {
namespace {

void normalise_rows(std::vector<float>* x, int64_t n, int64_t dim) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = x->data() + i * dim;
    double norm = 0.0;
    for (int64_t c = 0; c < dim; ++c) norm += double(row[c]) * row[c];
    const float inv = norm > 0.0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
    for (int64_t c = 0; c < dim; ++c) row[c] *= inv;
  }
}

// Adds every row of x [n, dim] to the sum of its nearest centroid (mu [C, dim]) and counts it.
// Scores go 64 rows at a time, so memory stays O(64 C + C dim).
void assign_nearest(const std::vector<float>& x, int64_t n, const std::vector<float>& mu_t,
                    int64_t clusters, int64_t dim, std::vector<float>* sum,
                    std::vector<int64_t>* count) {
  constexpr int64_t kRows = 64;
  std::vector<float> scores(kRows * clusters);
  for (int64_t i0 = 0; i0 < n; i0 += kRows) {
    const int64_t rows = std::min(kRows, n - i0);
    cpu::score_tile(x.data() + i0 * dim, dim, rows, mu_t.data(), clusters, clusters, dim, 1.0f,
                    scores.data(), clusters);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = scores.data() + r * clusters;
      const int64_t best = std::max_element(row, row + clusters) - row;
      ++(*count)[best];
      for (int64_t c = 0; c < dim; ++c) (*sum)[best * dim + c] += x[(i0 + r) * dim + c];
    }
  }
}

// Members of every cluster: the top-w rows of x [n, dim] by x . mu_c, ascending positions.
// Rows of x are transposed once and scored 16 clusters at a time: O(16 n) memory.
std::vector<std::vector<int32_t>> top_members(const std::vector<float>& x, int64_t n,
                                              const std::vector<float>& mu, int64_t clusters,
                                              int64_t dim, int64_t w) {
  constexpr int64_t kClusters = 16;
  std::vector<float> x_t(dim * n), scores(kClusters * n);
  cpu::transpose_keys(x.data(), n, dim, dim, x_t.data(), n);
  std::vector<std::vector<int32_t>> members(clusters);
  for (int64_t c0 = 0; c0 < clusters; c0 += kClusters) {
    const int64_t rows = std::min(kClusters, clusters - c0);
    cpu::score_tile(mu.data() + c0 * dim, dim, rows, x_t.data(), n, n, dim, 1.0f, scores.data(), n);
    for (int64_t r = 0; r < rows; ++r)
      members[c0 + r] = cpu::topk_indices(scores.data() + r * n, n, w);
  }
  return members;
}

}  // namespace

int64_t routing_cluster_count(const RoutingParams& p, int64_t nk) {
  return p.clusters > 0 ? p.clusters : std::max<int64_t>(1, nk / p.window);
}

std::vector<RoutingClusters> route(const PlanInputs& in, const RoutingParams& p) {
  const Dims d = dims_of(in);
  const int64_t clusters = routing_cluster_count(p, d.nk);
  std::vector<RoutingClusters> out(d.batch * d.heads_q);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(in.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh) {
    const int64_t b = bh / d.heads_q, h = bh % d.heads_q;
    if (h < p.first_head) continue;  // a local head: not routed
    std::vector<float> xq(d.nq * d.dim), xk(d.nk * d.dim);
    cpu::load_rows(in.q, b, h, 0, d.nq, xq.data());
    if (p.share_qk) {
      cpu::load_rows(in.q, b, h, 0, d.nk, xk.data());  // nq == nk
    } else {
      cpu::load_rows(in.k, b, h / d.group, 0, d.nk, xk.data());
    }
    normalise_rows(&xq, d.nq, d.dim);
    normalise_rows(&xk, d.nk, d.dim);
    std::vector<float> mu(clusters * d.dim, 0.0f);
    for (int64_t c = 0; c < clusters; ++c) {
      const int64_t at = std::min(d.nk - 1, (2 * c + 1) * d.nk / (2 * clusters));
      std::copy_n(xk.data() + at * d.dim, d.dim, mu.data() + c * d.dim);
    }
    std::vector<float> sum, mu_t(d.dim * clusters);
    std::vector<int64_t> count;
    for (int64_t it = 0; it < p.iters; ++it) {
      cpu::transpose_keys(mu.data(), clusters, d.dim, d.dim, mu_t.data(), clusters);
      sum.assign(clusters * d.dim, 0.0f);
      count.assign(clusters, 0);
      assign_nearest(xq, d.nq, mu_t, clusters, d.dim, &sum, &count);
      assign_nearest(xk, d.nk, mu_t, clusters, d.dim, &sum, &count);
      for (int64_t c = 0; c < clusters; ++c)
        if (count[c] > 0) std::copy_n(sum.data() + c * d.dim, d.dim, mu.data() + c * d.dim);
      normalise_rows(&mu, clusters, d.dim);
    }
    out[bh].queries = top_members(xq, d.nq, mu, clusters, d.dim, std::min(p.window, d.nq));
    out[bh].keys = top_members(xk, d.nk, mu, clusters, d.dim, std::min(p.window, d.nk));
  }
  return out;
}

}  // namespace attnkit::dynamic_patterns
