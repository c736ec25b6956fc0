// End to end: each static pattern's Pattern::run (plan + block-sparse kernel) against the scalar
// reference restricted by the pattern's own element predicate, on odd shapes with GQA.
#include <gtest/gtest.h>

#include "attnkit/pattern.h"
#include "support/attention_check.h"

namespace attnkit::testing {
namespace {

TEST(PatternsAttention, RunMatchesReference) {
  const char* specs[] = {"causal",
                         "window:size=40",
                         "dilated:size=9,dilation=5",
                         "streaming:sinks=3,window=50",
                         "document:lengths=37+90",
                         "prefix_lm:prefix=70",
                         "power:block=32,window=2",
                         "s2attn:groups=3",
                         "sf_attn:groups=3,sinks=5",
                         "ssa:ratio=2,block=32,seed=4"};
  const Problem problems[] = {{1, 4, 2, 100, 130, 32, 32},
                              {1, 2, 1, 150, 97, 16, 24},
                              {2, 3, 3, 1, 200, 32, 32},
                              {1, 2, 2, 260, 260, 64, 64}};
  for (const char* spec : specs) {
    for (Problem p : problems) {
      SCOPED_TRACE(spec);
      const auto pattern = make_pattern(spec);
      Inputs in = make_inputs(p);
      AttentionArgs a = in.args();
      const RunStats stats = pattern->run(a);
      const Plan plan = pattern->plan(PlanInputs::of(a));
      EXPECT_GT(stats.density, 0.0);
      EXPECT_NEAR(stats.density, density(plan.mask), 1e-12);
      const BlockMask& mask = plan.mask;
      // The kernel's pair count (per (batch, head) slice) against a brute-force count of the
      // pattern's element predicate over every slice.
      double pairs = 0;
      for (int64_t b = 0; b < p.batch; ++b)
        for (int64_t h = 0; h < p.heads_q; ++h)
          for (int64_t i = 0; i < p.nq; ++i)
            for (int64_t j = 0; j < p.nk; ++j) {
              uint8_t allow = 0;
              mask.predicate->fill(b, h, i, 1, j, 1, &allow, 1);
              pairs += allow != 0;
            }
      EXPECT_DOUBLE_EQ(stats.pairs, pairs / double(p.batch * p.heads_q));
      AttentionArgs r = a;
      r.out = in.ref_out.view();
      r.lse = in.ref_lse.rows_view();
      attention_reference(r, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
        uint8_t allow = 0;  // the pattern's own element predicate, one element at a time
        mask.predicate->fill(b, h, i, 1, j, 1, &allow, 1);
        return allow != 0;
      });
      expect_matches_reference(a, r, std::string(spec) + " " + p.name());
    }
  }
}

TEST(PatternsAttention, ArgsCausalIsAndedIn) {
  // Non-causal rules run with args.causal: the kernel ANDs causality in, and RunStats counts
  // only the pairs the kernel attended.
  for (const char* spec : {"s2attn:groups=3,causal=0", "sf_attn:groups=2,sinks=3,causal=0"}) {
    for (Problem p : {Problem{1, 4, 2, 90, 130, 32, 32}, Problem{1, 2, 2, 130, 130, 16, 16}}) {
      SCOPED_TRACE(spec);
      p.causal = true;
      const auto pattern = make_pattern(spec);
      Inputs in = make_inputs(p);
      AttentionArgs a = in.args();
      a.causal = true;
      const RunStats stats = pattern->run(a);
      const BlockMask mask = pattern->plan(PlanInputs::of(a)).mask;
      EXPECT_NEAR(stats.density, density(mask, true), 1e-12);
      EXPECT_LT(stats.density, density(mask, false));
      // The pair count is cached per shape and causality: a non-causal run counts more.
      a.causal = false;
      EXPECT_NEAR(pattern->run(a).density, density(mask, false), 1e-12);
      a.causal = true;
      EXPECT_EQ(pattern->run(a).density, stats.density);
      AttentionArgs r = a;
      r.out = in.ref_out.view();
      r.lse = in.ref_lse.rows_view();
      attention_reference(r, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
        uint8_t allow = 0;
        mask.predicate->fill(b, h, i, 1, j, 1, &allow, 1);
        return allow != 0;
      });
      expect_matches_reference(a, r, std::string(spec) + " " + p.name());
    }
  }
}

TEST(PatternsAttention, CombinedMasksRun) {
  // AND / OR of a shared mask and a per-head one, through the kernel, with GQA.
  const Problem p{1, 4, 2, 140, 200, 32, 32};
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  const BlockMask window = make_pattern("window:size=50")->plan(PlanInputs::of(a)).mask;
  const BlockMask shifted = make_pattern("s2attn:groups=3")->plan(PlanInputs::of(a)).mask;
  for (const BlockMask& mask : {mask_and(window, shifted), mask_or(window, shifted)}) {
    attention(a, mask);
    AttentionArgs r = a;
    r.out = in.ref_out.view();
    r.lse = in.ref_lse.rows_view();
    attention_reference(
        r, [&](int64_t b, int64_t h, int64_t i, int64_t j) { return allowed(mask, b, h, i, j); });
    expect_matches_reference(a, r, "combined " + p.name());
  }
}

}  // namespace
}  // namespace attnkit::testing
