// hip: sink and window present, k / block_k searched units, per-head selections, the planted
// block found by the tree search, and exact agreement with the reference on the selection.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <vector>

#include "eval/planted_keys.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

const char kSmall[] = "hip:k=64,block_q=16,stride_q=2,block_k=16,stride_k=1,sink=16,window=32";
const char kPaperUnits[] = "hip:k=64,block_q=16,block_k=2,sink=16,window=32";

TEST(PlannerHip, MatchesReferenceOnSelectedBlocks) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{300, 300}, {70, 333}, {1, 65}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 32;
      Inputs in = make_inputs(p);
      expect_pattern_matches_reference(kSmall, in, causal, p.name());
      expect_pattern_matches_reference("hip", in, causal, p.name());
      expect_pattern_matches_reference(kPaperUnits, in, causal, p.name());
    }
  }
}

TEST(PlannerHip, SinkWindowAndBudget) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 1000, p.nk = 1000, p.dim = 16;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  // Paper units (2 tokens) in 16-key tiles: k = 64 tokens = 32 units per query block of 16.
  const auto plan =
      make_pattern("hip:k=64,block_q=16,block_k=2,sink=16,window=32")->plan(PlanInputs::of(a));
  const auto allow = plan_predicate(plan);
  bool heads_differ = false;
  for (int64_t qb = 0; qb < 63; ++qb) {
    const int64_t row0 = qb * 16,
                  window_start = std::max<int64_t>(0, std::min<int64_t>(999, row0 + 15) - 31);
    for (int64_t i = row0; i < std::min<int64_t>(1000, row0 + 16); ++i)
      for (int64_t j = 0; j <= i; ++j)
        if (j < 16 || j > i - 32) {
          ASSERT_TRUE(allow(0, 0, i, j)) << "sink/window pair " << i << "," << j;
        }
    // Searched keys: between the sink and the window of the block's LAST row, exactly k of
    // them once that range is longer than k; rows share them (outside their own windows).
    const int64_t row_last = std::min<int64_t>(999, row0 + 15);
    const int64_t hi = window_start / 2 * 2;  // whole 2-token units before the last row's window
    int64_t searched = 0;
    for (int64_t j = 16; j < hi; ++j) {
      searched += allow(0, 0, row_last, j);
      if (j <= row0 - 32) {
        ASSERT_EQ(allow(0, 0, row0, j), allow(0, 0, row_last, j)) << j;
      }
      heads_differ |= allow(0, 0, row_last, j) != allow(0, 1, row_last, j);
    }
    EXPECT_EQ(searched, std::clamp<int64_t>(hi - 16, 0, 64)) << "query block " << qb;
  }
  EXPECT_TRUE(heads_differ) << "HiP selects per query head";
}

TEST(PlannerHip, FindsThePlantedSpan) {
  PlantedKeysOptions o;
  o.heads_q = 1, o.heads_kv = 1, o.n = 2048, o.dim = 32, o.topics = 4, o.spans = 1, o.span = 16;
  o.segment = 512;
  const PlantedKeys planted = make_planted_keys(o);
  Tensor out({1, 1, o.n, o.dim}, DType::kF32);
  AttentionArgs a;
  a.q = planted.q.view(), a.k = planted.k.view(), a.v = planted.v.view(), a.out = out.view();
  a.causal = true;
  const auto oracle = make_pattern("topk_oracle:budget=8,block=16")->plan(PlanInputs::of(a));
  // The oracle's best blocks outside sink and window must be among HiP's picks, with either
  // initialisation (the aligned one searches the same grid in every query block).
  for (const char* init : {"even", "aligned"}) {
    const auto hip = make_pattern(std::string(kSmall) + ",init=" + init)->plan(PlanInputs::of(a));
    int64_t agree = 0, total = 0;
    for (int64_t qb = 32; qb < 128; ++qb) {
      const auto h_blocks = blocks_of(hip.mask, 0, 0, qb);
      for (int32_t kb : blocks_of(oracle.mask, 0, 0, qb)) {
        if (kb == 0 || kb * 16 >= qb * 16 - 31) continue;
        ++total;
        agree += std::find(h_blocks.begin(), h_blocks.end(), kb) != h_blocks.end();
      }
    }
    ASSERT_GT(total, 0);
    EXPECT_GE(agree, total * 2 / 5)
        << init << ": " << agree << " of " << total << " far oracle blocks picked";
    std::cout << "init=" << init << ": " << agree << " of " << total << " far oracle blocks\n";
  }
}

}  // namespace
}  // namespace attnkit::testing
