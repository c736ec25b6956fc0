// dhsa: exact agreement with the reference on the selected tokens, budget and local tokens,
// selection shared across heads, whole chunks in score order, and the training-free boundary
// rule finding planted change points in the keys.
#include "patterns/dynamic/dhsa.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

TEST(PlannerDhsa, MatchesReferenceOnSelectedTokens) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{300, 300}, {70, 333}, {1, 65}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
      Inputs in = make_inputs(p);
      expect_pattern_matches_reference("dhsa:block=16,budget=40,local=8", in, causal, p.name());
      expect_pattern_matches_reference("dhsa", in, causal, p.name());
    }
  }
}

TEST(PlannerDhsa, BudgetLocalAndSharing) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 400, p.nk = 400, p.dim = 16;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  const auto plan = make_pattern("dhsa:block=16,budget=60,local=8")->plan(PlanInputs::of(a));
  EXPECT_EQ(plan.mask.heads, 1) << "one selection for every head";
  const auto allow = plan_predicate(plan);
  for (int64_t qb = 0; qb < 25; ++qb) {
    const int64_t last = qb * 16 + 15;
    int64_t count = 0;
    for (int64_t j = 0; j <= last; ++j) count += allow(0, 0, last, j);
    EXPECT_EQ(count, std::min<int64_t>(60, last + 1)) << "query block " << qb;
    for (int64_t j = last - 7; j <= last; ++j)
      EXPECT_TRUE(allow(0, 0, last, j)) << "local key " << j;
    for (int64_t j = last + 1; j < 400; ++j)
      ASSERT_FALSE(allow(0, 0, last, j)) << "future key " << j;
  }
}

// Keys made of segments with one direction each (plus small noise): the boundary rule must put
// a boundary at (or within 1 token of) every segment change.
TEST(PlannerDhsa, BoundariesFindPlantedChangePoints) {
  const int64_t n = 1024, dim = 16;
  Tensor k({1, 1, n, dim}, DType::kF32), q({1, 1, n, dim}, DType::kF32),
      v({1, 1, n, dim}, DType::kF32);
  Tensor out({1, 1, n, dim}, DType::kF32);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<int64_t> changes;
  std::vector<float> direction(dim);
  int64_t next = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (t == next) {
      for (float& x : direction) x = normal(rng);
      if (t > 0) changes.push_back(t);
      next = t + 20 + static_cast<int64_t>(rng() % 60);
    }
    for (int64_t c = 0; c < dim; ++c) k.f32()[t * dim + c] = direction[c] + 0.05f * normal(rng);
  }
  AttentionArgs a;
  a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view();
  for (bool official : {true, false}) {
    SCOPED_TRACE(official ? "rules=official" : "rules=local_max");
    dynamic_patterns::DhsaBoundaryParams bp;
    bp.official_rules = official;
    const auto bounds = dynamic_patterns::dhsa_boundaries(PlanInputs::of(a), 0, bp);
    ASSERT_EQ(bounds.front(), 0);
    ASSERT_EQ(bounds.back(), n);
    EXPECT_TRUE(std::binary_search(bounds.begin(), bounds.end(), n - 64)) << "forced boundary";
    for (int64_t t : changes) {
      // The official rules allow no boundary after the instruction boundary, nor within nms of
      // it (greedy suppression starts from it).
      if (official && t > n - 64 - 8) continue;
      bool found = false;
      for (int64_t u = t - 1; u <= t + 1; ++u)
        found |= std::binary_search(bounds.begin(), bounds.end(), u);
      EXPECT_TRUE(found) << "no boundary near the change at " << t;
    }
    // Not many spurious ones (changes + forced + ends, with some slack).
    EXPECT_LE(bounds.size(), changes.size() + 8);
    if (!official) continue;
    // Official: nothing after n - 64, and accepted boundaries at least nms + 1 apart.
    for (size_t b = 1; b + 1 < bounds.size(); ++b) {
      EXPECT_LE(bounds[b], n - 64);
      if (bounds[b - 1] > 0) {
        EXPECT_GT(bounds[b] - bounds[b - 1], 8) << bounds[b];
      }
    }
  }
}

}  // namespace
}  // namespace attnkit::testing
