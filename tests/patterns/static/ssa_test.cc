// SSA (stochastically subsampled attention): the sample is random, so the checks are on its
// declared structure, recovered from the mask itself: causal; per pattern block, the kept key
// blocks are whole blocks, the diagonal is always kept, exactly ceil((a+1)/ratio) are kept; the
// sample is a pure function of the seed; and it is locally biased.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "support/attention_check.h"
#include "support/pattern_check.h"

namespace attnkit::testing {
namespace {

// Kept key blocks of pattern block a, read off the mask at the last position of the block that
// exists (where causality cuts nothing but the diagonal block's tail).
std::set<int64_t> kept_blocks(const std::vector<uint8_t>& dense, int64_t nq, int64_t nk,
                              int64_t block, int64_t a) {
  const int64_t p = std::min(nk - 1, (a + 1) * block - 1);
  const int64_t i = p - (nk - nq);
  std::set<int64_t> kept;
  for (int64_t j = 0; j <= p; ++j)
    if (dense[i * nk + j]) kept.insert(j / block);
  return kept;
}

TEST(PatternsSsa, StructureOnOddShapes) {
  for (const auto& setting : {std::pair{4, 64}, {1, 64}, {8, 16}, {3, 17}, {2, 100}}) {
    const int ratio = setting.first, block = setting.second;  // lambdas capture these
    const std::string spec =
        "ssa:ratio=" + std::to_string(ratio) + ",seed=5,block=" + std::to_string(block);
    for (const auto& c : odd_cases()) {
      SCOPED_TRACE(spec + " nq=" + std::to_string(c.nq) + " nk=" + std::to_string(c.nk));
      const auto plan = make_pattern(spec)->plan(shape_inputs(c.nq, c.nk, c.heads));
      const std::vector<uint8_t> dense = to_dense(plan.mask, 0, 0);
      const int64_t off = c.nk - c.nq;
      // Kept sets per pattern block, with the declared size and the diagonal.
      std::map<int64_t, std::set<int64_t>> kept;
      for (int64_t i = 0; i < c.nq; ++i) {
        const int64_t p = i + off;
        if (p < 0) continue;
        const int64_t a = p / block;
        if (kept.count(a)) continue;
        kept[a] = kept_blocks(dense, c.nq, c.nk, block, a);
        EXPECT_EQ(int64_t(kept[a].size()), (a + 1 + ratio - 1) / ratio) << "block " << a;
        EXPECT_TRUE(kept[a].count(a)) << "diagonal block " << a << " not kept";
      }
      // Every element follows "j <= p and block(j) kept by block(p)", checked by the shared
      // harness (elements, block tags, tiles, pair counts).
      check_pattern(spec, c, [&](int64_t, int64_t p, int64_t j) {
        return p >= 0 && j <= p && kept[p / block].count(j / block) > 0;
      });
    }
  }
}

TEST(PatternsSsa, SeedDeterminesTheSample) {
  const auto args = shape_inputs(2048, 2048, 1);
  const auto a = to_dense(make_pattern("ssa:seed=1")->plan(args).mask, 0, 0);
  const auto b = to_dense(make_pattern("ssa:seed=1")->plan(args).mask, 0, 0);
  const auto c = to_dense(make_pattern("ssa:seed=2")->plan(args).mask, 0, 0);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(PatternsSsa, LocallyBiased) {
  // Mean distance of the drawn (non-diagonal) blocks against the uniform draw's a/2.
  const int64_t n = 64 * 256;
  const auto plan = make_pattern("ssa:ratio=4,seed=3")->plan(shape_inputs(n, n, 1));
  const BlockMask& m = plan.mask;
  double distance = 0.0, uniform = 0.0;
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    const int64_t r = m.list(0, 0, qb);
    for (int64_t e = m.row_start[r]; e < m.row_start[r + 1]; ++e) {
      if (m.kv_index[e] == qb) continue;
      distance += qb - m.kv_index[e];
      uniform += (qb + 1) / 2.0;
    }
  }
  ASSERT_GT(uniform, 0.0);
  EXPECT_LT(distance / uniform, 0.7);
  EXPECT_GT(distance / uniform, 0.05);  // but not just a window
}

// ensemble=R (the paper's self-ensemble inference): O is the mean of the R single-sample runs
// with seeds seed..seed+R-1, LSE the log of their mean mass; the plan shows the union of the
// samples, and the pairs are those of all R passes.
TEST(PatternsSsa, EnsembleAveragesIndependentSamples) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 300, p.nk = 300, p.dim = 16, p.dim_v = 16;
  Inputs in = make_inputs(p);
  const int64_t rows = 2 * 300;
  std::vector<double> mean_o(rows * 16, 0.0), mass(rows, 0.0);
  double pairs = 0.0;
  std::vector<uint8_t> union_mask(300 * 300, 0);
  for (int64_t r = 0; r < 3; ++r) {
    const auto single = make_pattern("ssa:ratio=4,block=16,seed=" + std::to_string(7 + r));
    const RunStats stats = single->run(in.args());
    pairs += stats.pairs;
    for (int64_t e = 0; e < rows * 16; ++e) mean_o[e] += in.out.f32()[e] / 3.0;
    for (int64_t e = 0; e < rows; ++e) mass[e] += std::exp(double(in.lse.f32()[e])) / 3.0;
    const auto dense = to_dense(single->plan(shape_inputs(300, 300, 2)), 0, 0);
    for (size_t e = 0; e < dense.size(); ++e) union_mask[e] |= dense[e];
  }
  const auto ensemble = make_pattern("ssa:ratio=4,block=16,seed=7,ensemble=3");
  const RunStats stats = ensemble->run(in.args());
  for (int64_t e = 0; e < rows * 16; ++e) ASSERT_NEAR(in.out.f32()[e], mean_o[e], 1e-6) << e;
  for (int64_t e = 0; e < rows; ++e) ASSERT_NEAR(in.lse.f32()[e], std::log(mass[e]), 1e-5) << e;
  EXPECT_NEAR(stats.pairs, pairs, 1e-6);
  EXPECT_EQ(to_dense(ensemble->plan(shape_inputs(300, 300, 2)), 0, 0), union_mask);
  EXPECT_GT(stats.density, density(ensemble->plan(shape_inputs(300, 300, 2))));  // overlaps
}

}  // namespace
}  // namespace attnkit::testing
