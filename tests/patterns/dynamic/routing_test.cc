// routing (Routing Transformer): one cluster is dense attention; in general each query's output
// is the mean over its clusters of the reference restricted to that cluster's keys (causal by
// original positions) and its LSE the largest; balanced membership; the plan's pairs.
// Head split: the first local_heads query heads equal the reference under the local-block rule
// (own block + previous local_block keys, causal), the routing heads are untouched by the split;
// the default split (floor(Hq / 2)) on GQA shapes, in run() and plan().
#include "patterns/dynamic/routing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

TEST(PlannerRouting, OneClusterIsDenseAttention) {
  for (bool causal : {true, false}) {
    Problem p;
    p.heads_q = 2, p.heads_kv = 1, p.nq = 150, p.nk = 150, p.dim = 16, p.causal = causal;
    check_problem(p, [](const AttentionArgs& a) {
      make_pattern("routing:clusters=1,window=1000,local_heads=0,logits=raw")->run(a);
    });
  }
}

TEST(PlannerRouting, MatchesPerClusterReferenceAveraged) {
  for (bool causal : {true, false}) {
    for (auto [nq, nk] : {std::pair<int64_t, int64_t>{200, 200}, {90, 260}}) {
      Problem p;
      p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
      Inputs in = make_inputs(p);
      AttentionArgs a = in.args();
      a.causal = causal;
      dynamic_patterns::RoutingParams rp;
      rp.clusters = 4, rp.window = 64, rp.iters = 3;
      const auto clusters = dynamic_patterns::route(PlanInputs::of(a), rp);
      make_pattern("routing:clusters=4,window=64,iters=3,local_heads=0,logits=raw")->run(a);
      // Expected: per cluster, the reference over that cluster's keys, for its queries.
      std::vector<double> sum(p.heads_q * nq * p.dim_v, 0.0);
      std::vector<int> count(p.heads_q * nq, 0);
      std::vector<float> best(p.heads_q * nq, -std::numeric_limits<float>::infinity());
      for (int64_t c = 0; c < 4; ++c) {
        AttentionArgs r = a;
        r.out = in.ref_out.view();
        r.lse = in.ref_lse.rows_view();
        attention_reference(r, [&](int64_t, int64_t h, int64_t, int64_t j) {
          const auto& keys = clusters[h].keys[c];
          return std::binary_search(keys.begin(), keys.end(), static_cast<int32_t>(j));
        });
        for (int64_t h = 0; h < p.heads_q; ++h) {
          EXPECT_EQ(static_cast<int64_t>(clusters[h].queries[c].size()), std::min<int64_t>(64, nq));
          EXPECT_EQ(static_cast<int64_t>(clusters[h].keys[c].size()), std::min<int64_t>(64, nk));
          for (int32_t i : clusters[h].queries[c]) {
            ++count[h * nq + i];
            for (int64_t x = 0; x < p.dim_v; ++x)
              sum[(h * nq + i) * p.dim_v + x] += in.ref_out.view().get(0, h, i, x);
            best[h * nq + i] = std::max(best[h * nq + i], in.ref_lse.f32()[h * nq + i]);
          }
        }
      }
      int64_t failures = 0;
      for (int64_t h = 0; h < p.heads_q; ++h)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t row = h * nq + i;
          const float got_lse = in.lse.f32()[row];
          if (std::isinf(best[row])) {
            failures += !(std::isinf(got_lse) && got_lse < 0);
          } else {
            failures += !(std::fabs(got_lse - best[row]) <= 1e-4f * (1 + std::fabs(best[row])));
          }
          for (int64_t x = 0; x < p.dim_v; ++x) {
            const double want = count[row] ? sum[row * p.dim_v + x] / count[row] : 0.0;
            failures += !(std::fabs(in.out.view().get(0, h, i, x) - want) <= 1e-4);
          }
        }
      EXPECT_EQ(failures, 0) << p.name() << (causal ? " causal" : "");
    }
  }
}

