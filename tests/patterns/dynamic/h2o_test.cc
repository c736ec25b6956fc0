// h2o (the teacher-forced H2O mask): each row's key set equals the official rule run by brute force
// in double (full softmax rows, a top-k per row, the accumulator masked to the selection); the
// output equals the reference on the plan; the budgets' extremes; nq != nk is an error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "attnkit/error.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

// keep[t][j] of query head h by the rule of local_heavy_hitter_mask, literally.
std::vector<std::vector<char>> brute_force_keep(Inputs& in, int64_t h, double heavy,
                                                double recent) {
  const TensorView q = in.q.view(), k = in.k.view();
  const int64_t T = q.shape[2], dim = q.shape[3], g = h / (q.shape[1] / k.shape[1]);
  const int64_t hb = static_cast<int64_t>(heavy * T), rb = static_cast<int64_t>(recent * T);
  std::vector<std::vector<double>> p(T, std::vector<double>(T, 0.0));
  for (int64_t t = 0; t < T; ++t) {
    double top = -1e300, sum = 0.0;
    std::vector<double> s(t + 1);
    for (int64_t j = 0; j <= t; ++j) {
      double dot = 0.0;
      for (int64_t c = 0; c < dim; ++c) dot += double(q.get(0, h, t, c)) * k.get(0, g, j, c);
      s[j] = dot / std::sqrt(double(dim));
      top = std::max(top, s[j]);
    }
    for (int64_t j = 0; j <= t; ++j) sum += std::exp(s[j] - top);
    for (int64_t j = 0; j <= t; ++j) p[t][j] = std::exp(s[j] - top) / sum;
  }
  std::vector<std::vector<char>> keep(T, std::vector<char>(T, 0));
  std::vector<double> acc(T, 0.0);
  for (int64_t t = 0; t < std::min(hb, T); ++t)
    for (int64_t j = 0; j < hb; ++j) {
      keep[t][j] = j <= t;
      acc[j] += p[t][j];
    }
  for (int64_t t = hb; t < T; ++t) {
    std::vector<char> sel(T, 0);
    if (hb >= 1) {
      // topk(acc, hb - 1), ties to the lower index; then {t}.
      std::vector<int64_t> order(T);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return acc[a] > acc[b]; });
      for (int64_t r = 0; r < hb - 1; ++r) sel[order[r]] = 1;
      sel[t] = 1;
    }
    for (int64_t j = 0; j < T; ++j) acc[j] = sel[j] ? acc[j] + p[t][j] : 0.0;
    for (int64_t j = 0; j <= t; ++j) keep[t][j] = sel[j] || t - rb <= j;
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < T; ++j) keep[t][j] = keep[t][j] && j <= t;
  return keep;
}

TEST(PatternH2o, KeySetsEqualTheRuleByBruteForce) {
  for (auto [T, heavy, recent] : std::vector<std::tuple<int64_t, double, double>>{{64, 0.1, 0.1},
                                                                                  {50, 0.2, 0.05},
                                                                                  {37, 0.5, 0.0},
                                                                                  {200, 0.1, 0.1},
                                                                                  {64, 0.0, 0.2},
                                                                                  {64, 1.0, 0.0}}) {
    Problem p;
    p.heads_q = 4, p.heads_kv = 2, p.nq = T, p.nk = T, p.dim = 32, p.magnitude = 1.5f;
    Inputs in = make_inputs(p);
    const auto pattern =
        make_pattern("h2o:heavy=" + std::to_string(heavy) + ",recent=" + std::to_string(recent));
    PlanInputs pi = PlanInputs::shapes(1, p.heads_q, p.heads_kv, T, T, p.dim, true);
    pi.q = in.q.view(), pi.k = in.k.view();
    const Plan plan = pattern->plan(pi);
    for (int64_t h = 0; h < p.heads_q; ++h) {
      const auto want = brute_force_keep(in, h, heavy, recent);
      const std::vector<uint8_t> got = to_dense(plan.mask, 0, h);
      int mismatches = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j <= t; ++j)
          if (bool(got[t * T + j]) != bool(want[t][j]) && mismatches++ < 5)
            ADD_FAILURE() << "T " << T << " heavy " << heavy << " h " << h << " row " << t
                          << " key " << j << ": mask " << int(got[t * T + j]) << ", rule "
                          << int(want[t][j]);
      // With heavy = 1 every row keeps every key.
      if (heavy == 1.0) {
        for (int64_t t = 0; t < T; ++t) EXPECT_TRUE(got[t * T + t / 2]) << t;
      }
    }
  }
}

TEST(PatternH2o, OutputMatchesReferenceOnItsPlan) {
  for (bool causal : {true, false}) {
    Problem p;
    p.heads_q = 4, p.heads_kv = 2, p.nq = 300, p.nk = 300, p.dim = 48, p.dim_v = 40;
    Inputs in = make_inputs(p);
    expect_pattern_matches_reference("h2o:heavy=0.1,recent=0.1", in, causal, p.name());
  }
}

TEST(PatternH2o, NeedsOneSequence) {
  Problem p;
  p.nq = 10, p.nk = 20;
  Inputs in = make_inputs(p);
  PlanInputs pi = PlanInputs::shapes(1, 1, 1, 10, 20, p.dim, true);
  pi.q = in.q.view(), pi.k = in.k.view();
  try {
    make_pattern("h2o")->plan(pi);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "pattern");
  }
  EXPECT_THROW(make_pattern("h2o:heavy=1.5"), Error);
}

}  // namespace
}  // namespace attnkit::testing
