// infllm_v2: dense switch below dense_len, forced init/local blocks, top-k budget, causal block
// lists, GQA sharing, a planted far block found, and exact agreement with the reference on the
// selected blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "eval/planted_keys.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

// Small-scale parameters (the defaults need Nk >= 8192): blocks of 16, pools 8/4 and 32/16.
const char kSmall[] =
    "infllm_v2:dense_len=0,kernel=8,stride=4,lse_kernel=32,lse_stride=16,block=16,init=1,"
    "local=2,topk=6";

TEST(PlannerInfllmV2, MatchesReferenceOnSelectedBlocks) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{200, 200}, {70, 300}, {1, 65}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 32;
      Inputs in = make_inputs(p);
      expect_pattern_matches_reference(kSmall, in, causal, p.name());
    }
  }
}

// Decode keeps the pooled keys in a PlanState and pools only the windows new keys complete: the
// plans of a growing sequence (prefill, then one query a step, then a chunk) are identical to
// plans from scratch; a state handed a shorter K (a new sequence) starts again.
TEST(PlannerInfllmV2, KeptPooledKeysGiveTheSamePlans) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 1, p.nk = 400, p.dim = 32;
  Inputs in = make_inputs(p);
  const auto pattern = make_pattern(kSmall);
  std::unique_ptr<PlanState> state;
  auto plan_at = [&](int64_t nq, int64_t nk, bool keep) {
    TensorView q = in.q.view(), k = in.k.view();
    q.shape[2] = nq;  // the last nq of the first nk positions
    k.shape[2] = nk;
    PlanInputs pi = PlanInputs::shapes(1, p.heads_q, p.heads_kv, nq, nk, p.dim, true);
    pi.q = q, pi.k = k;
    pi.state = keep ? &state : nullptr;
    return pattern->plan(pi);
  };
  std::vector<std::pair<int64_t, int64_t>> steps = {{1, 150}};  // (nq, nk)
  for (int64_t nk = 151; nk < 260; ++nk) steps.push_back({1, nk});
  steps.push_back({1, 300});
  steps.push_back({1, 120});  // shorter: a new sequence
  for (int64_t nk = 121; nk < 140; ++nk) steps.push_back({1, nk});
  for (auto [nq, nk] : steps) {
    const Plan kept = plan_at(nq, nk, true), fresh = plan_at(nq, nk, false);
    ASSERT_EQ(kept.mask.row_start, fresh.mask.row_start) << nk;
    ASSERT_EQ(kept.mask.kv_index, fresh.mask.kv_index) << nk;
  }
  ASSERT_NE(state, nullptr);
}

TEST(PlannerInfllmV2, DenseBelowDenseLen) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 300, p.nk = 300, p.dim = 16;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  const auto plan = make_pattern("infllm_v2")->plan(PlanInputs::of(a));  // 300 < 8192
  for (int64_t qb = 0; qb < plan.mask.q_blocks(); ++qb) {
    const auto blocks = blocks_of(plan.mask, 0, 1, qb);
    ASSERT_EQ(static_cast<int64_t>(blocks.size()), qb + 1) << "query block " << qb;
  }
  expect_pattern_matches_reference("infllm_v2", in, true, p.name());
}

TEST(PlannerInfllmV2, ForcedBlocksBudgetCausalityAndGqaSharing) {
  Problem p;
  p.heads_q = 6, p.heads_kv = 2, p.nq = 512, p.nk = 512, p.dim = 16;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  const auto plan = make_pattern(kSmall)->plan(PlanInputs::of(a));
  for (int64_t h = 0; h < 6; ++h)
    for (int64_t qb = 0; qb < 32; ++qb) {
      const auto blocks = blocks_of(plan.mask, 0, h, qb);
      EXPECT_EQ(static_cast<int64_t>(blocks.size()), std::min<int64_t>(6, qb + 1));
      for (int64_t forced : {int64_t{0}, qb - 2, qb - 1, qb})
        if (forced >= 0) {
          EXPECT_NE(std::find(blocks.begin(), blocks.end(), forced), blocks.end())
              << "forced block " << forced << " missing from query block " << qb;
        }
      EXPECT_LE(blocks.back(), qb) << "block above the diagonal";
      EXPECT_EQ(blocks, blocks_of(plan.mask, 0, h / 3 * 3, qb)) << "not shared by the group";
    }
}

TEST(PlannerInfllmV2, FindsAPlantedFarBlock) {
  PlantedKeysOptions o;
  o.heads_q = 2, o.heads_kv = 1, o.n = 1024, o.dim = 32, o.topics = 4, o.spans = 1, o.span = 16;
  o.segment = 256;
  const PlantedKeys planted = make_planted_keys(o);
  Tensor out({1, 2, o.n, o.dim}, DType::kF32);
  AttentionArgs a;
  a.q = planted.q.view(), a.k = planted.k.view(), a.v = planted.v.view(), a.out = out.view();
  a.causal = true;
  // Oracle and InfLLM-V2 at the same budget: InfLLM's picks must carry most of the oracle's
  // mass on this input (the planted spans are far from the diagonal).
  const auto oracle =
      make_pattern("topk_oracle:budget=6,block=16,share=1")->plan(PlanInputs::of(a));
  const auto infllm = make_pattern(kSmall)->plan(PlanInputs::of(a));
  int64_t agree = 0, total = 0;
  for (int64_t qb = 8; qb < 64; ++qb) {
    const auto o_blocks = blocks_of(oracle.mask, 0, 0, qb);
    const auto i_blocks = blocks_of(infllm.mask, 0, 0, qb);
    for (int32_t kb : o_blocks) {
      ++total;
      agree += std::find(i_blocks.begin(), i_blocks.end(), kb) != i_blocks.end();
    }
  }
  EXPECT_GE(agree, total * 3 / 4) << agree << " of " << total << " oracle blocks picked";
}

}  // namespace
}  // namespace attnkit::testing
