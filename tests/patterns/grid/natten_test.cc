// natten1d / natten2d / natten3d: the per-axis geometry, the exact interval classifier, the plan
// (element for element in token order, and block by block in its box order), the box tiling, and
// run() against the reference, all against a NATTEN rule written here independently.
#include "patterns/grid/natten.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <iostream>
#include <set>
#include <vector>

#include "attnkit/error.h"
#include "patterns/grid/grid_pattern.h"
#include "support/grid_check.h"

namespace attnkit::testing {
namespace {

// NATTEN on one axis, the slow way: list the members of the query's dilation group, place a
// window of `kernel` members centred on the query (k/2 before it), then push it back inside.
bool naive_axis(int64_t i, int64_t j, int64_t length, int64_t kernel, int64_t dilation,
                bool causal) {
  std::vector<int64_t> members;
  for (int64_t x = i % dilation; x < length; x += dilation) members.push_back(x);
  const int64_t n = static_cast<int64_t>(members.size());
  const int64_t at = std::find(members.begin(), members.end(), i) - members.begin();
  int64_t first = 0, last = 0;  // inclusive member indices
  if (causal) {
    first = std::max<int64_t>(at - (kernel - 1), 0);
    last = at;
  } else {
    first = at - kernel / 2;
    while (first < 0) ++first;
    while (first + kernel > n) --first;
    last = first + kernel - 1;
  }
  for (int64_t m = first; m <= last; ++m) {
    if (members[m] == j) return true;
  }
  return false;
}

struct AxisSpec {
  int64_t length, kernel, dilation;
  bool causal;
};

// Row-major n-D rule over axes (axis 0 slowest).
PairRule naive_grid(std::vector<AxisSpec> axes) {
  return [axes](int64_t i, int64_t j) {
    for (int a = static_cast<int>(axes.size()) - 1; a >= 0; --a) {
      const AxisSpec& s = axes[a];
      if (!naive_axis(i % s.length, j % s.length, s.length, s.kernel, s.dilation, s.causal)) {
        return false;
      }
      i /= s.length;
      j /= s.length;
    }
    return true;
  };
}

TEST(NattenAxis, MatchesNaiveWindowForEveryShape) {
  for (int64_t length = 1; length <= 17; ++length) {
    for (int64_t dilation = 1; dilation <= length; ++dilation) {
      for (int64_t kernel = 1; kernel * dilation <= length; ++kernel) {
        for (bool causal : {false, true}) {
          for (int64_t i = 0; i < length; ++i) {
            int64_t seen = 0;
            for (int64_t j = 0; j < length; ++j) {
              const bool got =
                  grid_patterns::natten_neighbor(i, j, length, kernel, dilation, causal);
              ASSERT_EQ(got, naive_axis(i, j, length, kernel, dilation, causal))
                  << "L=" << length << " K=" << kernel << " D=" << dilation << " causal=" << causal
                  << " i=" << i << " j=" << j;
              seen += got;
            }
            // Non-causal: exactly K keys, whatever the border; causal: min(K, members so far).
            const int64_t expected = causal ? std::min(kernel, i / dilation + 1) : kernel;
            ASSERT_EQ(seen, expected) << "L=" << length << " K=" << kernel << " D=" << dilation
                                      << " causal=" << causal << " i=" << i;
          }
        }
      }
    }
  }
}

TEST(NattenAxis, WindowShiftsInwardAtBorders) {
  // L = 10, K = 5: the first query sees 0..4 (not -2..2), the last one 5..9.
  for (int64_t j = 0; j < 10; ++j) {
    EXPECT_EQ(grid_patterns::natten_neighbor(0, j, 10, 5, 1, false), j < 5) << j;
    EXPECT_EQ(grid_patterns::natten_neighbor(9, j, 10, 5, 1, false), j >= 5) << j;
    EXPECT_EQ(grid_patterns::natten_neighbor(5, j, 10, 5, 1, false), j >= 3 && j <= 7) << j;
  }
  // Dilation 2 on L = 9: group 1 is {1, 3, 5, 7}; query 1 with K = 3 sees 1, 3, 5.
  for (int64_t j = 0; j < 9; ++j) {
    EXPECT_EQ(grid_patterns::natten_neighbor(1, j, 9, 3, 2, false), j == 1 || j == 3 || j == 5)
        << j;
  }
}

// classify_axis against counting, for every pair of intervals on small axes.
TEST(NattenAxis, IntervalClassificationIsExact) {
  for (int64_t length : {1, 5, 9, 12}) {
    for (int64_t dilation : {1, 2, 3}) {
      for (int64_t kernel : {1, 2, 3, 4}) {
        if (kernel * dilation > length) continue;
        for (bool causal : {false, true}) {
          grid_patterns::AxisRule rule;
          rule.length = length, rule.kernel = kernel, rule.dilation = dilation;
          rule.causal = causal;
          for (int64_t q0 = 0; q0 < length; ++q0)
            for (int64_t q1 = q0 + 1; q1 <= length; ++q1)
              for (int64_t k0 = 0; k0 < length; ++k0)
                for (int64_t k1 = k0 + 1; k1 <= length; ++k1) {
                  int64_t allowed = 0;
                  for (int64_t i = q0; i < q1; ++i)
                    for (int64_t j = k0; j < k1; ++j)
                      allowed += naive_axis(i, j, length, kernel, dilation, causal);
                  const int64_t size = (q1 - q0) * (k1 - k0);
                  const grid_patterns::Coverage want = allowed == 0 ? grid_patterns::Coverage::kNone
                                                       : allowed == size
                                                           ? grid_patterns::Coverage::kAll
                                                           : grid_patterns::Coverage::kSome;
                  ASSERT_EQ(grid_patterns::classify_axis(rule, q0, q1, k0, k1), want)
                      << "L=" << length << " K=" << kernel << " D=" << dilation
                      << " causal=" << causal << " q=[" << q0 << "," << q1 << ") k=[" << k0 << ","
                      << k1 << ")";
                }
        }
      }
    }
  }
}

struct GridCase {
  std::string spec;
  int64_t n;
  std::vector<AxisSpec> axes;
};

std::vector<GridCase> grid_cases() {
  return {
      {"natten1d:kernel=1", 1, {{1, 1, 1, false}}},
      {"natten1d:kernel=5", 7, {{7, 5, 1, false}}},
      {"natten1d:kernel=7", 63, {{63, 7, 1, false}}},
      {"natten1d:kernel=9,dilation=3", 65, {{65, 9, 3, false}}},
      {"natten1d:kernel=64,causal=1", 200, {{200, 64, 1, true}}},
      {"natten1d:kernel=6,dilation=5,causal=1", 130, {{130, 6, 5, true}}},
      {"natten2d:height=7,width=9,kernel=3", 63, {{7, 3, 1, false}, {9, 3, 1, false}}},
      {"natten2d:kernel=5", 400, {{20, 5, 1, false}, {20, 5, 1, false}}},
      {"natten2d:height=20,width=13,kernel=5,dilation=2",
       260,
       {{20, 5, 2, false}, {13, 5, 2, false}}},
      {"natten2d:height=17,kernel=4,kernel_w=7,causal_h=1",
       17 * 11,
       {{17, 4, 1, true}, {11, 7, 1, false}}},
      {"natten2d:height=12,width=30,kernel=3,dilation_w=4,causal=1",
       360,
       {{12, 3, 1, true}, {30, 3, 4, true}}},
      // Kernels larger than a box, so that whole key blocks are FULL.
      {"natten1d:kernel=150", 200, {{200, 150, 1, false}}},
      {"natten2d:kernel=15", 400, {{20, 15, 1, false}, {20, 15, 1, false}}},
      {"natten2d:height=24,width=20,kernel=17,causal_w=1",
       480,
       {{24, 17, 1, false}, {20, 17, 1, true}}},
      {"natten3d:kernel=8", 1000, {{10, 8, 1, false}, {10, 8, 1, false}, {10, 8, 1, false}}},
      {"natten3d:depth=5,height=6,width=7,kernel=3",
       210,
       {{5, 3, 1, false}, {6, 3, 1, false}, {7, 3, 1, false}}},
      {"natten3d:depth=6,height=8,width=9,kernel=3,causal_d=1,dilation_w=2,kernel_h=5",
       432,
       {{6, 3, 1, true}, {8, 5, 1, false}, {9, 3, 2, false}}},
  };
}

// The grid of a case, built from the test's own axis list.
grid_patterns::Grid grid_of(const std::vector<AxisSpec>& axes) {
  grid_patterns::Grid g;
  g.ndim = static_cast<int>(axes.size());
  for (int a = 0; a < g.ndim; ++a) {
    grid_patterns::AxisRule& r = g.axis[a];
    r.length = axes[a].length, r.kernel = axes[a].kernel, r.dilation = axes[a].dilation;
    r.causal = axes[a].causal;
  }
  return g;
}

TEST(NattenPlan, PlanMatchesNaiveRule) {
  int64_t full_blocks = 0, permuted = 0;
  for (const GridCase& c : grid_cases()) {
    const std::unique_ptr<Pattern> pattern = make_pattern(c.spec);
    for (bool causal : {false, true}) {
      const Plan plan = pattern->plan(grid_inputs(c.n, causal));
      EXPECT_EQ(plan.nq(), c.n) << c.spec;
      EXPECT_EQ(plan.causal, causal);
      // With causal the box classifier ANDs two exact tests, so a PARTIAL block may be empty.
      expect_plan_matches(plan, naive_grid(c.axes), c.spec + (causal ? " causal" : ""), !causal);
      full_blocks += std::count(plan.mask.kind.begin(), plan.mask.kind.end(), BlockKind::kFull);
      permuted += !plan.token_order.empty();
    }
  }
  EXPECT_GT(full_blocks, 0) << "the cases must exercise FULL blocks";
  EXPECT_GT(permuted, 0) << "the cases must exercise token orders";
}

TEST(NattenPlan, NonCausalQueriesSeeExactlyTheKernelProduct) {
  const std::unique_ptr<Pattern> pattern = make_pattern(
      "natten3d:depth=5,height=6,width=7,"
      "kernel=3,kernel_w=5,dilation_h=2");
  const std::vector<uint8_t> dense = to_dense(pattern->plan(grid_inputs(210)), 0, 0);
  for (int64_t i = 0; i < 210; ++i) {
    int64_t seen = 0;
    for (int64_t j = 0; j < 210; ++j) seen += dense[i * 210 + j];
    ASSERT_EQ(seen, 3 * 3 * 5) << "query " << i;
  }
  EXPECT_EQ(pattern->direction(), Direction::kBidirectional);
  EXPECT_EQ(make_pattern("natten2d:causal=1")->direction(), Direction::kCausal);
  EXPECT_EQ(make_pattern("natten2d:causal_h=1")->direction(), Direction::kBidirectional);
}

TEST(NattenTiling, IsAPermutationAndThePlanUsesIt) {
  for (const GridCase& c : grid_cases()) {
    const grid_patterns::TiledPlan tiled = grid_patterns::plan_tiled(grid_of(c.axes), false);
    const std::vector<int64_t>& source = tiled.tiling->source;
    std::set<int64_t> seen;
    for (int64_t s : source) {
      if (s >= 0) {
        EXPECT_TRUE(seen.insert(s).second) << c.spec << ": token " << s << " twice";
      }
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), c.n) << c.spec;
    EXPECT_EQ(tiled.mask.q_block, tiled.tiling->block);
    EXPECT_EQ(tiled.tiling->padded() % tiled.tiling->block, 0);
    // The pattern's plan is this tiling: its order, or none when the tiling is the identity.
    const Plan plan = make_pattern(c.spec)->plan(grid_inputs(c.n));
    if (tiled.tiling->identity) {
      EXPECT_TRUE(plan.token_order.empty()) << c.spec;
    } else {
      EXPECT_EQ(std::vector<int64_t>(plan.token_order.begin(), plan.token_order.end()), source)
          << c.spec;
    }
  }
}

// The kernel may ask for any tile: inside one box pair (the separable fast path, at an offset) or
// across boxes (the element path). Both must agree with the rule.
TEST(NattenTiling, PredicateFillsAnyTile) {
  const GridCase c{"natten3d:depth=6,height=8,width=9,kernel=3,causal_d=1,dilation_w=2,kernel_h=5",
                   432,
                   {{6, 3, 1, true}, {8, 5, 1, false}, {9, 3, 2, false}}};
  const grid_patterns::Grid g = grid_of(c.axes);
  const PairRule rule = naive_grid(c.axes);
  for (bool causal : {false, true}) {
    const grid_patterns::TiledPlan plan = grid_patterns::plan_tiled(g, causal);
    const std::vector<int64_t>& source = plan.tiling->source;
    const int64_t padded = plan.tiling->padded();
    const int64_t tiles[][4] = {{0, 64, 0, 64},   {64, 64, 128, 64},      {70, 16, 130, 20},
                                {10, 100, 5, 90}, {0, padded, 0, padded}, {200, 1, 0, 300}};
    for (const auto& tile : tiles) {
      const int64_t q0 = tile[0], nq = std::min(tile[1], padded - q0);
      const int64_t k0 = tile[2], nk = std::min(tile[3], padded - k0);
      std::vector<uint8_t> allow(nq * (nk + 3), 7);
      plan.mask.predicate->fill(0, 0, q0, nq, k0, nk, allow.data(), nk + 3);
      int64_t errors = 0;
      for (int64_t r = 0; r < nq; ++r) {
        for (int64_t col = 0; col < nk; ++col) {
          const int64_t i = source[q0 + r], j = source[k0 + col];
          const bool want = i >= 0 && j >= 0 && rule(i, j) && (!causal || j <= i);
          if (allow[r * (nk + 3) + col] != (want ? 1 : 0) && errors++ < 5) {
            ADD_FAILURE() << "tile (" << q0 << "+" << nq << ", " << k0 << "+" << nk << ") causal "
                          << causal << ": slot (" << q0 + r << ", " << k0 + col << ")";
          }
        }
      }
    }
  }
}

// Every tiling has query boxes of 32 or 64 tokens where the grid allows, key boxes of at least 16
// that divide them, and blocks of whole multiples of 16 slots.
void expect_well_formed(const grid_patterns::Tiling& t, const std::string& label) {
  const int64_t tile = t.tile[0] * t.tile[1] * t.tile[2];
  const int64_t sub = t.sub[0] * t.sub[1] * t.sub[2];
  for (int a = 0; a < 3; ++a) EXPECT_EQ(t.tile[a] % t.sub[a], 0) << label << " axis " << a;
  EXPECT_TRUE(tile == 32 || tile == 64) << label << ": query box of " << tile;
  EXPECT_GE(sub, 16) << label;
  EXPECT_EQ(t.key_block % 16, 0) << label;
  EXPECT_EQ(t.block, t.key_block * t.keys_per_box()) << label;
  EXPECT_EQ(t.padded() % t.block, 0) << label;
  EXPECT_EQ(static_cast<int64_t>(t.boxes.size()) * t.keys_per_box(),
            static_cast<int64_t>(t.key_boxes.size()))
      << label;
}

TEST(NattenTiling, BoxesFollowTheGridShape) {
  const grid_patterns::Tiling t2 =
      grid_patterns::make_tiling(grid_of({{128, 13, 1, false}, {128, 13, 1, false}}));
  expect_well_formed(t2, "natten2d 128 x 128 kernel 13");
  EXPECT_FALSE(t2.identity);
  const grid_patterns::Tiling t3 = grid_patterns::make_tiling(
      grid_of({{16, 3, 1, false}, {16, 3, 1, false}, {16, 3, 1, false}}));
  expect_well_formed(t3, "natten3d 16^3 kernel 3");
  // A flat 2 x 512 grid keeps full boxes by growing the width tile.
  const grid_patterns::Tiling flat =
      grid_patterns::make_tiling(grid_of({{2, 1, 1, false}, {512, 1, 1, false}}));
  expect_well_formed(flat, "flat 2 x 512");
  EXPECT_EQ(flat.padded(), 1024);
  // 1-D without dilation on whole blocks is the identity: the plan has no token order.
  EXPECT_TRUE(grid_patterns::make_tiling(grid_of({{256, 7, 1, false}})).identity);
  EXPECT_TRUE(make_pattern("natten1d:kernel=7")->plan(grid_inputs(256)).token_order.empty());
  // A grid of fewer than 16 tokens still gets one padded block.
  const grid_patterns::Tiling tiny =
      grid_patterns::make_tiling(grid_of({{3, 3, 1, false}, {3, 3, 1, false}}));
  EXPECT_EQ(tiny.block, 16);
  EXPECT_EQ(tiny.padded(), 16);
}

// Key boxes smaller than the query boxes, chosen by hand, on grids with borders that clip them,
// dilation, and causality: the mask still matches the rule exactly and the predicate fills any
// tile correctly.
TEST(NattenTiling, KeyBoxesInsideQueryBoxesMatchTheRule) {
  struct Shaped {
    std::vector<std::array<int64_t, 4>> axes;  // length, kernel, dilation, causal
    int64_t tile[3], sub[3];
  };
  const std::vector<Shaped> cases = {
      {{{13, 5, 1, 0}, {21, 7, 1, 0}}, {8, 8, 1}, {4, 4, 1}},
      {{{13, 5, 1, 0}, {21, 7, 1, 0}}, {4, 8, 1}, {2, 8, 1}},
      {{{20, 3, 2, 0}, {19, 5, 1, 1}}, {8, 8, 1}, {8, 2, 1}},
      {{{6, 3, 1, 1}, {9, 5, 1, 0}, {10, 3, 2, 0}}, {4, 4, 4}, {2, 2, 4}},
      {{{7, 3, 1, 0}, {9, 5, 1, 0}, {9, 3, 1, 0}}, {8, 2, 4}, {4, 2, 2}},
      {{{100, 9, 1, 0}}, {64, 1, 1}, {16, 1, 1}},
  };
  for (const Shaped& c : cases) {
    std::vector<AxisSpec> axes;
    std::string label = "grid";
    for (const auto& a : c.axes) {
      axes.push_back({a[0], a[1], a[2], a[3] != 0});
      // append(), not operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
      label.append(" ").append(std::to_string(a[0])).append("/k").append(std::to_string(a[1]));
      label.append("/d").append(std::to_string(a[2])).append(a[3] ? "c" : "");
    }
    const grid_patterns::Grid g = grid_of(axes);
    const PairRule rule = naive_grid(axes);
    for (bool causal : {false, true}) {
      const grid_patterns::TiledPlan plan =
          grid_patterns::plan_tiled(g, causal, grid_patterns::make_tiling(g, c.tile, c.sub));
      const std::string what = label + (causal ? " causal" : "");
      expect_well_formed(*plan.tiling, what);
      const std::vector<int64_t>& source = plan.tiling->source;
      expect_mask_matches(
          plan.mask,
          [&](int64_t p, int64_t s) {
            const int64_t i = source[p], j = source[s];
            return i >= 0 && j >= 0 && rule(i, j) && (!causal || j <= i);
          },
          what);
      // Whole blocks, part of one block at an offset, and tiles across blocks.
      const int64_t padded = plan.tiling->padded(), qb = plan.mask.q_block, kb = plan.mask.kv_block;
      const int64_t tiles[][4] = {{0, qb, 0, kb},
                                  {qb, qb, kb, kb},
                                  {qb + 3, qb - 5, 2 * kb + 1, kb - 3},
                                  {5, 2 * qb, 3, 3 * kb},
                                  {0, padded, 0, padded}};
      for (const auto& tile : tiles) {
        const int64_t q0 = std::min(tile[0], padded - 1), k0 = std::min(tile[2], padded - 1);
        const int64_t nq = std::min(tile[1], padded - q0), nk = std::min(tile[3], padded - k0);
        std::vector<uint8_t> allow(nq * (nk + 2), 7);
        plan.mask.predicate->fill(0, 0, q0, nq, k0, nk, allow.data(), nk + 2);
        int64_t errors = 0;
        for (int64_t r = 0; r < nq; ++r)
          for (int64_t col = 0; col < nk; ++col) {
            const int64_t i = source[q0 + r], j = source[k0 + col];
            const bool want = i >= 0 && j >= 0 && rule(i, j) && (!causal || j <= i);
            if (allow[r * (nk + 2) + col] != (want ? 1 : 0) && errors++ < 3)
              ADD_FAILURE() << what << ": tile (" << q0 << "+" << nq << ", " << k0 << "+" << nk
                            << ") slot (" << q0 + r << ", " << k0 + col << ")";
          }
      }
    }
  }
}

// The chosen shapes keep the visited tiles close to the pairs where key boxes smaller than the
// query boxes pay (issue 16: visited-tile density <= 2x the element density): the block lists of
// causal plans, and the union windows that the forward of the others walks.
TEST(NattenTiling, ChosenShapesVisitFewTiles) {
  const auto visited = [](const Plan& plan) {
    const double n = static_cast<double>(plan.mask.nq);
    return static_cast<double>(plan.mask.kv_index.size()) * plan.mask.q_block * plan.mask.kv_block /
           (n * n);
  };
  const auto walked = [](const Plan& plan) {
    return std::any_cast<std::shared_ptr<const grid_patterns::GridWalk>>(plan.state)->density;
  };
  const auto halo = make_pattern("halo2d:height=128,width=128");
  const Plan halo_causal = halo->plan(grid_inputs(128 * 128, true));
  EXPECT_EQ(halo_causal.mask.kv_block, 16);
  EXPECT_LT(visited(halo_causal), 1.3 * density(halo->plan(grid_inputs(128 * 128))));
  const Plan halo_walk = halo->plan(grid_inputs(128 * 128));
  EXPECT_LT(walked(halo_walk), 1.3 * density(halo_walk));  // 8 x 8 boxes, 14 x 14 keys each
  const auto n3 = make_pattern("natten3d:depth=16,height=32,width=32,kernel=13");
  grid_patterns::Grid g3 = grid_of({{16, 13, 1, false}, {32, 13, 1, false}, {32, 13, 1, false}});
  const grid_patterns::TiledPlan blocks = grid_patterns::plan_tiled(
      g3, false, grid_patterns::make_tiling(g3, grid_patterns::TilingFor::kBlocks));
  const Plan n3_walk = n3->plan(grid_inputs(16 * 32 * 32));
  const double n3_density = density(n3_walk);
  const double n3_visited = static_cast<double>(blocks.mask.kv_index.size()) * blocks.mask.q_block *
                            blocks.mask.kv_block /
                            (double(blocks.mask.nq) * double(blocks.mask.nq));
  EXPECT_LT(n3_visited, 1.45 * n3_density);  // 16 x 2 x 2 boxes (4 x 4 x 4: 2.36x)
  EXPECT_LT(walked(n3_walk), 1.6 * n3_density);
  const Plan n2_walk =
      make_pattern("natten2d:height=128,width=128,kernel=13")->plan(grid_inputs(128 * 128));
  EXPECT_LT(walked(n2_walk), 2.0 * density(n2_walk));  // 16 x 4 boxes, vectors of 4 x 4
}

// natten2d on 128 x 128 with kernel 13 visits few key tiles with 8 x 8 boxes.
TEST(NattenTiling, VisitedDensity128Kernel13) {
  const auto visited = [](const Plan& plan) {  // listed blocks x block area / N^2
    const double n = static_cast<double>(plan.nq());
    return static_cast<double>(plan.mask.kv_index.size()) * plan.mask.q_block * plan.mask.kv_block /
           (n * n);
  };
  const Plan plan =
      make_pattern("natten2d:height=128,width=128,kernel=13")->plan(grid_inputs(128 * 128));
  const double element = density(plan), tiles = visited(plan);
  std::cout << "natten2d 128x128 kernel 13: element density " << element
            << ", visited key-tile density " << tiles << " (" << plan.mask.kv_index.size()
            << " blocks of " << plan.mask.q_block << "x" << plan.mask.kv_block << "), ratio "
            << tiles / element << "\n";
  EXPECT_NEAR(element, 169.0 / 16384.0, 1e-12);
  EXPECT_LE(tiles, 5.0 * element);
  // For the record: 3-D boxes of 4 x 4 x 4 around a 7 x 7 x 7 neighbourhood.
  const Plan plan3 = make_pattern("natten3d:kernel=7")->plan(grid_inputs(32 * 32 * 32));
  std::cout << "natten3d 32x32x32 kernel 7: element density " << density(plan3)
            << ", visited key-tile density " << visited(plan3) << ", ratio "
            << visited(plan3) / density(plan3) << "\n";
  EXPECT_LT(visited(plan3), 8.0 * density(plan3));
}

// A plan held by the caller must be for the inputs it runs on: its token order indexes their rows.
TEST(NattenErrors, HeldPlanForOtherTokens) {
  const std::unique_ptr<Pattern> pattern = make_pattern("natten2d:kernel=3,dilation=2");
  const Plan plan = pattern->plan(grid_inputs(64));  // 8 x 8, four dilation groups
  ASSERT_FALSE(plan.token_order.empty());
  Problem p;
  p.nq = p.nk = 49, p.dim = 16, p.dim_v = 16;  // 7 x 7
  Inputs in = make_inputs(p);
  try {
    pattern->forward(in.args(), plan);
    ADD_FAILURE() << "a plan for 64 tokens must not run on 49";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "pattern");
    EXPECT_NE(std::string(e.what()).find("64 tokens"), std::string::npos) << e.what();
  }
}

