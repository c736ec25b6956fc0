// The grid patterns' window walk (tile_plan.h GridWindows): the forward of plans without
// causality reads K and V in token order along each row's window. Which plans take it, the
// windows it is given, the density it reports, and its output against the float64 reference
// where its batches split (unions longer than St holds), on converted K / V, padded boxes,
// shared GQA tiles and every SIMD target.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "patterns/grid/grid_pattern.h"
#include "support/grid_check.h"

namespace attnkit::testing {
namespace {

using grid_patterns::GridWalk;

// NATTEN on one axis without dilation or causality: the window of `kernel` keys centred on i,
// pushed back inside [0, length).
bool natten_axis(int64_t i, int64_t j, int64_t length, int64_t kernel) {
  const int64_t first = std::clamp(i - kernel / 2, int64_t{0}, length - kernel);
  return first <= j && j < first + kernel;
}

PairRule natten_2d(int64_t height, int64_t width, int64_t kernel) {
  return [=](int64_t i, int64_t j) {
    return natten_axis(i / width, j / width, height, kernel) &&
           natten_axis(i % width, j % width, width, kernel);
  };
}

const GridWalk* walk_of(const Plan& plan) {
  if (!plan.state.has_value()) return nullptr;
  return std::any_cast<std::shared_ptr<const GridWalk>>(plan.state).get();
}

TEST(WindowWalk, OnlyPlansWithoutCausalityWalk) {
  const auto pattern = make_pattern("natten2d:height=12,width=10,kernel=5");
  const Plan plan = pattern->plan(grid_inputs(120));
  ASSERT_NE(walk_of(plan), nullptr);
  EXPECT_FALSE(plan.token_order.empty());
  EXPECT_EQ(walk_of(pattern->plan(grid_inputs(120, true))), nullptr);
  // Tokens already in box order (1-D, whole boxes) keep the block lists.
  const Plan line = make_pattern("natten1d:kernel=7")->plan(grid_inputs(256));
  EXPECT_TRUE(line.token_order.empty());
  EXPECT_EQ(walk_of(line), nullptr);
}

// Every token's window, inclusive, in original coordinates (per axis, by the token's coordinate
// there), against the rule written here.
TEST(WindowWalk, WindowsAreTheRule) {
  const auto pattern = make_pattern("natten2d:height=9,width=20,kernel=5,dilation_w=2");
  const Plan plan = pattern->plan(grid_inputs(9 * 20));
  const GridWalk* walk = walk_of(plan);
  ASSERT_NE(walk, nullptr);
  const cpu::GridWindows& w = walk->windows;
  EXPECT_EQ(w.ndim, 2);
  EXPECT_EQ(w.extent[0] * 100 + w.extent[1], 920);
  EXPECT_EQ(w.step[0] * 10 + w.step[1], 12);
  for (int64_t i = 0; i < 9 * 20; ++i) {
    const int64_t y = i / 20, x = i % 20;
    const int64_t y0 = std::clamp<int64_t>(y - 2, 0, 4);
    EXPECT_EQ(w.first[0][y], y0) << i;
    EXPECT_EQ(w.last[0][y], y0 + 4) << i;
    // Dilation 2: columns of x's parity, 10 of them, the window 5 of those around x.
    const int64_t x0 = std::clamp<int64_t>(x / 2 - 2, 0, 5);
    EXPECT_EQ(w.first[1][x], x % 2 + 2 * x0) << i;
    EXPECT_EQ(w.last[1][x], x % 2 + 2 * (x0 + 4)) << i;
  }
}

// The reported density: per query box, each vector of kWalkLanes rows (a sub-box, the last axis
// first) scores the box's union on the last axis for every row of keys that one of its rows
// sees, counted here key by key from the rule, over all token pairs.
TEST(WindowWalk, DensityCountsTheScoredPairs) {
  for (int64_t kernel : {3, 13}) {
    grid_patterns::Grid grid;
    grid.ndim = 2;
    for (grid_patterns::AxisRule& axis : grid.axis) axis.length = 40, axis.kernel = kernel;
    const grid_patterns::TiledPlan tiled = grid_patterns::plan_tiled(grid, false);
    const grid_patterns::Tiling& t = *tiled.tiling;
    const int64_t cols = std::min<int64_t>(t.tile[1], grid_patterns::kWalkLanes);
    const int64_t rows = std::max<int64_t>(1, grid_patterns::kWalkLanes / cols);
    const auto seen = [&](int64_t lo, int64_t hi) {  // keys some coordinate of [lo, hi) sees
      int64_t count = 0;
      for (int64_t j = 0; j < 40; ++j) {
        bool any = false;
        for (int64_t i = lo; i < hi && !any; ++i) any = natten_axis(i, j, 40, kernel);
        count += any;
      }
      return count;
    };
    double pairs = 0.0;
    for (const grid_patterns::Box& box : t.boxes) {
      ASSERT_EQ(box.hi[1] - box.lo[1], t.tile[1]);  // 40 is a multiple of the box widths
      const int64_t last = seen(box.lo[1], box.hi[1]);
      for (int64_t y = box.lo[0]; y < box.hi[0]; y += rows)
        for (int64_t x = box.lo[1]; x < box.hi[1]; x += cols)
          pairs += static_cast<double>(seen(y, std::min(y + rows, box.hi[0])) * last *
                                       grid_patterns::kWalkLanes);
    }
    EXPECT_DOUBLE_EQ(grid_patterns::walk_density(grid, t), pairs / (1600.0 * 1600.0)) << kernel;
  }
}

// What bench reports: the walk's density for walks, the mask's tiles otherwise.
TEST(WindowWalk, RunReportsTheWalkedDensity) {
  Problem p;
  p.nq = p.nk = 20 * 20, p.dim = 16, p.dim_v = 16;
  Inputs in = make_inputs(p);
  const auto pattern = make_pattern("natten2d:kernel=13");
  const Plan plan = pattern->plan(PlanInputs::of(in.args()));
  ASSERT_NE(walk_of(plan), nullptr);
  const RunStats stats = pattern->run(in.args());
  EXPECT_DOUBLE_EQ(stats.tile_density, walk_of(plan)->density);
  EXPECT_GT(stats.tile_density, stats.density);
  EXPECT_NE(stats.tile_density, block_density(plan.mask));
  AttentionArgs causal = in.args();
  causal.causal = true;
  EXPECT_DOUBLE_EQ(pattern->run(causal).tile_density,
                   block_density(pattern->plan(PlanInputs::of(causal)).mask));
}

// Unions longer than St holds (a 36 x 36 grid with kernel 31: 1296 keys per box) are walked in
// several batches, with K and V converted where they are not f32 or V rows are not whole
// vectors; boxes cut by the border are padded; GQA heads share a tile.
TEST(WindowWalk, MatchesReferenceAcrossBatches) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t dim_v : {16, 24}) {
      Problem p;
      p.heads_q = 2, p.heads_kv = 1, p.nq = p.nk = 36 * 36, p.dim = 32, p.dim_v = dim_v;
      p.dtype = dtype;
      p.seed = 3 + dim_v;
      expect_run_matches("natten2d:kernel=31", p, natten_2d(36, 36, 31));
    }
  }
  Problem p;  // 37 x 29: no box is whole along the border
  p.nq = p.nk = 37 * 29, p.dim = 24, p.dim_v = 8;
  expect_run_matches("natten2d:height=37,width=29,kernel=9", p, natten_2d(37, 29, 9));
}

