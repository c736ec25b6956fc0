// The block-sparse kernel walking hand-made masks (random lists, FULL and PARTIAL entries, per-head
// or shared lists, several block sizes, AND causal) against the reference with the same predicate.
#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <random>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "support/attention_check.h"
#include "support/random_mask.h"

namespace attnkit {
namespace {

using testing::hashed_allow;
using testing::mask_rule;
using testing::MaskCase;
using testing::Problem;
using testing::random_mask;

// Pairs the mask's rule allows (AND causal): what the kernels' attended_pairs must count.
int64_t rule_pairs(const BlockMask& mask, const Problem& p) {
  const ElementPredicate rule = mask_rule(mask);
  int64_t pairs = 0;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = 0; i < p.nq; ++i)
        for (int64_t j = 0; j < p.nk; ++j)
          pairs += rule(b, h, i, j) && (!p.causal || j <= i + p.nk - p.nq);
  return pairs;
}

// attention(args, mask) against the reference under the mask's rule, and the kernel's count of
// attended pairs equal to the rule's.
void check_with_count(const Problem& p, const BlockMask& mask) {
  int64_t counted = 0;
  testing::check_problem(
      p,
      [&](const AttentionArgs& a) {
        AttentionArgs with_count = a;
        with_count.attended_pairs = &counted;
        attention(with_count, mask);
      },
      mask_rule(mask));
  EXPECT_EQ(counted, rule_pairs(mask, p));
}

std::vector<MaskCase> cases() {
  const std::vector<std::array<int64_t, 7>> shapes = {
      // batch, heads_q, heads_kv, nq, nk, q_block, kv_block
      {1, 1, 1, 1, 1, 64, 64},      {1, 2, 1, 65, 65, 64, 64},    {1, 3, 1, 200, 130, 32, 16},
      {1, 4, 2, 63, 1000, 16, 64},  {1, 2, 2, 300, 300, 128, 48}, {1, 8, 1, 129, 257, 64, 128},
      {2, 4, 2, 150, 170, 32, 16},   // per-batch lists
      {1, 2, 1, 600, 600, 256, 64},  // q_block > 128: several work items per query block
  };
  std::vector<MaskCase> out = testing::mask_sweep(shapes, {DType::kF32, DType::kF16, DType::kBF16});
  // PARTIAL blocks of scattered keys, which the kernel gathers into packed blocks: 16- and
  // 64-key blocks, ragged ends, shared and per-head lists, a causal diagonal inside them.
  const std::vector<std::array<int64_t, 7>> sparse_shapes = {
      {1, 3, 1, 200, 130, 32, 16}, {1, 4, 2, 63, 1000, 16, 64}, {1, 2, 1, 130, 700, 64, 16},
      {2, 4, 2, 150, 170, 32, 32}};
  for (const MaskCase& c : testing::mask_sweep(sparse_shapes, {DType::kF32, DType::kBF16}, 80,
                                               0.9, true))
    out.push_back(c);
  return out;
}

class BlockSparseKernel : public ::testing::TestWithParam<MaskCase> {};

TEST_P(BlockSparseKernel, MatchesReferenceWithTheMaskRule) {
  const MaskCase& c = GetParam();
  std::mt19937 rng(7);
  const BlockMask mask = random_mask(c, rng);
  check_with_count(c.problem, mask);
}

INSTANTIATE_TEST_SUITE_P(Sweep, BlockSparseKernel, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           const MaskCase& c = info.param;
                           return c.problem.name() + "_qb" + std::to_string(c.q_block) + "_kb" +
                                  std::to_string(c.kv_block) + (c.per_head ? "_perhead" : "") +
                                  (c.per_batch ? "_perbatch" : "") + (c.sparse ? "_sparse" : "");
                         });

