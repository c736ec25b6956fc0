// LongLoRA S2-Attn and SinkLoRA SF-Attn against per-element rules written here.
#include <gtest/gtest.h>

#include "support/pattern_check.h"

namespace attnkit::testing {
namespace {

TEST(PatternsS2Attn, MatchesRolledGroups) {
  for (int64_t groups : {1, 2, 4, 5}) {
    for (int causal : {1, 0}) {
      for (const auto& c : odd_cases()) {
        const int64_t nk = c.nk, heads = c.heads;
        const int64_t g = (nk + groups - 1) / groups, s = g / 2;
        check_pattern(
            "s2attn:groups=" + std::to_string(groups) + ",causal=" + std::to_string(causal), c,
            [=](int64_t h, int64_t p, int64_t j) {
              if (p < 0) return false;
              const bool shifted = h >= (heads + 1) / 2;  // torch.chunk(2) split
              auto rolled = [&](int64_t u) { return shifted ? ((u - s) % nk + nk) % nk : u; };
              if (rolled(j) / g != rolled(p) / g) return false;
              return !causal || rolled(j) <= rolled(p);
            });
      }
    }
  }
}

TEST(PatternsS2Attn, ShiftedHeadsWrapAround) {
  // 8 keys, 2 groups of 4, shift 2: the shifted head's wrap group is {6, 7, 0, 1}; in rolled
  // order 6, 7 come first, so position 0 sees 6 and 7 (the leak SinkLoRA removes).
  const auto plan = make_pattern("s2attn:groups=2")->plan(shape_inputs(8, 8, 2));
  ASSERT_EQ(plan.mask.heads, 2);
  const auto shifted = to_dense(plan.mask, 0, 1);
  EXPECT_EQ(shifted[0 * 8 + 6], 1);
  EXPECT_EQ(shifted[0 * 8 + 7], 1);
  EXPECT_EQ(shifted[0 * 8 + 0], 1);
  EXPECT_EQ(shifted[6 * 8 + 0], 0);
  const auto plain = to_dense(plan.mask, 0, 0);
  EXPECT_EQ(plain[0 * 8 + 6], 0);
}

TEST(PatternsSfAttn, MatchesRule) {
  for (const auto& setting : {std::pair{4, 4}, {1, 0}, {3, 70}, {5, 1}}) {
    const int groups = setting.first, sinks = setting.second;  // lambdas capture these
    for (int causal : {1, 0}) {
      for (const auto& c : odd_cases()) {
        const int64_t nk = c.nk, heads = c.heads;
        const int64_t g = (nk + groups - 1) / groups, s = g / 2;
        check_pattern("sf_attn:groups=" + std::to_string(groups) +
                          ",sinks=" + std::to_string(sinks) + ",causal=" + std::to_string(causal),
                      c, [=](int64_t h, int64_t p, int64_t j) {
                        if (p < 0) return false;
                        if (causal && j > p) return false;
                        if (j < sinks || p < sinks) return true;
                        const bool shifted = h >= (heads + 1) / 2;
                        auto group = [&](int64_t u) -> int64_t {
                          if (!shifted) return u / g;
                          return u < s ? -1 : (u - s) / g;
                        };
                        return group(j) == group(p);
                      });
      }
    }
  }
}

TEST(PatternsSfAttn, NoWrapAround) {
  const auto plan = make_pattern("sf_attn:groups=2,sinks=0")->plan(shape_inputs(8, 8, 2));
  const auto shifted = to_dense(plan.mask, 0, 1);
  EXPECT_EQ(shifted[0 * 8 + 6], 0);  // unlike s2attn, position 0 never sees the end
  EXPECT_EQ(shifted[1 * 8 + 0], 1);
  EXPECT_EQ(shifted[2 * 8 + 1], 0);  // 2 starts the group [2, 6)
}

}  // namespace
}  // namespace attnkit::testing
