// routing's clusters (route()) against a slow float64 reference written from the rule in
// routing_kmeans.cc: L2-normalised queries and keys; centroids initialised with the keys at
// positions (2c + 1) Nk / (2 C); `iters` Lloyd iterations of spherical k-means over queries and
// keys together (each row to the centroid of largest dot product, centroid = normalised sum, an
// empty cluster keeps its centroid); then each cluster takes its top-min(w, n) queries and keys
// by dot product with its centroid (ties: the lower position), listed in ascending position.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "patterns/dynamic/routing.h"
#include "support/attention_check.h"

namespace attnkit::testing {
namespace {

using Rows = std::vector<std::vector<double>>;

Rows normalised(const TensorView& x, int64_t b, int64_t h) {
  Rows rows(x.shape[2], std::vector<double>(x.shape[3]));
  for (int64_t i = 0; i < x.shape[2]; ++i) {
    double norm = 0.0;
    for (int64_t d = 0; d < x.shape[3]; ++d) norm += double(x.get(b, h, i, d)) * x.get(b, h, i, d);
    for (int64_t d = 0; d < x.shape[3]; ++d)
      rows[i][d] = norm > 0 ? x.get(b, h, i, d) / std::sqrt(norm) : 0.0;
  }
  return rows;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

std::vector<std::vector<int32_t>> top_members(const Rows& x, const Rows& mu, int64_t w) {
  std::vector<std::vector<int32_t>> members;
  for (const auto& centre : mu) {
    std::vector<int32_t> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t c) { return dot(x[a], centre) > dot(x[c], centre); });
    order.resize(std::min<int64_t>(w, x.size()));
    std::sort(order.begin(), order.end());
    members.push_back(order);
  }
  return members;
}

TEST(RoutingSelection, ClustersEqualTheSlowReference) {
  for (auto [clusters, window, iters, nk] : std::vector<std::array<int64_t, 4>>{
           {3, 64, 4, 300}, {5, 40, 2, 257}, {1, 100, 3, 150}, {4, 500, 0, 200}}) {
    Problem p;
    p.batch = 2, p.heads_q = 4, p.heads_kv = 2, p.nq = nk, p.nk = nk, p.dim = 16;
    p.seed = static_cast<uint64_t>(nk + clusters);
    Inputs in = make_inputs(p);
    AttentionArgs a = in.args();
    a.causal = true;
    dynamic_patterns::RoutingParams params;
    params.clusters = clusters, params.window = window, params.iters = iters;
    const auto routed = dynamic_patterns::route(PlanInputs::of(a), params);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.heads_q; ++h) {
        const Rows xq = normalised(in.q.view(), b, h);
        const Rows xk = normalised(in.k.view(), b, h / (p.heads_q / p.heads_kv));
        Rows mu;
        for (int64_t c = 0; c < clusters; ++c)
          mu.push_back(xk[std::min(nk - 1, (2 * c + 1) * nk / (2 * clusters))]);
        for (int64_t it = 0; it < iters; ++it) {
          Rows sum(clusters, std::vector<double>(p.dim, 0.0));
          std::vector<int64_t> count(clusters, 0);
          for (const Rows* x : {&xq, &xk})
            for (const auto& row : *x) {
              int64_t best = 0;
              for (int64_t c = 1; c < clusters; ++c)
                if (dot(row, mu[c]) > dot(row, mu[best])) best = c;
              ++count[best];
              for (int64_t d = 0; d < p.dim; ++d) sum[best][d] += row[d];
            }
          for (int64_t c = 0; c < clusters; ++c) {
            if (count[c] > 0) mu[c] = sum[c];
            const double norm = std::sqrt(dot(mu[c], mu[c]));
            for (double& v : mu[c]) v = norm > 0 ? v / norm : 0.0;
          }
        }
        const auto& got = routed[b * p.heads_q + h];
        const std::string where = "clusters " + std::to_string(clusters) + " iters " +
                                  std::to_string(iters) + " b" + std::to_string(b) + " h" +
                                  std::to_string(h);
        EXPECT_EQ(got.queries, top_members(xq, mu, window)) << where;
        EXPECT_EQ(got.keys, top_members(xk, mu, window)) << where;
      }
  }
}

}  // namespace
}  // namespace attnkit::testing
