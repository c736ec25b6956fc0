// ACT: the closed-form merge against the official procedure on the explicit map (reference), on
// inputs with planted sinks; beta = 1 is the identity; rows that see no sink are unchanged; the
// first sink is never calibrated; given sinks are used as they are; bad options are errors.
#include "attnkit/act.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attnkit/error.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

using testing::Problem;

// Inputs whose keys 0, 3, 9 and Nk - 2 (when present) align with a direction every query shares,
// so that they draw far more than their share of attention: sinks. Under causality key Nk - 2 is
// seen by two rows only: its column mean counts only them.
testing::Inputs sink_inputs(const Problem& p) {
  testing::Inputs in = testing::make_inputs(p);
  Tensor q = in.q.to(DType::kF32), k = in.k.to(DType::kF32);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = 0; i < p.nq; ++i) q.view().set(b, h, i, 0, q.view().get(b, h, i, 0) + 8.0f);
    for (int64_t g = 0; g < p.heads_kv; ++g)
      for (int64_t j : {int64_t{0}, int64_t{3}, int64_t{9}, p.nk - 2})
        if (j >= 0 && j < p.nk) k.view().set(b, g, j, 0, 5.0f + 0.5f * float(j % 4));
  }
  in.q = q.to(p.dtype), in.k = k.to(p.dtype);
  return in;
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& label) {
  int64_t bad = 0;
  for (int64_t x = 0; x < got.numel(); ++x)
    if (!(std::fabs(double(got.f32()[x]) - want.f32()[x]) <= tol) && bad++ < 5)
      ADD_FAILURE() << label << " [" << x << "] " << got.f32()[x] << " vs " << want.f32()[x];
  EXPECT_EQ(bad, 0) << label;
}

TEST(Act, MatchesTheOfficialProcedure) {
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (bool causal : {false, true})
      for (auto [nq, nk] : {std::pair<int64_t, int64_t>{50, 50}, {130, 130}, {3, 1200}}) {
        Problem p;
        p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 32, p.dim_v = 24;
        p.dtype = dtype, p.causal = causal;
        testing::Inputs in = sink_inputs(p);
        AttentionArgs a = in.args(), r = in.args();
        a.causal = r.causal = causal;
        r.out = in.ref_out.view(), r.lse = {};
        const auto sinks = attention_act(a);
        const auto want = attention_act_reference(r);
        const std::string label = p.name();
        EXPECT_EQ(sinks, want) << label;
        bool found = false;
        for (const auto& s : sinks) found |= !s.empty();
        EXPECT_TRUE(found) << label << ": the planted sinks are detected";
        for (const auto& s : sinks)
          for (int32_t j : s) EXPECT_NE(j, 0) << label << ": the first sink stays";
        expect_close(in.out, in.ref_out, 2e-5, label);
      }
}

TEST(Act, BetaOneIsTheIdentityAndUnseenSinksChangeNothing) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 80, p.nk = 80, p.causal = true;
  testing::Inputs in = sink_inputs(p), plain = sink_inputs(p);
  AttentionArgs a = in.args(), b = plain.args();
  a.causal = b.causal = true;
  attention(b);
  ActOptions identity;
  identity.beta = 1.0f;
  attention_act(a, identity);
  for (int64_t x = 0; x < in.out.numel(); ++x) ASSERT_EQ(in.out.f32()[x], plain.out.f32()[x]);
  // A given sink at key 40: rows 0..39 cannot see it and keep their outputs bit for bit.
  ActOptions given;
  given.sinks = {{40}, {40}};
  EXPECT_EQ(attention_act(a, given), given.sinks);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 80; ++i)
      for (int64_t d = 0; d < p.dim_v; ++d) {
        const float got = in.out.view().get(0, h, i, d), was = plain.out.view().get(0, h, i, d);
        if (i < 40) {
          ASSERT_EQ(got, was) << h << "," << i;
        }
      }
  // Rows that see it changed.
  EXPECT_NE(in.out.view().get(0, 0, 79, 0), plain.out.view().get(0, 0, 79, 0));
}

TEST(Act, BadOptionsAreErrorsNamingThem) {
  Problem p;
  p.heads_q = 2, p.nq = 4, p.nk = 6;
  testing::Inputs in = testing::make_inputs(p);
  auto error_of = [&](const ActOptions& o) {
    try {
      attention_act(in.args(), o);
    } catch (const Error& e) {
      return e.argument();
    }
    return std::string("none");
  };
  ActOptions o;
  EXPECT_EQ(error_of(o), "none");
  o.tau = 0.0f;
  EXPECT_EQ(error_of(o), "tau");
  o = {}, o.beta = 1.5f;
  EXPECT_EQ(error_of(o), "beta");
  o = {}, o.sinks = {{1}};
  EXPECT_EQ(error_of(o), "sinks");
  o = {}, o.sinks = {{3, 1}, {}};
  EXPECT_EQ(error_of(o), "sinks");
  o = {}, o.sinks = {{6}, {}};
  EXPECT_EQ(error_of(o), "sinks");
}

}  // namespace
}  // namespace attnkit
