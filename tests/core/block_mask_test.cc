// BlockMask builders and operations against dense element masks computed here.
#include "attnkit/block_mask.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <tuple>

#include "attnkit/error.h"
#include "support/pattern_check.h"

namespace attnkit::testing {
namespace {

// An irregular rule (a band, a checkerboard corner, an empty stripe), per head.
bool irregular(int64_t h, int64_t i, int64_t j) {
  if (j >= 200 && j < 260) return false;
  if (i > 2 * j + 10 * h) return (i + j) % 3 == 0;
  return std::abs(i - j) < 40 + 30 * h;
}

class IrregularPredicate final : public TilePredicate {
 public:
  void fill(int64_t, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) allow[i * ld + j] = irregular(h, q0 + i, k0 + j);
  }
};

// Checks the tags of every block of list (0, h) against the dense mask.
void expect_exact_tags(const BlockMask& m, int64_t h, const std::vector<uint8_t>& dense) {
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    const int64_t r = m.list(0, h, qb);
    std::vector<int> kind(m.kv_blocks(), 0);
    for (int64_t e = m.row_start[r]; e < m.row_start[r + 1]; ++e)
      kind[m.kv_index[e]] = int(m.kind[e]);
    for (int64_t kb = 0; kb < m.kv_blocks(); ++kb) {
      int64_t allowed = 0, cells = 0;
      for (int64_t i = qb * m.q_block; i < std::min(m.nq, (qb + 1) * m.q_block); ++i)
        for (int64_t j = kb * m.kv_block; j < std::min(m.nk, (kb + 1) * m.kv_block); ++j) {
          allowed += dense[i * m.nk + j];
          ++cells;
        }
      const int want = allowed == 0 ? 0 : allowed == cells ? 1 : 2;
      EXPECT_EQ(kind[kb], want) << "head " << h << " block (" << qb << ", " << kb << ")";
    }
  }
}

TEST(BlockMask, FromPredicateIsExact) {
  for (auto [nq, nk, qbl, kbl] :
       {std::tuple{300, 500, 64, 64}, {65, 33, 16, 32}, {1, 1, 64, 64}, {128, 128, 48, 80}}) {
    const BlockMaskShape shape{nq, nk, 1, 2, qbl, kbl};
    const BlockMask m = block_mask_from_predicate(shape, std::make_shared<IrregularPredicate>());
    ASSERT_NO_THROW(m.validate());
    for (int64_t h = 0; h < 2; ++h) {
      const auto dense = to_dense(m, 0, h);
      int64_t bad = 0, pairs = 0;
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j) {
          bad += dense[i * nk + j] != irregular(h, i, j);
          pairs += irregular(h, i, j);
        }
      EXPECT_EQ(bad, 0) << "head " << h;
      expect_exact_tags(m, h, dense);
      EXPECT_DOUBLE_EQ(allowed_pairs(m, 0, h), double(pairs));
      EXPECT_EQ(allowed(m, 0, h, nq - 1, 0), irregular(h, nq - 1, 0));
    }
  }
}

TEST(BlockMask, FromEntriesKeepsKindsAndValidates) {
  const BlockMaskShape shape{130, 100, 1, 1, 64, 32};  // 3 query blocks, 4 kv blocks
  const auto predicate = std::make_shared<IrregularPredicate>();
  const BlockMask m = block_mask_from_entries(
      shape, predicate,
      {{{0, BlockKind::kFull}, {2, BlockKind::kPartial}}, {}, {{3, BlockKind::kPartial}}});
  EXPECT_EQ(m.row_start, (std::vector<int64_t>{0, 2, 2, 3}));
  EXPECT_EQ(m.kv_index, (std::vector<int32_t>{0, 2, 3}));
  EXPECT_EQ(m.kind,
            (std::vector<BlockKind>{BlockKind::kFull, BlockKind::kPartial, BlockKind::kPartial}));
  // Lists are taken as given: unsorted ones, a wrong list count or PARTIAL entries without a
  // predicate are refused.
  EXPECT_THROW(block_mask_from_entries(shape, predicate,
                                       {{{2, BlockKind::kFull}, {0, BlockKind::kFull}}, {}, {}}),
               Error);
  EXPECT_THROW(block_mask_from_entries(shape, predicate, {{}, {}}), Error);
  EXPECT_THROW(block_mask_from_entries(shape, nullptr, {{{0, BlockKind::kPartial}}, {}, {}}),
               Error);
}

TEST(BlockMask, DensePairsCountsBottomRightCausality) {
  EXPECT_DOUBLE_EQ(dense_pairs(7, 5, false), 35.0);
  for (auto [nq, nk] : {std::pair<int64_t, int64_t>{5, 5}, {3, 9}, {9, 3}, {1, 1}, {64, 1000}}) {
    double pairs = 0.0;
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) pairs += j <= i + nk - nq;
    EXPECT_DOUBLE_EQ(dense_pairs(nq, nk, true), pairs) << nq << " x " << nk;
  }
}

