// topk_oracle: output equals the reference on its selected blocks; the selection is the true
// top-`budget` blocks by exact attention mass (brute force in double); budget and GQA sharing.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

// mass[h][qb][kb] by brute force: softmax over the causal row in double, summed per block.
std::vector<double> brute_force_mass(Inputs& in, bool causal, int64_t block, int64_t h) {
  const TensorView q = in.q.view(), k = in.k.view();
  const int64_t nq = q.shape[2], nk = k.shape[2], dim = q.shape[3];
  const int64_t g = h / (q.shape[1] / k.shape[1]);
  const int64_t qbs = (nq + block - 1) / block, kbs = (nk + block - 1) / block;
  std::vector<double> mass(qbs * kbs, 0.0);
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t seen = causal ? std::min(nk, i + nk - nq + 1) : nk;
    std::vector<double> s(std::max<int64_t>(seen, 0));
    double top = -1e300, sum = 0.0;
    for (int64_t j = 0; j < seen; ++j) {
      double dot = 0.0;
      for (int64_t c = 0; c < dim; ++c) dot += double(q.get(0, h, i, c)) * k.get(0, g, j, c);
      s[j] = dot / std::sqrt(double(dim));
      top = std::max(top, s[j]);
    }
    for (int64_t j = 0; j < seen; ++j) sum += std::exp(s[j] - top);
    for (int64_t j = 0; j < seen; ++j)
      mass[(i / block) * kbs + j / block] += std::exp(s[j] - top) / sum;
  }
  return mass;
}

TEST(PlannerTopkOracle, MatchesReferenceOnSelectedBlocks) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{200, 200}, {65, 300}, {1, 63}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 32, p.dim_v = 24;
      Inputs in = make_inputs(p);
      for (const char* spec :
           {"topk_oracle:budget=2,block=16", "topk_oracle:budget=3,block=32,share=1"})
        expect_pattern_matches_reference(spec, in, causal, p.name());
    }
  }
}

TEST(PlannerAllPatterns, HalfPrecisionInputsMatchReferenceOnTheirPlans) {
  // Every block-mask planner reads f16 / bf16 Q and K through the same loaders.
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Problem p;
    p.heads_q = 2, p.heads_kv = 1, p.nq = 130, p.nk = 130, p.dim = 32, p.dtype = dtype;
    Inputs in = make_inputs(p);
    for (const char* spec :
         {"topk_oracle:budget=2,block=16", "hip:k=32,block_q=16,window=16",
          "infllm_v2:dense_len=0,kernel=8,stride=4,lse_kernel=32,lse_stride=16,block=16,local=1,"
          "topk=4",
          "dhsa:block=16,budget=40,local=8", "hyper:block=16,samples=0,min_seq=32"})
      expect_pattern_matches_reference(spec, in, true, p.name());
  }
}

TEST(PlannerTopkOracle, PicksTheTrueTopBlocks) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 160, p.nk = 160, p.dim = 16;
  p.seed = 7;
  Inputs in = make_inputs(p);
  // Sharpen the scores so block masses differ clearly.
  for (int64_t e = 0; e < in.q.numel(); ++e) in.q.f32()[e] *= 3.0f;
  AttentionArgs a = in.args();
  a.causal = true;
  const int64_t block = 16, budget = 3;
  const auto plan = make_pattern("topk_oracle:budget=3,block=16")->plan(PlanInputs::of(a));
  const int64_t qbs = 10, kbs = 10;
  for (int64_t h = 0; h < 2; ++h) {
    const auto mass = brute_force_mass(in, true, block, h);
    for (int64_t qb = 0; qb < qbs; ++qb) {
      const auto chosen = blocks_of(plan.mask, 0, h, qb);
      ASSERT_EQ(static_cast<int64_t>(chosen.size()), std::min<int64_t>(budget, qb + 1));
      double lowest_chosen = 1e300, highest_other = -1.0;
      for (int64_t kb = 0; kb <= qb; ++kb) {
        const bool in_list = std::find(chosen.begin(), chosen.end(), kb) != chosen.end();
        const double m = mass[qb * kbs + kb];
        if (in_list)
          lowest_chosen = std::min(lowest_chosen, m);
        else
          highest_other = std::max(highest_other, m);
      }
      EXPECT_GE(lowest_chosen, highest_other - 1e-4)
          << "head " << h << " query block " << qb << ": a better block was left out";
      for (int32_t kb : chosen) EXPECT_LE(kb, qb) << "block above the diagonal";
    }
  }
}

TEST(PlannerTopkOracle, SharedSelectionIsTheSameForTheGroup) {
  Problem p;
  p.heads_q = 6, p.heads_kv = 2, p.nq = 130, p.nk = 130, p.dim = 16;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  const auto shared =
      make_pattern("topk_oracle:budget=2,block=16,share=1")->plan(PlanInputs::of(a));
  const auto own = make_pattern("topk_oracle:budget=2,block=16")->plan(PlanInputs::of(a));
  bool any_difference = false;
  for (int64_t qb = 0; qb < shared.mask.q_blocks(); ++qb)
    for (int64_t h = 0; h < 6; ++h) {
      EXPECT_EQ(blocks_of(shared.mask, 0, h, qb), blocks_of(shared.mask, 0, h / 3 * 3, qb));
      EXPECT_LE(blocks_of(own.mask, 0, h, qb).size(), 2u);
      any_difference |= blocks_of(own.mask, 0, h, qb) != blocks_of(own.mask, 0, h / 3 * 3, qb);
    }
  EXPECT_TRUE(any_difference) << "per-head selections should differ on random inputs";
}

TEST(PlannerTopkOracle, RejectsBadParameters) {
  EXPECT_THROW(make_pattern("topk_oracle:budget=0"), Error);
  EXPECT_THROW(make_pattern("topk_oracle:block=24"), Error);
  EXPECT_THROW(make_pattern("topk_oracle:share=2"), Error);
}

}  // namespace
}  // namespace attnkit::testing
