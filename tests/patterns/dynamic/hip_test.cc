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

// Decode with a state: a search every `refresh` steps (equal to planning without a state), and in
// between the last search's units with the sink and window at the current position; a prefill
// call drops the state, so the next step searches.
TEST(PlannerHip, DecodeReusesTheSearchForRefreshSteps) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 64, p.nk = 400, p.dim = 32;
  Inputs in = make_inputs(p);
  const auto pattern = make_pattern("hip:k=64,block_q=16,block_k=2,sink=16,window=32,refresh=3");
  std::unique_ptr<PlanState> state;
  auto plan_at = [&](int64_t nq, int64_t nk, bool keep) {
    TensorView q = in.q.view(), k = in.k.view();
    q.shape[2] = nq, k.shape[2] = nk;
    PlanInputs pi = PlanInputs::shapes(1, p.heads_q, p.heads_kv, nq, nk, p.dim, true);
    pi.q = q, pi.k = k;
    pi.state = keep ? &state : nullptr;
    return pattern->plan(pi);
  };
  auto same = [](const Plan& a, const Plan& b) {
    return a.mask.row_start == b.mask.row_start && a.mask.kv_index == b.mask.kv_index &&
           a.mask.kind == b.mask.kind;
  };
  std::vector<std::vector<uint8_t>> searched(p.heads_q);  // allowed keys of the last search
  int64_t reused_differs = 0;
  for (int64_t t = 0; t < 16; ++t) {
    const int64_t nk = 200 + t, pos = nk - 1;
    const Plan kept = plan_at(1, nk, true), fresh = plan_at(1, nk, false);
    if (t % 3 == 0) {
      ASSERT_TRUE(same(kept, fresh)) << "a refresh step searches: step " << t;
      for (int64_t h = 0; h < p.heads_q; ++h) {
        searched[h].assign(nk, 0);
        for (int64_t j = 16; j <= pos - 32; ++j) searched[h][j] = allowed(kept.mask, 0, h, 0, j);
      }
      continue;
    }
    reused_differs += !same(kept, fresh);
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t j = 0; j < nk; ++j) {
        const bool want =
            j < 16 || j > pos - 32 || (j < int64_t(searched[h].size()) && searched[h][j]);
        ASSERT_EQ(allowed(kept.mask, 0, h, 0, j), want)
            << "step " << t << " head " << h << " key " << j;
      }
  }
  EXPECT_GT(reused_differs, 0) << "the reused units differ from a new search at some step";
  plan_at(64, 216, true);  // a prefill
  EXPECT_TRUE(same(plan_at(1, 217, true), plan_at(1, 217, false)));
}

}  // namespace
}  // namespace attnkit::testing