TEST(PlannerRouting, PlanPairsAreTheClusterProducts) {
  Problem p;
  p.heads_q = 1, p.heads_kv = 1, p.nq = 130, p.nk = 130, p.dim = 8;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  const auto plan =
      make_pattern("routing:clusters=3,window=40,local_heads=0")->plan(PlanInputs::of(a));
  dynamic_patterns::RoutingParams rp;
  rp.clusters = 3, rp.window = 40;
  const auto clusters = dynamic_patterns::route(PlanInputs::of(a), rp);
  const auto dense = to_dense(plan.mask, 0, 0);
  for (int64_t i = 0; i < 130; ++i)
    for (int64_t j = 0; j < 130; ++j) {
      bool expect = false;
      for (int c = 0; c < 3; ++c)
        expect |=
            std::binary_search(clusters[0].queries[c].begin(), clusters[0].queries[c].end(), i) &&
            std::binary_search(clusters[0].keys[c].begin(), clusters[0].keys[c].end(), j);
      ASSERT_EQ(dense[i * 130 + j] != 0, expect) << i << "," << j;
    }
}

// The local heads' rule, written independently of routing.cc: position pos = i + Nk - Nq,
// block start floor(pos / L) * L, keys [start - L, start + L) (the reference ANDs causality).
bool local_allowed(int64_t nq, int64_t nk, int64_t block, int64_t i, int64_t j) {
  const int64_t start =
      static_cast<int64_t>(std::floor(double(i + nk - nq) / double(block))) * block;
  return j >= start - block && j < start + block;
}

// Runs `spec` on `in` (outputs in in.out / in.lse) and returns the stats.
RunStats run_spec(const std::string& spec, Inputs& in, bool causal) {
  AttentionArgs a = in.args();
  a.causal = causal;
  return make_pattern(spec)->run(a);
}

TEST(PlannerRouting, LocalHeadsMatchLocalBlockReferenceRoutingHeadsUnchanged) {
  struct Shape {
    int64_t batch, hq, hkv, nq, nk, local, block;
  };
  // Local head counts that split a GQA group (3 of 2x2), all heads, none; blocks that are not
  // multiples of the 64-token tile; Nq < Nk and single-row shapes.
  const Shape shapes[] = {{2, 4, 2, 200, 200, 3, 48}, {1, 4, 2, 90, 260, 3, 32},
                          {1, 3, 1, 1, 65, 2, 16},    {1, 2, 2, 63, 63, 2, 16},
                          {1, 4, 1, 7, 1000, 1, 256}, {1, 2, 1, 1000, 1000, 1, 256},
                          {1, 2, 1, 65, 65, 0, 16}};
  for (const Shape& sh : shapes)
    for (bool causal : {true, false}) {
      Problem p;
      p.batch = sh.batch, p.heads_q = sh.hq, p.heads_kv = sh.hkv, p.nq = sh.nq, p.nk = sh.nk;
      p.dim = p.dim_v = 16;
      Inputs in = make_inputs(p);
      const std::string routing = "routing:clusters=2,window=32,iters=2";
      // Pure routing first: its routing heads are what the split must keep.
      run_spec(routing + ",local_heads=0", in, causal);
      const std::vector<float> pure_out(in.out.f32(), in.out.f32() + in.out.view().numel());
      const std::vector<float> pure_lse(in.lse.f32(), in.lse.f32() + p.batch * p.heads_q * p.nq);
      const std::string spec = routing + ",local_heads=" + std::to_string(sh.local) +
                               ",local_block=" + std::to_string(sh.block);
      const RunStats stats = run_spec(spec, in, causal);
      AttentionArgs r = in.args();
      r.causal = causal;
      r.out = in.ref_out.view();
      r.lse = in.ref_lse.rows_view();
      attention_reference(r, [&](int64_t, int64_t, int64_t i, int64_t j) {
        return local_allowed(p.nq, p.nk, sh.block, i, j);
      });
      int64_t failures = 0;
      double local_pairs = 0.0;
      for (int64_t b = 0; b < p.batch; ++b)
        for (int64_t h = 0; h < p.heads_q; ++h)
          for (int64_t i = 0; i < p.nq; ++i) {
            const int64_t row = (b * p.heads_q + h) * p.nq + i;
            const float got_lse = in.lse.f32()[row];
            if (h < sh.local) {
              for (int64_t j = 0; j < p.nk; ++j)
                local_pairs +=
                    local_allowed(p.nq, p.nk, sh.block, i, j) && (!causal || j <= i + p.nk - p.nq);
              const float want_lse = in.ref_lse.f32()[row];
              failures +=
                  std::isinf(want_lse)
                      ? !(std::isinf(got_lse) && got_lse < 0)
                      : !(std::fabs(got_lse - want_lse) <= 1e-4f * (1 + std::fabs(want_lse)));
              for (int64_t x = 0; x < p.dim_v; ++x)
                failures += !(std::fabs(in.out.view().get(b, h, i, x) -
                                        in.ref_out.view().get(b, h, i, x)) <= 1e-4f);
            } else {
              failures +=
                  !(got_lse == pure_lse[row] || (std::isinf(got_lse) && std::isinf(pure_lse[row])));
              for (int64_t x = 0; x < p.dim_v; ++x)
                failures += in.out.view().get(b, h, i, x) != pure_out[row * p.dim_v + x];
            }
          }
      EXPECT_EQ(failures, 0) << p.name() << " " << spec << (causal ? " causal" : "");
      if (sh.local == p.heads_q) {
        EXPECT_DOUBLE_EQ(stats.pairs, local_pairs / double(p.batch * p.heads_q)) << p.name();
      }
    }
}

