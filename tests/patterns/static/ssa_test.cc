// SSA (stochastically subsampled attention): the sample is random, so the checks are on its
// declared structure, recovered from the mask itself: causal; per pattern block, the kept key
// blocks are whole blocks, the diagonal is always kept, exactly ceil((a+1)/ratio) are kept; the
// sample is a pure function of the seed; and it is locally biased.
#include <gtest/gtest.h>

#include <map>
#include <set>

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
  for (auto [ratio, block] : {std::pair{4, 64}, {1, 64}, {8, 16}, {3, 7}, {2, 100}}) {
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

}  // namespace
}  // namespace attnkit::testing
