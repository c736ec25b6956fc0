// Every registered pattern, found by walking the registry (so a new one cannot go untested): its
// plan is consistent (shapes, token order, what it reads), run() equals the double-precision
// reference restricted to the plan's pairs, and RunStats reports the plan's pairs, in both
// directions, on odd shapes with GQA. The operators that are not one block-sparse pass are
// listed below and checked here only for what every pattern owes (finite outputs, empty rows);
// their own tests judge their outputs.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "support/attention_check.h"
#include "support/backward_check.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

// Patterns whose execute() is not the block-sparse kernel over their plan (weights, averages):
// tested against their own references in tests/patterns/dynamic/.
const std::set<std::string> kOperators = {"hyper", "routing"};

struct WalkCase {
  std::string spec;  // parameters that make the pattern sparse at these small sizes
  Problem problem;   // nq, nk, heads; dims and dtype set below
};

// Small shapes where each pattern is sparse (defaults are for thousands of tokens). A pattern
// not listed here runs at its defaults on a 1-D causal shape: if it cannot, this test says so.
WalkCase walk_case(const std::string& name) {
  const std::map<std::string, std::pair<std::string, std::array<int64_t, 4>>> kCases = {
      // name:           spec suffix                             {nq, nk, Hq, Hkv}
      {"window", {"size=37", {130, 190, 4, 2}}},
      {"dilated", {"size=20,dilation=3", {130, 190, 4, 2}}},
      {"streaming", {"sinks=3,window=29", {130, 190, 4, 2}}},
      {"document", {"lengths=50+31", {130, 190, 4, 2}}},
      {"prefix_lm", {"prefix=70", {150, 150, 4, 2}}},
      {"power", {"block=16,window=2", {130, 190, 4, 2}}},
      {"s2attn", {"groups=3", {150, 150, 4, 2}}},
      {"sf_attn", {"groups=3,sinks=5", {150, 150, 4, 2}}},
      {"ssa", {"ratio=3,block=16", {130, 190, 4, 2}}},
      {"radial", {"frames=13,frame_tokens=16,min_width=2", {208, 208, 2, 1}}},
      {"natten1d", {"kernel=15,dilation=2", {200, 200, 4, 2}}},
      {"natten2d", {"kernel=5", {256, 256, 2, 1}}},
      {"natten3d", {"kernel=3", {512, 512, 2, 1}}},
      {"halo2d", {"block=4,halo=2", {144, 144, 2, 1}}},
      {"topk_oracle", {"budget=2,block=32", {130, 190, 4, 2}}},
      {"infllm_v2",
       {"dense_len=0,kernel=8,stride=4,lse_kernel=16,lse_stride=8,block=16,local=1,topk=4",
        {130, 190, 4, 2}}},
      {"hip", {"k=32,block_q=32,sink=4,window=24", {130, 190, 4, 2}}},
      {"dhsa", {"block=32,budget=48,local=16", {130, 190, 4, 2}}},
      {"hyper", {"min_seq=64,block=32,samples=16", {130, 190, 4, 2}}},
      {"routing", {"clusters=3,window=48,local_block=32", {130, 190, 4, 2}}},
      {"h2o", {"heavy=0.2,recent=0.1", {150, 150, 4, 2}}},
  };
  WalkCase c;
  c.problem.nq = 150, c.problem.nk = 150, c.problem.heads_q = 2, c.problem.heads_kv = 1;
  c.spec = name;
  const auto it = kCases.find(name);
  if (it != kCases.end()) {
    c.spec = name + ":" + it->second.first;
    const auto& s = it->second.second;
    c.problem.nq = s[0], c.problem.nk = s[1], c.problem.heads_q = s[2], c.problem.heads_kv = s[3];
  }
  c.problem.dim = 24, c.problem.dim_v = 20, c.problem.seed = 3;
  return c;
}

TEST(PatternWalk, EveryPatternMatchesTheReferenceOverItsPlan) {
  const auto infos = list_patterns();
  ASSERT_GE(infos.size(), 21u);
  for (const PatternInfo& info : infos) {
    const WalkCase c = walk_case(info.name);
    const auto pattern = make_pattern(c.spec);
    EXPECT_EQ(pattern->family(), info.family) << info.name;
    for (bool causal : {false, true}) {
      Problem p = c.problem;
      p.causal = causal;
      SCOPED_TRACE(c.spec + " " + p.name());
      Inputs in = make_inputs(p);
      AttentionArgs a = in.args();
      a.causal = causal;
      // The plan: what it reads, its shape and its token order.
      const PlanInputs shapes =
          PlanInputs::shapes(1, p.heads_q, p.heads_kv, p.nq, p.nk, p.dim, causal);
      if (info.family == PatternFamily::kDynamic) {
        EXPECT_THROW(pattern->plan(shapes), Error) << "a content planner must refuse missing data";
      } else {
        EXPECT_NO_THROW(pattern->plan(shapes)) << "a static pattern plans from shapes alone";
      }
      const Plan plan = pattern->plan(PlanInputs::of(a));
      ASSERT_NO_THROW(plan.mask.validate());
      EXPECT_EQ(plan.causal, causal);
      EXPECT_EQ(plan.nq(), p.nq);
      EXPECT_EQ(plan.nk(), p.nk);
      const double planned = density(plan);
      EXPECT_GT(planned, 0.0);
      // run(): the pairs come from the kernel's counter.
      const RunStats stats = pattern->run(a);
      EXPECT_GE(stats.seconds, stats.plan_seconds);
      if (kOperators.count(info.name)) {
        // Operators: finite everywhere; a row is empty (O = 0, LSE = -inf) or finite.
        for (int64_t h = 0; h < p.heads_q; ++h)
          for (int64_t i = 0; i < p.nq; ++i) {
            const float lse = *a.lse.row<float>(0, h, i);
            for (int64_t d = 0; d < p.dim_v; ++d) {
              const float o = a.out.get(0, h, i, d);
              ASSERT_TRUE(std::isfinite(o)) << "head " << h << " row " << i;
              if (std::isinf(lse)) {
                ASSERT_EQ(o, 0.0f) << "head " << h << " row " << i;
              }
            }
          }
        continue;
      }
      EXPECT_NEAR(stats.density, planned, 1e-12) << "RunStats must report the plan's pairs";
      AttentionArgs r = a;
      r.out = in.ref_out.view();
      r.lse = in.ref_lse.rows_view();
      attention_reference(r, plan_predicate(plan));
      expect_matches_reference(a, r, c.spec);
    }
  }
}

