// dhsa's chunk scoring and selection against a slow float64 reference written from the rule in
// dhsa.cc: with the chunk boundaries B (dhsa_boundaries, tested on their own in dhsa_test.cc),
//   q_repr[i] = mean over query heads and rows of query block i of q, times sqrt(rows);
//   k_repr[c] = mean over kv heads and tokens of chunk c of k, times sqrt(|c|);
//   S[i, c] = q_repr[i] . k_repr[c], every token of chunk c scoring S[i, c];
//   sel(i) = the last `local` keys visible at the block's last row, plus the `budget - local`
//            best other visible tokens (ties: the earlier chunk, and within the chunk at the
//            cut, the latest tokens).
// The planner's key set of each query block, read through its plan's predicate, must equal the
// reference's, except for tokens whose chunks tie with the cut to f32 rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "patterns/dynamic/dhsa.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

void check_selection(int64_t nq, int64_t nk, int64_t block, int64_t budget, int64_t local,
                     bool causal) {
  Problem p;
  p.batch = 2, p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
  p.seed = static_cast<uint64_t>(nq + 3 * nk);
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = causal;
  const std::string spec = "dhsa:block=" + std::to_string(block) +
                           ",budget=" + std::to_string(budget) + ",local=" + std::to_string(local);
  const PlanInputs inputs = PlanInputs::of(a);
  const ElementPredicate planned = plan_predicate(make_pattern(spec)->plan(inputs));
  dynamic_patterns::DhsaBoundaryParams bp;
  bp.local = local;
  const TensorView q = in.q.view(), k = in.k.view();
  for (int64_t b = 0; b < p.batch; ++b) {
    const std::vector<int64_t> bounds = dynamic_patterns::dhsa_boundaries(inputs, b, bp);
    const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
    std::vector<std::vector<double>> k_repr(chunks, std::vector<double>(p.dim, 0.0));
    std::vector<int64_t> chunk_of(nk);
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t len = bounds[c + 1] - bounds[c];
      for (int64_t j = bounds[c]; j < bounds[c + 1]; ++j) {
        chunk_of[j] = c;
        for (int64_t g = 0; g < p.heads_kv; ++g)
          for (int64_t x = 0; x < p.dim; ++x)
            k_repr[c][x] += k.get(b, g, j, x) / double(p.heads_kv * len) * std::sqrt(double(len));
      }
    }
    for (int64_t q0 = 0; q0 < nq; q0 += block) {
      const int64_t q1 = std::min(nq, q0 + block), rows = q1 - q0;
      const int64_t last = causal ? std::min(nk - 1, q1 - 1 + nk - nq) : nk - 1;
      if (last < 0) continue;
      std::vector<double> q_repr(p.dim, 0.0);
      for (int64_t h = 0; h < p.heads_q; ++h)
        for (int64_t i = q0; i < q1; ++i)
          for (int64_t x = 0; x < p.dim; ++x)
            q_repr[x] += q.get(b, h, i, x) / double(p.heads_q * rows) * std::sqrt(double(rows));
      std::vector<double> score(chunks, 0.0);
      for (int64_t c = 0; c < chunks; ++c)
        for (int64_t x = 0; x < p.dim; ++x) score[c] += q_repr[x] * k_repr[c][x];
      const int64_t local_start = std::max<int64_t>(0, last + 1 - local);
      std::set<int64_t> expected;
      for (int64_t j = local_start; j <= last; ++j) expected.insert(j);
      std::vector<int64_t> others;
      for (int64_t j = 0; j < local_start; ++j) others.push_back(j);
      std::sort(others.begin(), others.end(), [&](int64_t x, int64_t y) {
        const int64_t cx = chunk_of[x], cy = chunk_of[y];
        if (score[cx] != score[cy]) return score[cx] > score[cy];
        return cx != cy ? cx < cy : x > y;
      });
      const int64_t left = std::max<int64_t>(0, budget - (last + 1 - local_start));
      const int64_t take = std::min<int64_t>(left, others.size());
      for (int64_t n = 0; n < take; ++n) expected.insert(others[n]);
      const double cut =
          take > 0 && take < int64_t(others.size()) ? score[chunk_of[others[take - 1]]] : 0.0;
      const double slack = 1e-4 * std::fabs(cut) + 1e-6;
      std::set<int64_t> chosen;
      for (int64_t j = 0; j < nk; ++j)
        if (planned(b, 0, q0, j)) chosen.insert(j);
      const std::string where = spec + " b" + std::to_string(b) + " block at " + std::to_string(q0);
      ASSERT_EQ(chosen.size(), expected.size()) << where;
      for (int64_t j : chosen) {
        if (!expected.count(j)) {
          ASSERT_GE(score[chunk_of[j]], cut - slack) << where << ": key " << j << " chosen";
        }
      }
      for (int64_t j : expected) {
        if (!chosen.count(j)) {
          ASSERT_LE(score[chunk_of[j]], cut + slack) << where << ": key " << j << " left out";
        }
      }
      // The heads share the selection.
      for (int64_t h = 1; h < p.heads_q; ++h)
        for (int64_t j = 0; j < nk; j += 7) ASSERT_EQ(planned(b, h, q0, j), planned(b, 0, q0, j));
    }
  }
}

TEST(DhsaSelection, ChunkScoresAndTopTokensEqualTheSlowReference) {
  check_selection(300, 300, 16, 96, 16, true);
  check_selection(200, 500, 32, 160, 32, true);
  check_selection(256, 256, 16, 64, 16, false);
  check_selection(400, 400, 64, 64, 64, true);  // budget = local: nothing else
}

}  // namespace
}  // namespace attnkit::testing