TEST(PlannerRouting, DefaultSplitIsHalfTheQueryHeadsOnGqa) {
  // Hq = 6, Hkv = 3 (groups of 2): the default makes heads 0..2 local, splitting group 1.
  Problem p;
  p.heads_q = 6, p.heads_kv = 3, p.nq = 130, p.nk = 130, p.dim = p.dim_v = 8;
  Inputs in = make_inputs(p);
  const std::string base = "routing:clusters=3,window=40,local_block=32";
  EXPECT_NE(make_pattern(base)->spec().find("local_heads=-1"), std::string::npos);
  run_spec(base + ",local_heads=3", in, true);
  const std::vector<float> explicit_out(in.out.f32(), in.out.f32() + in.out.view().numel());
  const std::vector<float> explicit_lse(in.lse.f32(), in.lse.f32() + 6 * 130);
  run_spec(base, in, true);
  EXPECT_EQ(std::vector<float>(in.out.f32(), in.out.f32() + in.out.view().numel()), explicit_out);
  EXPECT_EQ(std::vector<float>(in.lse.f32(), in.lse.f32() + 6 * 130), explicit_lse);
  // No row of a local head is left without output (routing alone would leave some).
  for (int64_t h = 0; h < 3; ++h)
    for (int64_t i = 0; i < 130; ++i)
      EXPECT_FALSE(std::isinf(in.lse.f32()[h * 130 + i])) << h << "," << i;
  // plan(): per-head lists, local pairs for heads 0..2, cluster products for 3..5.
  AttentionArgs a = in.args();
  const auto plan = make_pattern(base)->plan(PlanInputs::of(a));
  EXPECT_EQ(plan.mask.heads, 6);
  dynamic_patterns::RoutingParams rp;
  rp.clusters = 3, rp.window = 40;
  const auto clusters = dynamic_patterns::route(PlanInputs::of(a), rp);
  for (int64_t h = 0; h < 6; ++h) {
    const auto dense = to_dense(plan.mask, 0, h);
    int64_t failures = 0;
    for (int64_t i = 0; i < 130; ++i)
      for (int64_t j = 0; j < 130; ++j) {
        bool expect = false;
        if (h < 3) {
          expect = local_allowed(130, 130, 32, i, j);
        } else {
          const auto& c = clusters[h];
          for (int x = 0; x < 3; ++x)
            expect |= std::binary_search(c.queries[x].begin(), c.queries[x].end(), i) &&
                      std::binary_search(c.keys[x].begin(), c.keys[x].end(), j);
        }
        failures += (dense[i * 130 + j] != 0) != expect;
      }
    EXPECT_EQ(failures, 0) << "head " << h;
  }
}