// Sparse decode: masks of one query block (random FULL and PARTIAL entries, lists shared or per
// head, so that a block may be FULL for one head of a GQA group, PARTIAL for another and absent
// for a third) run on the split-key decode kernel over the union of each group's blocks; the
// result and the pair count equal the reference's.
std::vector<MaskCase> decode_cases() {
  const std::vector<std::array<int64_t, 7>> shapes = {
      // batch, heads_q, heads_kv, nq, nk, q_block, kv_block
      {1, 1, 1, 1, 1, 64, 64},   {1, 9, 3, 1, 4100, 64, 64}, {2, 4, 2, 16, 3000, 16, 48},
      {1, 2, 1, 5, 700, 64, 16}, {1, 4, 4, 1, 200, 32, 64},  {1, 6, 2, 3, 9000, 128, 128}};
  return testing::mask_sweep(shapes, {DType::kF32, DType::kF16, DType::kBF16}, 64, 0.3);
}

class BlockSparseDecode : public ::testing::TestWithParam<MaskCase> {};

TEST_P(BlockSparseDecode, WalksTheListedBlocksLikeTheReference) {
  const MaskCase& c = GetParam();
  std::mt19937 rng(11);
  const BlockMask mask = random_mask(c, rng);
  testing::Inputs probe = testing::make_inputs(c.problem);
  ASSERT_TRUE(decode_can_walk(probe.args(), mask));
  check_with_count(c.problem, mask);
}

INSTANTIATE_TEST_SUITE_P(Sweep, BlockSparseDecode, ::testing::ValuesIn(decode_cases()),
                         [](const auto& info) {
                           const MaskCase& c = info.param;
                           return c.problem.name() + "_kb" + std::to_string(c.kv_block) +
                                  (c.per_head ? "_perhead" : "");
                         });

// More than 16 queries, or more than one query block, keep the tile kernel.
TEST(BlockSparseDecode, OnlyOneBlockMasksOfFewQueriesWalk) {
  MaskCase c;
  c.problem.heads_q = 4, c.problem.heads_kv = 2, c.problem.nq = 16, c.problem.nk = 500;
  c.q_block = 16, c.kv_block = 64, c.per_head = true, c.keep = 0.5;
  std::mt19937 rng(3);
  testing::Inputs in = testing::make_inputs(c.problem);
  EXPECT_TRUE(decode_can_walk(in.args(), random_mask(c, rng)));
  c.problem.nq = 17;
  testing::Inputs longer = testing::make_inputs(c.problem);
  EXPECT_FALSE(decode_can_walk(longer.args(), random_mask(c, rng)));  // two query blocks
  c.q_block = 32;
  EXPECT_FALSE(decode_can_walk(longer.args(), random_mask(c, rng)));  // 17 queries
}

// A mask whose entries are all PARTIAL but allow everything equals the dense result.
class AllowAll : public TilePredicate {
 public:
  void fill(int64_t, int64_t, int64_t, int64_t nq, int64_t, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) allow[i * ld + j] = 1;
  }
};

TEST(BlockSparseKernel, AllPartialAllowingEverythingEqualsDense) {
  Problem p;
  p.heads_q = 2, p.nq = 150, p.nk = 170, p.causal = true;
  testing::Inputs dense = testing::make_inputs(p), sparse = testing::make_inputs(p);
  BlockMask m;
  m.nq = p.nq, m.nk = p.nk, m.predicate = std::make_shared<AllowAll>();
  m.row_start.push_back(0);
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    for (int32_t kb = 0; kb < m.kv_blocks(); ++kb) {
      m.kv_index.push_back(kb);
      m.kind.push_back(BlockKind::kPartial);
    }
    m.row_start.push_back(static_cast<int64_t>(m.kv_index.size()));
  }
  AttentionArgs a = dense.args(), b = sparse.args();
  a.causal = b.causal = true;
  attention(a);
  attention(b, m);
  for (int64_t i = 0; i < dense.out.numel(); ++i)
    ASSERT_EQ(dense.out.f32()[i], sparse.out.f32()[i]);
}

