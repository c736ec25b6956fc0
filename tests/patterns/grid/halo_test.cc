// halo2d: HaloNet blocked local attention against a rule written here, the plan in token and in
// box order, and run() against the reference.
#include <gtest/gtest.h>

#include "attnkit/error.h"
#include "patterns/grid/grid_pattern.h"
#include "support/grid_check.h"

namespace attnkit::testing {
namespace {

// Query (y, x) belongs to block (y / block, x / block); it sees every in-image key of that block
// grown by `halo` pixels on each side.
PairRule naive_halo(int64_t height, int64_t width, int64_t block, int64_t halo) {
  return [=](int64_t i, int64_t j) {
    const int64_t qy = i / width, qx = i % width, ky = j / width, kx = j % width;
    const int64_t top = qy / block * block - halo, left = qx / block * block - halo;
    const int64_t side = block + 2 * halo;
    return ky >= top && ky < top + side && kx >= left && kx < left + side && ky < height;
  };
}

struct HaloCase {
  std::string spec;
  int64_t height, width, block, halo;
};

std::vector<HaloCase> halo_cases() {
  return {{"halo2d", 16, 16, 8, 3},
          {"halo2d:height=7,width=9", 7, 9, 8, 3},
          {"halo2d:height=13,width=21,block=4,halo=2", 13, 21, 4, 2},
          {"halo2d:height=24,width=16,block=8,halo=0", 24, 16, 8, 0},
          {"halo2d:height=10,width=11,block=3,halo=5", 10, 11, 3, 5}};
}

TEST(HaloPlan, PlanMatchesNaiveRuleAndAlignedBlocksAreFull) {
  for (const HaloCase& c : halo_cases()) {
    for (bool causal : {false, true}) {
      const Plan plan = make_pattern(c.spec)->plan(grid_inputs(c.height * c.width, causal));
      expect_plan_matches(plan, naive_halo(c.height, c.width, c.block, c.halo),
                          c.spec + (causal ? " causal" : ""), !causal);
    }
  }
  // 128 x 128 with 8 x 8 blocks, halo 3: a query box is one HaloNet block (8 x 8) over key
  // boxes of 4 x 4; an interior block's 14 x 14 keys touch 4 x 4 key boxes, the 2 x 2 inside
  // the block FULL and the ring of 12 PARTIAL (3 of 4 rows or columns seen).
  grid_patterns::Grid grid;
  grid.ndim = 2;
  for (grid_patterns::AxisRule& axis : grid.axis) {
    axis.kind = grid_patterns::AxisRule::Kind::kHalo;
    axis.length = 128;
    axis.block = 8;
    axis.halo = 3;
  }
  const grid_patterns::TiledPlan plan = grid_patterns::plan_tiled(grid, false);
  const grid_patterns::Tiling& t = *plan.tiling;
  ASSERT_EQ(t.tile[0] * 10 + t.tile[1], 88);
  ASSERT_EQ(t.sub[0] * 10 + t.sub[1], 44);
  ASSERT_EQ(plan.mask.q_block, 64);
  ASSERT_EQ(plan.mask.kv_block, 16);
  int64_t interior = 0;
  for (int64_t qb = 0; qb < plan.mask.q_blocks(); ++qb) {
    const grid_patterns::Box& box = t.boxes[qb];
    if (box.lo[0] == 0 || box.lo[1] == 0 || box.hi[0] == 128 || box.hi[1] == 128) continue;
    int64_t full = 0, partial = 0;
    for (int64_t e = plan.mask.row_start[qb]; e < plan.mask.row_start[qb + 1]; ++e) {
      (plan.mask.kind[e] == BlockKind::kFull ? full : partial) += 1;
    }
    EXPECT_EQ(full, 4) << qb;
    EXPECT_EQ(partial, 12) << qb;
    ++interior;
  }
  EXPECT_EQ(interior, 14 * 14);
  EXPECT_EQ(make_pattern("halo2d")->direction(), Direction::kBidirectional);
}

TEST(HaloPlan, ErrorsNamePattern) {
  for (const char* spec : {"halo2d", "halo2d:height=7", "halo2d:height=6,width=10,block=0",
                           "halo2d:height=6,width=10,halo=-1"}) {
    try {
      make_pattern(spec)->plan(grid_inputs(60));
      ADD_FAILURE() << spec << " should fail on 60 tokens";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "pattern") << spec;
    }
  }
}

TEST(HaloRun, MatchesReference) {
  for (const HaloCase& c : halo_cases()) {
    for (bool causal : {false, true}) {
      Problem p;
      p.batch = 1, p.heads_q = 3, p.heads_kv = 1, p.nq = p.nk = c.height * c.width;
      p.dim = 40, p.dim_v = 40, p.causal = causal, p.seed = 11;
      expect_run_matches(c.spec, p, naive_halo(c.height, c.width, c.block, c.halo));
    }
  }
}

}  // namespace
}  // namespace attnkit::testing
