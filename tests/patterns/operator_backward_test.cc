// The backward of the patterns that are not one block-sparse pass (HyperAttention's merged pieces,
// Routing's clusters and layer norms, SSA's self-ensemble) against central finite differences of
// their own forward through the same plan (the selection held constant), for L = sum dO . O + sum
// dLSE . LSE.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <random>
#include <string>

#include "attnkit/pattern.h"
#include "support/backward_check.h"

namespace attnkit::testing {
namespace {

struct OperatorCase {
  std::string spec;
  bool causal;
  int64_t nq = 130;  // against 150 keys
};

class OperatorBackward : public ::testing::TestWithParam<OperatorCase> {};

TEST_P(OperatorBackward, EqualsFiniteDifferencesThroughThePlan) {
  const OperatorCase& c = GetParam();
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = c.nq, p.nk = 150, p.dim = 8, p.dim_v = 6;
  p.causal = c.causal;
  const auto pattern = make_pattern(c.spec);
  std::unique_ptr<Plan> plan;
  BackwardInputs in = make_backward_inputs(p, true, [&](const AttentionArgs& a) {
    plan = std::make_unique<Plan>(pattern->plan(PlanInputs::of(a)));
    pattern->forward(a, *plan);
  });
  Gradients g = nan_gradients(p);
  pattern->backward(in.args(g), *plan);

  Tensor out({1, p.heads_q, p.nq, p.dim_v}, DType::kF32), lse({1, p.heads_q, p.nq}, DType::kF32);
  auto loss = [&] {
    AttentionArgs a = in.forward;
    a.out = out.view(), a.lse = lse.rows_view();
    pattern->forward(a, *plan);
    double total = 0.0;
    for (int64_t x = 0; x < out.numel(); ++x) total += double(out.f32()[x]) * in.dout.f32()[x];
    for (int64_t x = 0; x < lse.numel(); ++x)
      if (std::isfinite(lse.f32()[x])) total += double(lse.f32()[x]) * in.dlse.f32()[x];
    return total;
  };
  std::mt19937 rng(5);
  const std::pair<Tensor*, const Tensor*> pairs[] = {
      {&in.in.q, &g.dq}, {&in.in.k, &g.dk}, {&in.in.v, &g.dv}};
  const char* names[] = {"dQ", "dK", "dV"};
  for (int x = 0; x < 3; ++x) {
    Tensor& t = *pairs[x].first;
    std::uniform_int_distribution<int64_t> pick(0, t.numel() - 1);
    for (int sample = 0; sample < 60; ++sample) {
      const int64_t e = pick(rng);
      float* value = t.f32() + e;
      const float original = *value, step = 2e-2f;
      *value = original + step;
      const double up = loss();
      *value = original - step;
      const double down = loss();
      *value = original;
      const double numeric = (up - down) / (2.0 * step);
      // f32 forwards: about 1e-5 of noise in L, divided by the 4e-2 step.
      EXPECT_NEAR(pairs[x].second->f32()[e], numeric, 3e-3 + 1e-2 * std::fabs(numeric))
          << names[x] << "[" << e << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Operators, OperatorBackward,
    ::testing::Values(OperatorCase{"hyper:min_seq=64,block=32,samples=16", false},
                      OperatorCase{"hyper:min_seq=64,block=32,samples=16", true},
                      OperatorCase{"routing:clusters=3,window=48,local_block=32", false},
                      OperatorCase{"routing:clusters=3,window=48,local_block=32", true},
                      OperatorCase{"routing:clusters=2,window=60,local_heads=0,logits=raw", true},
                      OperatorCase{"routing:clusters=2,window=80,local_heads=0,share_qk=1", true,
                                   150},
                      OperatorCase{"ssa:ratio=3,block=16,ensemble=3", false},
                      OperatorCase{"ssa:ratio=3,block=16,ensemble=3", true}),
    [](const auto& info) {
      std::string name = info.param.spec;
      for (char& ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return name + (info.param.causal ? "_causal" : "_full");
    });

}  // namespace
}  // namespace attnkit::testing