TEST(NattenErrors, NamePatternAndSizes) {
  for (const char* spec : {"natten2d:height=7,width=9", "natten2d:height=7", "natten1d:kernel=65",
                           "natten3d:depth=3,height=3", "natten2d:kernel=9",
                           "natten3d:depth=2,kernel=3", "natten2d:kernel_w=0"}) {
    try {
      make_pattern(spec)->plan(grid_inputs(64));
      ADD_FAILURE() << spec << " should fail on 64 tokens";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "pattern") << spec;
      EXPECT_NE(std::string(e.what()).find("natten"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(make_pattern("natten2d:kernel=3")->plan(grid_inputs(64)));          // 8 x 8
  EXPECT_NO_THROW(make_pattern("natten3d:kernel=3")->plan(grid_inputs(64)));          // 4 x 4 x 4
  EXPECT_NO_THROW(make_pattern("natten3d:depth=4,kernel=3")->plan(grid_inputs(64)));  // 4 x (4 x 4)
  // One length given: the others share what is left (2 frames of 9 x 9).
  const Plan frames = make_pattern("natten3d:depth=2,kernel=1")->plan(grid_inputs(2 * 9 * 9));
  EXPECT_EQ(frames.nq(), 2 * 9 * 9);
}

TEST(NattenRun, MatchesReferenceOnSmallGrids) {
  for (const GridCase& c : grid_cases()) {
    const bool large = c.n > 300;
    for (bool causal : {false, true}) {
      Problem p;
      p.batch = large ? 1 : 2, p.heads_q = large ? 1 : 4, p.heads_kv = large ? 1 : 2;
      p.nq = p.nk = c.n, p.dim = 32, p.dim_v = 24;
      p.causal = causal;
      p.seed = 7 + c.n;
      expect_run_matches(c.spec, p, naive_grid(c.axes));
    }
  }
}

TEST(NattenRun, HalfPrecisionInputs) {
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Problem p;
    p.nq = p.nk = 63, p.dim = 64, p.dim_v = 64, p.dtype = dtype;
    expect_run_matches("natten2d:height=7,width=9,kernel=5,dilation_w=1", p,
                       naive_grid({{7, 5, 1, false}, {9, 5, 1, false}}));
  }
}

// Score modifiers through a token order: each row's temperature (Selective Attention's position
// rule at its original index) and gate follow its token, head modes hold, and the output and LSE
// land at the token's own row, as in the float64 reference over the same neighbourhood.
TEST(NattenRun, ScoreModifiersFollowTheTokens) {
  const std::string spec = "natten2d:height=7,width=9,kernel=3,kernel_h=5,dilation_w=2";
  const PairRule rule = naive_grid({{7, 5, 1, false}, {9, 3, 2, false}});
  ASSERT_FALSE(make_pattern(spec)->plan(grid_inputs(63)).token_order.empty());
  Problem p;
  p.heads_q = 3, p.heads_kv = 1, p.nq = p.nk = 63, p.dim = 32, p.dim_v = 16;
  Inputs in = make_inputs(p);
  Tensor gate({1, 3, 63}, DType::kF32), row_scale({1, 3, 63}, DType::kF32);
  for (int64_t x = 0; x < gate.numel(); ++x) {
    gate.f32()[x] = 0.25f * float(x % 7) - 0.5f;
    row_scale.f32()[x] = 0.5f + 0.01f * float(x % 13);
  }
  const std::vector<HeadMode> modes = {HeadMode::kNormal, HeadMode::kUniform, HeadMode::kZero};
  AttentionArgs a = in.args();
  a.position_scale = 0.2f, a.first_position = 40;
  a.row_scale = row_scale.rows_view(), a.output_gate = gate.rows_view(), a.head_modes = modes.data();
  make_pattern(spec)->run(a);
  AttentionArgs r = a;
  r.out = in.ref_out.view(), r.lse = in.ref_lse.rows_view();
  attention_reference(r, [&](int64_t, int64_t, int64_t i, int64_t j) { return rule(i, j); });
  expect_matches_reference(a, r, spec + " with score modifiers");
}

}  // namespace
}  // namespace attnkit::testing
