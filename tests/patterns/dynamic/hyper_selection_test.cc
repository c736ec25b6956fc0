// hyper's selection (samples = 0: the LSH-sorted block diagonal) against a slow reference
// written from the rule in hyper.cc: projections P ~ N(0, 1)^{d x r} drawn in order from
// std::mt19937_64(seed) (the rule's "fixed by seed", so the same P); hash = rank in reflected
// Gray-code order of the sign bits of x . P_i (dot products in double here); queries and keys
// of each hashed call stably sorted by hash; sorted keys [c block, (c + 1) block) meet sorted
// queries [c nq / nb, (c + 1) nq / nb); calls: one non-causal call, or for causal n x n the
// recursion causal(n) = exact if n <= min_seq, else causal(first half), causal(second half) and
// non_causal(second-half queries, first-half keys), where a non-causal call with fewer than
// min_seq queries is exact. The plan's element set must equal the reference's exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

struct Hyper {
  int64_t projs, block, min_seq;
  uint64_t seed;
};

uint32_t rank_of(const TensorView& x, int64_t b, int64_t h, int64_t i, const std::vector<float>& P,
                 int64_t projs) {
  uint32_t code = 0;
  for (int64_t r = 0; r < projs; ++r) {
    double dot = 0.0;
    for (int64_t c = 0; c < x.shape[3]; ++c) dot += double(x.get(b, h, i, c)) * P[c * projs + r];
    code |= uint32_t(dot > 0.0) << r;
  }
  uint32_t rank = 0;  // the r with gray(r) = r ^ (r >> 1) = code
  while ((rank ^ (rank >> 1)) != code) ++rank;
  return rank;
}

// Marks the pairs of one call in allowed[i * nk + j].
void mark_call(const Hyper& hp, const TensorView& q, const TensorView& k, int64_t b, int64_t h,
               int64_t group, const std::vector<float>& P, int64_t q0, int64_t nq, int64_t k0,
               int64_t nk, bool exact_causal, std::vector<char>* allowed) {
  const int64_t all_keys = k.shape[2];
  if (nq <= 0 || nk <= 0) return;
  if (exact_causal || nq < hp.min_seq) {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j)
        if (!exact_causal || j <= i) (*allowed)[(q0 + i) * all_keys + k0 + j] = 1;
    return;
  }
  auto sorted = [&](const TensorView& x, int64_t head, int64_t first, int64_t n) {
    std::vector<uint32_t> rank(n);
    for (int64_t r = 0; r < n; ++r) rank[r] = rank_of(x, b, head, first + r, P, hp.projs);
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t c) { return rank[a] < rank[c]; });
    return order;
  };
  const std::vector<int64_t> qs = sorted(q, h, q0, nq), ks = sorted(k, h / group, k0, nk);
  const int64_t nb = (nk + hp.block - 1) / hp.block;
  for (int64_t c = 0; c < nb; ++c)
    for (int64_t r = c * nq / nb; r < (c + 1) * nq / nb; ++r)
      for (int64_t s = c * hp.block; s < std::min(nk, (c + 1) * hp.block); ++s)
        (*allowed)[(q0 + qs[r]) * all_keys + k0 + ks[s]] = 1;
}

void mark_causal(const Hyper& hp, const TensorView& q, const TensorView& k, int64_t b, int64_t h,
                 int64_t group, const std::vector<float>& P, int64_t q0, int64_t k0, int64_t n,
                 std::vector<char>* allowed) {
  if (n <= hp.min_seq) return mark_call(hp, q, k, b, h, group, P, q0, n, k0, n, true, allowed);
  const int64_t half = n / 2;
  mark_causal(hp, q, k, b, h, group, P, q0, k0, half, allowed);
  mark_causal(hp, q, k, b, h, group, P, q0 + half, k0 + half, n - half, allowed);
  mark_call(hp, q, k, b, h, group, P, q0 + half, n - half, k0, half, false, allowed);
}

void check_selection(const Hyper& hp, int64_t nq, int64_t nk, bool causal) {
  Problem p;
  p.batch = 2, p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.dim = 16;
  p.seed = static_cast<uint64_t>(nq + 11 * nk);
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = causal;
  const std::string spec =
      "hyper:projs=" + std::to_string(hp.projs) + ",block=" + std::to_string(hp.block) +
      ",samples=0,min_seq=" + std::to_string(hp.min_seq) + ",seed=" + std::to_string(hp.seed);
  const ElementPredicate planned = plan_predicate(make_pattern(spec)->plan(PlanInputs::of(a)));
  std::mt19937_64 rng(hp.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> P(p.dim * hp.projs);
  for (float& x : P) x = normal(rng);
  const int64_t group = p.heads_q / p.heads_kv;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h) {
      std::vector<char> allowed(nq * nk, 0);
      if (!causal) {
        mark_call(hp, in.q.view(), in.k.view(), b, h, group, P, 0, nq, 0, nk, false, &allowed);
      } else {
        ASSERT_EQ(nq, nk) << "the test covers square causal problems";
        mark_causal(hp, in.q.view(), in.k.view(), b, h, group, P, 0, 0, nq, &allowed);
      }
      int64_t mismatches = 0;
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j)
          if (bool(allowed[i * nk + j]) != planned(b, h, i, j) && mismatches++ < 3)
            ADD_FAILURE() << spec << (causal ? " causal" : "") << " b" << b << " h" << h
                          << " pair (" << i << ", " << j << "): reference "
                          << int(allowed[i * nk + j]);
      ASSERT_EQ(mismatches, 0);
    }
}

TEST(HyperSelection, SortedBlockDiagonalEqualsTheSlowReference) {
  check_selection({7, 32, 64, 1}, 300, 300, false);
  check_selection({5, 16, 48, 9}, 200, 330, false);  // Nq != Nk
  check_selection({7, 32, 64, 3}, 400, 400, true);   // the causal recursion, two levels
}

}  // namespace
}  // namespace attnkit::testing