// O rows that do not start on a vector boundary are written with ordinary stores (aligned ones
// are streamed past the caches).
TEST(WindowWalk, WritesUnalignedOutputRows) {
  Problem p;
  p.nq = p.nk = 20 * 20, p.dim = 16, p.dim_v = 32;
  const auto pattern = make_pattern("natten2d:height=20,width=20,kernel=7");
  check_problem(
      p,
      [&](const AttentionArgs& a) {
        std::vector<float> buffer(a.out.shape[2] * a.out.shape[3] + 1);
        AttentionArgs shifted = a;
        shifted.out = MutableTensorView::contiguous(buffer.data() + 1, DType::kF32,
                                                    {1, 1, a.out.shape[2], a.out.shape[3]});
        pattern->run(shifted);
        for (int64_t i = 0; i < a.out.shape[2]; ++i)
          for (int64_t d = 0; d < a.out.shape[3]; ++d)
            a.out.set(0, 0, i, d, shifted.out.get(0, 0, i, d));
      },
      [rule = natten_2d(20, 20, 7)](int64_t, int64_t, int64_t i, int64_t j) { return rule(i, j); });
}

TEST(WindowWalk, MatchesReferenceOnEveryTarget) {
  for (int64_t target : simd_targets()) {
    Problem p;
    p.heads_q = 2, p.heads_kv = 1, p.nq = p.nk = 18 * 21, p.dim = 20, p.dim_v = 12;
    p.target = target;
    expect_run_matches("natten2d:height=18,width=21,kernel=7", p, natten_2d(18, 21, 7));
  }
}

}  // namespace
}  // namespace attnkit::testing
