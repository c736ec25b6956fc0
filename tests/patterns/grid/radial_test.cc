// radial: Radial Attention's mask against the rule of the official code (attn_mask.py), written
// here again from the Python, element for element and block by block, and run() against the
// reference.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>

#include "attnkit/error.h"
#include "support/grid_check.h"

namespace attnkit::testing {
namespace {

struct RadialCase {
  std::string spec;
  int64_t frames, s;
  double decay;
  int64_t min_width;
  bool sink;
};

// get_window_width + get_diagonal_split_mask + the frame-0 sink of gen_log_mask_shrinked (Wan
// only, unless asked), with the dense dist <= 1 band of the paper and the current code (see
// radial.cc).
PairRule naive_radial(const RadialCase& c) {
  return [c](int64_t i, int64_t j) {
    const int64_t fi = i / c.s, k = i % c.s, fj = j / c.s, l = j % c.s;
    if (c.sink && fj == 0) return true;
    const int64_t dist = std::abs(fi - fj);
    const int s_bits = std::bit_width(static_cast<uint64_t>(c.s));
    const int group = std::bit_width(static_cast<uint64_t>(dist));
    const double decay_length = std::pow(2.0, s_bits) / std::pow(2.0, group);
    double width;
    if (dist == 0) {
      width = static_cast<double>(c.s);
    } else if (dist == 1) {
      width = static_cast<double>(c.s);  // a whole frame, for Wan too (current official code)
    } else {
      width = std::max(decay_length * c.decay, static_cast<double>(c.min_width));
    }
    if (static_cast<double>(std::abs(k - l)) > width) return false;
    if (dist <= 1 || decay_length >= c.min_width) return true;
    const int64_t split_factor = static_cast<int64_t>(c.min_width / decay_length);
    return dist % split_factor == 0;
  };
}

std::vector<RadialCase> radial_cases() {
  return {
      {"radial:frames=16,frame_tokens=16,min_width=4", 16, 16, 0.95, 4, false},  // hunyuan: no sink
      {"radial:frames=16,min_width=4,sink=0", 16, 16, 0.95, 4, false},
      {"radial:frames=12,frame_tokens=20,min_width=3,decay=0.2,model=wan", 12, 20, 0.2, 3, true},
      {"radial:frames=9,frame_tokens=7,sink=1", 9, 7, 0.95, 128, true},
      {"radial:frames=30,frame_tokens=50,min_width=8,decay=0.5,sink=1", 30, 50, 0.5, 8, true},
      {"radial:frames=20,frame_tokens=64,min_width=16,model=wan,sink=0", 20, 64, 0.95, 16, false},
  };
}

TEST(RadialPlan, MaskMatchesCodeRule) {
  for (const RadialCase& c : radial_cases()) {
    const Plan plan = make_pattern(c.spec)->plan(grid_inputs(c.frames * c.s));
    expect_plan_matches(plan, naive_radial(c), c.spec);
  }
}

TEST(RadialPlan, BandsThinOutWithFrameDistance) {
  // frame_tokens 16, min_width 4, no sink: distance 2..3 keeps |k - l| <= 7, 4..7 keeps <= 4,
  // 8..15 keeps <= 4 on even distances only.
  RadialCase c{"radial:frames=16,min_width=4,sink=0", 16, 16, 0.95, 4, false};
  const std::vector<uint8_t> dense = to_dense(make_pattern(c.spec)->plan(grid_inputs(256)), 0, 0);
  auto seen = [&](int64_t fi, int64_t fj) {
    int64_t n = 0;
    for (int64_t k = 0; k < 16; ++k)
      for (int64_t l = 0; l < 16; ++l) n += dense[(fi * 16 + k) * 256 + fj * 16 + l];
    return n;
  };
  EXPECT_EQ(seen(0, 1), 256);
  EXPECT_LT(seen(0, 3), 256);
  EXPECT_LT(seen(0, 5), seen(0, 3));
  EXPECT_GT(seen(0, 8), 0);
  EXPECT_EQ(seen(0, 9), 0);
  EXPECT_EQ(seen(15, 0), 0);  // no sink
}

TEST(RadialPlan, ErrorsNamePattern) {
  for (const char* spec : {"radial", "radial:frames=10,frame_tokens=11", "radial:decay=0",
                           "radial:frames=10,model=sora"}) {
    try {
      make_pattern(spec)->plan(grid_inputs(100));
      ADD_FAILURE() << spec << " should fail on 100 tokens";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "pattern") << spec;
    }
  }
}

// The defaults follow the current official code: HunyuanVideo has no sink (removed in 2f61c30),
// Wan keeps frame 0; both see their neighbouring frames whole. Bidirectional by its own rule.
TEST(RadialPlan, OfficialDefaultsPerModel) {
  const int64_t n = 16 * 128;
  const auto frame_pairs = [&](const std::string& spec, int64_t fi, int64_t fj) {
    const std::vector<uint8_t> dense = to_dense(make_pattern(spec)->plan(grid_inputs(n)), 0, 0);
    int64_t seen = 0;
    for (int64_t k = 0; k < 128; ++k)
      for (int64_t l = 0; l < 128; ++l) seen += dense[(fi * 128 + k) * n + fj * 128 + l];
    return seen;
  };
  EXPECT_EQ(frame_pairs("radial", 15, 0), 0);  // no sink, and distance 15 is skipped
  EXPECT_EQ(frame_pairs("radial:model=wan", 15, 0), 128 * 128);
  EXPECT_EQ(frame_pairs("radial:model=wan", 7, 6), 128 * 128);
  EXPECT_EQ(make_pattern("radial")->direction(), Direction::kBidirectional);
}

TEST(RadialRun, MatchesReference) {
  for (const RadialCase& c : radial_cases()) {
    if (c.frames * c.s > 1000) continue;
    Problem p;
    p.batch = 1, p.heads_q = 2, p.heads_kv = 2, p.nq = p.nk = c.frames * c.s;
    p.dim = 32, p.dim_v = 32, p.seed = 5;
    expect_run_matches(c.spec, p, naive_radial(c));
  }
}

}  // namespace
}  // namespace attnkit::testing