// Every pattern again in f16 and bf16, with two batch entries (content planners build a mask
// per entry), causal, then without an LSE output (how the model calls --pattern): O must not
// change, bit for bit, when the LSE is not asked for.
TEST(PatternWalk, EveryPatternInHalfPrecisionBatchedAndWithoutLse) {
  for (const PatternInfo& info : list_patterns()) {
    const WalkCase c = walk_case(info.name);
    const auto pattern = make_pattern(c.spec);
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      Problem p = c.problem;
      p.batch = 2, p.dtype = dtype, p.causal = true;
      SCOPED_TRACE(c.spec + " " + p.name());
      Inputs in = make_inputs(p);
      AttentionArgs a = in.args();
      a.causal = true;
      pattern->run(a);
      if (kOperators.count(info.name)) {
        for (int64_t e = 0; e < in.out.numel(); ++e)
          ASSERT_TRUE(std::isfinite(in.out.f32()[e])) << "element " << e;
      } else {
        AttentionArgs r = a;
        r.out = in.ref_out.view();
        r.lse = in.ref_lse.rows_view();
        attention_reference(r, plan_predicate(pattern->plan(PlanInputs::of(a))));
        expect_matches_reference(a, r, c.spec);
      }
      Tensor without = nan_filled({p.batch, p.heads_q, p.nq, p.dim_v});
      AttentionArgs no_lse = a;
      no_lse.out = without.view();
      no_lse.lse = MutableTensorView{};
      pattern->run(no_lse);
      ASSERT_EQ(std::memcmp(without.f32(), in.out.f32(), in.out.bytes()), 0)
          << "O differs when the LSE is not asked for";
    }
  }
}

// Every pattern's backward through the plan of its forward (the selection held constant) equals
// the double reference backward restricted to the plan's pairs, with a dLSE, both directions, in
// f32 and bf16. (The operators are checked by finite differences in operator_backward_test.cc.)
TEST(PatternWalk, EveryPatternDifferentiatesThroughItsPlan) {
  for (const PatternInfo& info : list_patterns()) {
    if (kOperators.count(info.name)) continue;  // finite differences: operator_backward_test.cc
    const WalkCase c = walk_case(info.name);
    const auto pattern = make_pattern(c.spec);
    for (DType dtype : {DType::kF32, DType::kBF16})
      for (bool causal : {false, true}) {
        Problem p = c.problem;
        p.causal = causal, p.dtype = dtype;
        SCOPED_TRACE(c.spec + " " + p.name());
        std::unique_ptr<Plan> plan;
        ElementPredicate rule;
        const auto forward = [&](const AttentionArgs& a) {
          plan = std::make_unique<Plan>(pattern->plan(PlanInputs::of(a)));
          pattern->forward(a, *plan);
          rule = plan_predicate(*plan);
        };
        const auto backward = [&](const BackwardArgs& b) { pattern->backward(b, *plan); };
        check_backward(p, true, forward, backward, [&](int64_t b, int64_t h, int64_t i, int64_t j) {
          return rule(b, h, i, j);
        });
      }
  }
}

// A pattern of one's own whose execute() the block-sparse backward does not describe refuses the
// backward with no_backward(), naming itself.
class ForwardOnly final : public Pattern {
 public:
  explicit ForwardOnly(const PatternParams& params) : Pattern(params, Direction::kCaller) {}
  Plan plan(const PlanInputs& in) const override { return make_pattern("causal")->plan(in); }

 protected:
  void execute_backward(const BackwardArgs&, const Plan&) const override { no_backward(name()); }
};

TEST(PatternWalk, APatternWithoutBackwardSaysSoByName) {
  const PatternInfo info{"forward_only", "test", "none", PatternFamily::kStatic, {}};
  const ForwardOnly pattern(PatternParams(info, {}));
  Problem p;
  p.nq = p.nk = 20;
  const BackwardInputs in =
      make_backward_inputs(p, false, [](const AttentionArgs& a) { attention(a); });
  Gradients g = nan_gradients(p);
  try {
    pattern.backward(in.args(g));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "pattern");
    EXPECT_NE(std::string(e.what()).find("'forward_only' has no backward"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace attnkit::testing
