// hyper (HyperAttention): exact below min_seq; without samples, its output equals the reference
// on the pairs its plan reports (block-diagonal in LSH order, causal recursion, LSE merges);
// the block-diagonal is a permutation of equal blocks that groups similar q and k; the sampled
// part carries the log(n / m) shift (its LSE estimates the dense one on diffuse inputs).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

TEST(PlannerHyper, ExactAtOrBelowMinSeq) {
  for (bool causal : {true, false}) {
    Problem p;
    p.heads_q = 4, p.heads_kv = 2, p.nq = 300, p.nk = 300, p.dim = 32, p.causal = causal;
    check_problem(p, [](const AttentionArgs& a) { make_pattern("hyper")->run(a); });
  }
}

TEST(PlannerHyper, WithoutSamplesMatchesReferenceOnPlannedPairs) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{300, 300}, {100, 333}, {333, 200}, {1, 65}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
      Inputs in = make_inputs(p);
      expect_pattern_matches_reference("hyper:block=16,samples=0,min_seq=64", in, causal, p.name());
    }
  }
}

TEST(PlannerHyper, BlockDiagonalInSortedOrderGroupsSimilarPairs) {
  Problem p;
  p.nq = 256, p.nk = 256, p.dim = 16;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  const auto plan = make_pattern("hyper:block=16,samples=0,min_seq=64")->plan(PlanInputs::of(a));
  const auto dense = to_dense(plan.mask, 0, 0);
  std::vector<int64_t> per_key(256, 0);
  double allowed_score = 0.0, all_score = 0.0;
  for (int64_t i = 0; i < 256; ++i) {
    int64_t per_row = 0;
    for (int64_t j = 0; j < 256; ++j) {
      double dot = 0.0;
      for (int64_t c = 0; c < 16; ++c)
        dot += in.q.view().get(0, 0, i, c) * in.k.view().get(0, 0, j, c);
      all_score += dot / (256.0 * 256.0);
      if (dense[i * 256 + j]) {
        ++per_row, ++per_key[j];
        allowed_score += dot / (256.0 * 16.0);
      }
    }
    ASSERT_EQ(per_row, 16) << "row " << i;
  }
  for (int64_t j = 0; j < 256; ++j) ASSERT_EQ(per_key[j], 16) << "key " << j;
  // Angular LSH puts q and k of similar direction in the same block.
  EXPECT_GT(allowed_score, all_score + 1.0) << allowed_score << " vs " << all_score;
}

TEST(PlannerHyper, SampledPartEstimatesTheDenseLse) {
  // Diffuse scores: every key carries about the same mass, so block (16) + weighted samples
  // must account for all n keys, which only the log(n / m) shift does.
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 512, p.nk = 512, p.dim = 16;
  Inputs in = make_inputs(p);
  for (int64_t e = 0; e < in.q.numel(); ++e) in.q.f32()[e] *= 0.05f;
  for (bool causal : {false, true}) {
    AttentionArgs a = in.args();
    a.causal = causal;
    const RunStats stats = make_pattern("hyper:block=16,samples=64,min_seq=128")->run(a);
    AttentionArgs r = a;
    r.out = in.ref_out.view();
    r.lse = in.ref_lse.rows_view();
    attention_reference(r);
    double gap = 0.0;
    for (int64_t row = 0; row < 2 * 512; ++row)
      gap += std::fabs(in.lse.f32()[row] - in.ref_lse.f32()[row]);
    EXPECT_LT(gap / 1024.0, 0.1) << "mean |LSE - dense LSE|, causal " << causal;
    EXPECT_GT(stats.density, 0.0);
    EXPECT_LT(stats.density, causal ? 0.5 : 1.0);
  }
}

}  // namespace
}  // namespace attnkit::testing