// logits=ln (the official routing heads): one cluster is dense attention over layer-normalised
// q and k (no gain or bias, eps 1e-6) with no 1/sqrt(d) scale.
TEST(PlannerRouting, LayerNormLogitsAreTheOfficialFunction) {
  for (bool causal : {true, false}) {
    Problem p;
    p.heads_q = 2, p.heads_kv = 1, p.nq = 120, p.nk = 120, p.dim = 16, p.causal = causal;
    Inputs in = make_inputs(p);
    AttentionArgs a = in.args();
    a.causal = causal;
    make_pattern("routing:clusters=1,window=1000,local_heads=0")->run(a);
    // The reference on layer-normalised copies of q and k, scale 1.
    const auto normalised = [](const Tensor& x) {
      Tensor y = x.to(DType::kF32);
      const int64_t dim = x.shape()[3], rows = x.numel() / dim;
      for (int64_t r = 0; r < rows; ++r) {
        float* row = y.f32() + r * dim;
        double mean = 0.0, var = 0.0;
        for (int64_t c = 0; c < dim; ++c) mean += row[c];
        mean /= dim;
        for (int64_t c = 0; c < dim; ++c) var += (row[c] - mean) * (row[c] - mean);
        var /= dim;
        for (int64_t c = 0; c < dim; ++c) row[c] = float((row[c] - mean) / std::sqrt(var + 1e-6));
      }
      return y;
    };
    const Tensor qn = normalised(in.q), kn = normalised(in.k);
    AttentionArgs r = a;
    r.q = qn.view(), r.k = kn.view(), r.scale = 1.0f;
    r.out = in.ref_out.view();
    r.lse = in.ref_lse.rows_view();
    attention_reference(r);
    AttentionArgs got = a;
    got.q = qn.view(), got.k = kn.view(), got.scale = 1.0f;  // the tolerance of these logits
    expect_matches_reference(got, r, std::string("logits=ln") + (causal ? " causal" : ""));
  }
}

// share_qk=1 (the official decoder): the keys are the queries; one cluster is dense attention of
// Q against itself, values V. Nq != Nk is refused.
TEST(PlannerRouting, SharedQueryKeys) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 100, p.nk = 100, p.dim = 16, p.causal = true;
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  make_pattern("routing:clusters=1,window=1000,local_heads=0,logits=raw,share_qk=1")->run(a);
  for (int64_t h = 0; h < 2; ++h) {
    // Head h's keys are its own queries: reference with K = Q of that head.
    Tensor q_head({1, 1, 100, 16}, DType::kF32);
    for (int64_t i = 0; i < 100; ++i)
      for (int64_t c = 0; c < 16; ++c) q_head.f32()[i * 16 + c] = in.q.view().get(0, h, i, c);
    Tensor out({1, 1, 100, 64}, DType::kF32), lse({1, 1, 100}, DType::kF32);
    AttentionArgs r;
    r.q = q_head.view(), r.k = q_head.view(), r.v = in.v.view(), r.out = out.view();
    r.lse = lse.rows_view();
    r.causal = true;
    attention_reference(r);
    for (int64_t i = 0; i < 100; ++i)
      for (int64_t c = 0; c < 64; ++c)
        ASSERT_NEAR(in.out.view().get(0, h, i, c), out.view().get(0, 0, i, c), 1e-4)
            << "head " << h << " row " << i;
  }
  Problem q = p;
  q.nk = 130;
  Inputs other = make_inputs(q);
  EXPECT_THROW(make_pattern("routing:share_qk=1")->run(other.args()), Error);
}

// Bounded work: clusters beyond the keys, or routed pairs beyond 16 x the dense pairs, are
// refused at planning time with an error naming the pattern (formerly minutes of k-means).
TEST(PlannerRouting, RefusesUnboundedWork) {
  Problem p;
  p.heads_q = 1, p.heads_kv = 1, p.nq = 256, p.nk = 256, p.dim = 16;
  Inputs in = make_inputs(p);
  for (const char* spec : {"routing:clusters=100000", "routing:clusters=256,window=256"}) {
    try {
      make_pattern(spec)->run(in.args());
      ADD_FAILURE() << spec << " should be refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "pattern") << spec;
    }
  }
  EXPECT_NO_THROW(make_pattern("routing:clusters=16,window=64")->run(in.args()));
}

}  // namespace
}  // namespace attnkit::testing