TEST(BlockMask, FromIndices) {
  const BlockMaskShape shape{130, 100, 1, 1, 64, 32};  // 3 query blocks, 4 kv blocks
  const BlockMask m = block_mask_from_indices(shape, {{3, 0, 3}, {}, {1}});
  EXPECT_EQ(m.row_start, (std::vector<int64_t>{0, 2, 2, 3}));
  EXPECT_EQ(m.kv_index, (std::vector<int32_t>{0, 3, 1}));
  for (BlockKind k : m.kind) EXPECT_EQ(k, BlockKind::kFull);
  // The last kv block is 4 keys wide (96..99): a FULL block counts only real keys.
  EXPECT_DOUBLE_EQ(allowed_pairs(m, 0, 0), 64.0 * (32 + 4) + 2.0 * 32);
  EXPECT_EQ(to_ascii(m, 0, 0), "#..#\n....\n.#..\n");
  EXPECT_THROW(block_mask_from_indices(shape, {{4}, {}, {}}), Error);
  EXPECT_THROW(block_mask_from_indices(shape, {{0}, {}}), Error);
}

TEST(BlockMask, ValidateNamesTheProblem) {
  const BlockMaskShape shape{128, 128, 1, 1, 64, 64};
  BlockMask m = block_mask_from_indices(shape, {{0}, {0, 1}});
  EXPECT_NO_THROW(m.validate());
  auto message = [](const BlockMask& bad) {
    try {
      bad.validate();
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "block_mask");
      return std::string(e.what());
    }
    return std::string("no error");
  };
  BlockMask unsorted = m;
  std::swap(unsorted.kv_index[1], unsorted.kv_index[2]);
  EXPECT_NE(message(unsorted).find("not strictly ascending"), std::string::npos);
  BlockMask outside = m;
  outside.kv_index[2] = 2;
  EXPECT_NE(message(outside).find("outside [0, 2)"), std::string::npos);
  BlockMask partial = m;
  partial.kind[0] = BlockKind::kPartial;
  EXPECT_NE(message(partial).find("no tile predicate"), std::string::npos);
  BlockMask rows = m;
  rows.row_start.pop_back();
  EXPECT_NE(message(rows).find("row_start"), std::string::npos);
  BlockMask odd = m;
  odd.q_block = 40;
  EXPECT_NE(message(odd).find("multiple of 16"), std::string::npos);
}

TEST(BlockMask, AndOrMatchElementwise) {
  // window (heads broadcast) with s2attn (per head), on an odd shape.
  const auto args = shape_inputs(150, 333, 2);
  const BlockMask a = make_pattern("window:size=70")->plan(args).mask;
  const BlockMask b = make_pattern("s2attn:groups=3")->plan(args).mask;
  ASSERT_EQ(a.heads, 1);
  ASSERT_EQ(b.heads, 2);
  const BlockMask both = mask_and(a, b), either = mask_or(a, b);
  ASSERT_EQ(both.heads, 2);
  for (int64_t h = 0; h < 2; ++h) {
    const auto da = to_dense(a, 0, 0), db = to_dense(b, 0, h);
    const auto dand = to_dense(both, 0, h), dor = to_dense(either, 0, h);
    int64_t bad = 0;
    for (size_t e = 0; e < da.size(); ++e) {
      bad += dand[e] != (da[e] & db[e]);
      bad += dor[e] != (da[e] | db[e]);
    }
    EXPECT_EQ(bad, 0) << "head " << h;
    // FULL and absent tags stay exact; PARTIAL may be conservative after AND / OR.
    for (const BlockMask* m : {&both, &either}) {
      const auto dense = to_dense(*m, 0, h);
      for (int64_t qb = 0; qb < m->q_blocks(); ++qb) {
        const int64_t r = m->list(0, h, qb);
        for (int64_t kb = 0, e = m->row_start[r]; kb < m->kv_blocks(); ++kb) {
          const bool listed = e < m->row_start[r + 1] && m->kv_index[e] == kb;
          const bool full = listed && m->kind[e] == BlockKind::kFull;
          e += listed;
          int64_t allowed = 0, cells = 0;
          for (int64_t i = qb * 64; i < std::min<int64_t>(150, qb * 64 + 64); ++i)
            for (int64_t j = kb * 64; j < std::min<int64_t>(333, kb * 64 + 64); ++j) {
              allowed += dense[i * 333 + j];
              ++cells;
            }
          if (!listed) {
            EXPECT_EQ(allowed, 0);
          }
          if (full) {
            EXPECT_EQ(allowed, cells);
          }
        }
      }
    }
  }
  const BlockMask other = make_pattern("causal")->plan(shape_inputs(150, 334, 1)).mask;
  EXPECT_THROW(mask_and(a, other), Error);
}

TEST(BlockMask, DensityAndAscii) {
  const BlockMask m = make_pattern("causal")->plan(shape_inputs(192, 192, 1)).mask;
  EXPECT_DOUBLE_EQ(density(m), (192.0 * 193 / 2) / (192.0 * 192));
  EXPECT_DOUBLE_EQ(block_density(m), 6.0 / 9);
  EXPECT_EQ(to_ascii(m, 0, 0), "+..\n#+.\n##+\n");
  const BlockMask big = make_pattern("causal")->plan(shape_inputs(64 * 8, 64 * 8, 1)).mask;
  EXPECT_EQ(to_ascii(big, 0, 0, 4), "+...\n#+..\n##+.\n###+\n");
}

}  // namespace
}  // namespace attnkit::testing
