// The 1-D static patterns against straightforward per-element rules written here, independently
// of src/patterns: causal, window, dilated, streaming, document, prefix_lm, power.
#include <gtest/gtest.h>

#include "support/pattern_check.h"

namespace attnkit::testing {
namespace {

TEST(PatternsCausal, MatchesRule) {
  for (const auto& c : odd_cases())
    check_pattern("causal", c, [](int64_t, int64_t p, int64_t j) { return j <= p; });
}

TEST(PatternsCausal, BottomRightAlignment) {
  // 3 queries over 5 keys: query 0 is at position 2 and sees keys 0..2.
  const auto plan = make_pattern("causal")->plan(shape_inputs(3, 5, 1));
  const std::vector<uint8_t> want = {1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1};
  EXPECT_EQ(to_dense(plan.mask, 0, 0), want);
  // 5 queries over 3 keys: the first two rows precede every key.
  const auto wide = make_pattern("causal")->plan(shape_inputs(5, 3, 1));
  const std::vector<uint8_t> want_wide = {0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1};
  EXPECT_EQ(to_dense(wide.mask, 0, 0), want_wide);
}

TEST(PatternsWindow, MatchesRule) {
  for (int64_t w : {1, 5, 64, 100, 2000}) {
    for (const auto& c : odd_cases())
      check_pattern("window:size=" + std::to_string(w), c,
                    [w](int64_t, int64_t p, int64_t j) { return j <= p && j > p - w; });
  }
}

TEST(PatternsDilated, MatchesRule) {
  for (auto [w, r] : {std::pair{1, 1}, {4, 3}, {16, 2}, {7, 64}, {3, 100}, {50, 1}}) {
    for (const auto& c : odd_cases())
      check_pattern(
          "dilated:size=" + std::to_string(w) + ",dilation=" + std::to_string(r), c,
          [w = w, r = r](int64_t, int64_t p, int64_t j) {
            return j <= p && (p - j) % r == 0 && (p - j) / r < w;
          },
          /*exact_partial=*/false);
  }
}

TEST(PatternsStreaming, MatchesRule) {
  for (auto [s, w] : {std::pair{4, 64}, {0, 10}, {70, 30}, {1, 1}, {4, 512}}) {
    for (const auto& c : odd_cases())
      check_pattern(
          "streaming:sinks=" + std::to_string(s) + ",window=" + std::to_string(w), c,
          [s = s, w = w](int64_t, int64_t p, int64_t j) { return j <= p && (j < s || j > p - w); });
  }
}

TEST(PatternsDocument, MatchesRule) {
  for (std::string lengths : {"100", "1", "30+200+7", "64+64+128", "5000"}) {
    for (const auto& c : odd_cases()) {
      // Document id of each key, walking the lengths cyclically.
      std::vector<int64_t> lens;
      for (size_t at = 0; at < lengths.size();) {
        size_t plus = lengths.find('+', at);
        if (plus == std::string::npos) plus = lengths.size();
        lens.push_back(std::stoll(lengths.substr(at, plus - at)));
        at = plus + 1;
      }
      std::vector<int64_t> doc(c.nk);
      int64_t id = 0, left = lens[0];
      for (int64_t j = 0; j < c.nk; ++j) {
        if (left == 0) {
          ++id;
          left = lens[id % lens.size()];
        }
        doc[j] = id;
        --left;
      }
      check_pattern("document:lengths=" + lengths, c, [&doc](int64_t, int64_t p, int64_t j) {
        return p >= 0 && j <= p && doc[j] == doc[p];
      });
    }
  }
}

TEST(PatternsPrefixLm, MatchesRule) {
  for (int64_t prefix : {0, 1, 64, 100, 5000}) {
    for (const auto& c : odd_cases())
      check_pattern(
          "prefix_lm:prefix=" + std::to_string(prefix), c,
          [prefix](int64_t, int64_t p, int64_t j) { return p >= 0 && (j < prefix || j <= p); });
  }
}

TEST(PatternsPower, MatchesAlgorithm1) {
  for (auto [b, w] : {std::pair{256, 5}, {16, 2}, {7, 1}, {1, 3}, {50, 0}, {64, 5}}) {
    for (const auto& c : odd_cases())
      check_pattern("power:block=" + std::to_string(b) + ",window=" + std::to_string(w), c,
                    [b = b, w = w](int64_t, int64_t p, int64_t j) {
                      if (p < 0 || j > p) return false;
                      const int64_t d = p / b - j / b;
                      return j < b || d < w || (d & (d - 1)) == 0;
                    });
  }
}

TEST(PatternsPower, DefaultsAtLengthMatchThePaper) {
  // 32k tokens = 128 blocks of 256: the last query block keeps 1 sink + 5 window + distances
  // 8, 16, 32, 64 (the paper's ~10 blocks per query block).
  const auto plan = make_pattern("power")->plan(shape_inputs(32768, 32768, 1));
  const BlockMask& m = plan.mask;
  const int64_t r = m.list(0, 0, m.q_blocks() - 1);
  EXPECT_EQ(m.row_start[r + 1] - m.row_start[r], 4 * (1 + 5 + 4));  // 64-wide tiles, 4 per block
  EXPECT_EQ(make_pattern("power")->spec(), "power:block=256,window=5");
}

}  // namespace
}  // namespace attnkit::testing