TEST(BlockSparseKernel, RejectsAMaskOfAnotherSize) {
  Problem p;
  p.nq = 10, p.nk = 20;
  testing::Inputs in = testing::make_inputs(p);
  BlockMask m;
  m.nq = 11, m.nk = 20;
  m.row_start = {0, 0};
  EXPECT_THROW(attention(in.args(), m), Error);
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// A rule that ignores the head and says so: the kernel fills one tile for the whole GQA group.
class HeadFreePredicate : public TilePredicate {
 public:
  explicit HeadFreePredicate(bool sparse = false) : sparse_(sparse) {}
  void fill(int64_t, int64_t, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j)
        allow[i * ld + j] = testing::partial_allow(sparse_, 0, q0 + i, k0 + j);
  }
  bool same_for_all_heads() const override { return true; }

 private:
  bool sparse_;
};

// The group's tile shares one head's bytes; with `sparse` the kernel gathers the picked keys.
void check_head_free_rule(bool sparse, int64_t kv_block) {
  Problem p;
  p.heads_q = 8, p.heads_kv = 2, p.nq = 131, p.nk = 203, p.causal = true;
  BlockMask m;
  m.nq = p.nq, m.nk = p.nk, m.predicate = std::make_shared<HeadFreePredicate>(sparse);
  m.q_block = 32, m.kv_block = kv_block;
  m.row_start.push_back(0);
  for (int64_t qb = 0; qb < m.q_blocks(); ++qb) {
    for (int32_t kb = 0; kb < m.kv_blocks(); ++kb) {
      m.kv_index.push_back(kb);
      m.kind.push_back((qb + kb) % 3 ? BlockKind::kPartial : BlockKind::kFull);
    }
    m.row_start.push_back(static_cast<int64_t>(m.kv_index.size()));
  }
  const ElementPredicate rule = [&m, sparse](int64_t, int64_t, int64_t i, int64_t j) {
    const bool full = (i / m.q_block + j / m.kv_block) % 3 == 0;
    return full || testing::partial_allow(sparse, 0, i, j);
  };
  testing::check_problem(
      p, [&](const AttentionArgs& a) { attention(a, m); }, rule);
}

// Lists written once per query head but equal within each GQA group (as InfLLM-V2 writes them):
// the group's heads share a tile, and the per-head predicate still decides each head's rows.
TEST(BlockSparseKernel, ListsRepeatedPerHeadShareATile) {
  for (bool sparse : {false, true})
    for (bool causal : {false, true})
      for (int64_t kv_block : {16, 64}) {
        MaskCase c;
        c.problem.heads_q = 6, c.problem.heads_kv = 2, c.problem.nq = 130, c.problem.nk = 300;
        c.problem.dim = 40, c.problem.dim_v = 24, c.problem.causal = causal;
        c.q_block = 64, c.kv_block = kv_block, c.per_head = true, c.keep = 0.7;
        c.sparse = sparse;
        std::mt19937 rng(11);
        BlockMask mask = random_mask(c, rng);
        // Head h takes the lists of its group's first head.
        BlockMask shared = mask;
        shared.row_start = {0}, shared.kv_index.clear(), shared.kind.clear();
        for (int64_t h = 0; h < mask.heads; ++h)
          for (int64_t qb = 0; qb < mask.q_blocks(); ++qb) {
            const int64_t from = mask.list(0, h - h % 3, qb);
            for (int64_t e = mask.row_start[from]; e < mask.row_start[from + 1]; ++e) {
              shared.kv_index.push_back(mask.kv_index[e]);
              shared.kind.push_back(mask.kind[e]);
            }
            shared.row_start.push_back(static_cast<int64_t>(shared.kv_index.size()));
          }
        SCOPED_TRACE("sparse " + std::to_string(sparse) + " causal " + std::to_string(causal) +
                     " kv_block " + std::to_string(kv_block));
        check_with_count(c.problem, shared);
      }
}

TEST(BlockSparseKernel, HeadFreeRuleSharedAcrossTheGroup) { check_head_free_rule(false, 32); }

TEST(BlockSparseKernel, HeadFreeSparseRuleGathersThePickedKeys) {
  check_head_free_rule(true, 16);
  check_head_free_rule(true, 48);
}

}  // namespace
}  // namespace attnkit
