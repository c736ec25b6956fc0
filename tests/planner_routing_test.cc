// routing (Routing Transformer): one cluster is dense attention; in general each query's output
// is the mean over its clusters of the reference restricted to that cluster's keys (causal by
// original positions) and its LSE the largest; balanced membership; the plan's pairs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "patterns/routing.h"
#include "planner_check.h"

namespace attnkit::testing {
namespace {

TEST(PlannerRouting, OneClusterIsDenseAttention) {
  for (bool causal : {true, false}) {
    Problem p;
    p.heads_q = 2, p.heads_kv = 1, p.nq = 150, p.nk = 150, p.dim = 16, p.causal = causal;
    check_problem(p, [](const AttentionArgs& a) { make_pattern("routing:clusters=1,window=1000")->run(a); });
  }
}

TEST(PlannerRouting, MatchesPerClusterReferenceAveraged) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{200, 200}, {90, 260}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
      Inputs in = make_inputs(p);
      AttentionArgs a = in.args();
      a.causal = causal;
      routing::RoutingParams rp;
      rp.clusters = 4, rp.window = 64, rp.iters = 3;
      const auto clusters = routing::route(a, rp);
      make_pattern("routing:clusters=4,window=64,iters=3")->run(a);
      // Expected: per cluster, the reference over that cluster's keys, for its queries.
      std::vector<double> sum(p.heads_q * nq * p.dim_v, 0.0);
      std::vector<int> count(p.heads_q * nq, 0);
      std::vector<float> best(p.heads_q * nq, -std::numeric_limits<float>::infinity());
      for (int64_t c = 0; c < 4; ++c) {
        AttentionArgs r = a;
        r.out = in.ref_out.view();
        r.lse = in.ref_lse.f32();
        attention_reference(r, [&](int64_t, int64_t h, int64_t, int64_t j) {
          const auto& keys = clusters[h].keys[c];
          return std::binary_search(keys.begin(), keys.end(), static_cast<int32_t>(j));
        });
        for (int64_t h = 0; h < p.heads_q; ++h) {
          EXPECT_EQ(static_cast<int64_t>(clusters[h].queries[c].size()), std::min<int64_t>(64, nq));
          EXPECT_EQ(static_cast<int64_t>(clusters[h].keys[c].size()), std::min<int64_t>(64, nk));
          for (int32_t i : clusters[h].queries[c]) {
            ++count[h * nq + i];
            for (int64_t x = 0; x < p.dim_v; ++x) sum[(h * nq + i) * p.dim_v + x] += in.ref_out.view().get(0, h, i, x);
            best[h * nq + i] = std::max(best[h * nq + i], in.ref_lse.f32()[h * nq + i]);
          }
        }
      }
      int64_t failures = 0;
      for (int64_t h = 0; h < p.heads_q; ++h)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t row = h * nq + i;
          const float got_lse = in.lse.f32()[row];
          if (std::isinf(best[row])) {
            failures += !(std::isinf(got_lse) && got_lse < 0);
          } else {
            failures += !(std::fabs(got_lse - best[row]) <= 1e-4f * (1 + std::fabs(best[row])));
          }
          for (int64_t x = 0; x < p.dim_v; ++x) {
            const double want = count[row] ? sum[row * p.dim_v + x] / count[row] : 0.0;
            failures += !(std::fabs(in.out.view().get(0, h, i, x) - want) <= 1e-4);
          }
        }
      EXPECT_EQ(failures, 0) << p.name() << (causal ? " causal" : "");
    }
  }
}

TEST(PlannerRouting, PlanPairsAreTheClusterProducts) {
  Problem p;
  p.heads_q = 1, p.heads_kv = 1, p.nq = 130, p.nk = 130, p.dim = 8;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  const auto plan = make_pattern("routing:clusters=3,window=40")->plan(a);
  routing::RoutingParams rp;
  rp.clusters = 3, rp.window = 40;
  const auto clusters = routing::route(a, rp);
  const auto dense = to_dense(plan.mask, 0, 0);
  for (int64_t i = 0; i < 130; ++i)
    for (int64_t j = 0; j < 130; ++j) {
      bool expect = false;
      for (int c = 0; c < 3; ++c)
        expect |= std::binary_search(clusters[0].queries[c].begin(), clusters[0].queries[c].end(), i) &&
                  std::binary_search(clusters[0].keys[c].begin(), clusters[0].keys[c].end(), j);
      ASSERT_EQ(dense[i * 130 + j] != 0, expect) << i << "," << j;
    }
}

}  // namespace
}  // namespace attnkit::testing
