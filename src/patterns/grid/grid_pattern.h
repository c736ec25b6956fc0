// GridPattern: the shared planner of the separable grid patterns (natten1d/2d/3d, halo2d).
//
// plan() puts tokens into box-tiled order (tiling.h) and returns the TILED mask with that token
// order: one query box x one key box (a sub-box of a query box) per block, FULL iff every query of
// the box sees every key of the other box and neither box has padding. Only keys in the union
// window of a query box are enumerated, so planning costs O(visited blocks). PlanInputs::causal
// (bottom-right, i.e. j <= i for self-attention) is applied in token order inside the mask.
// execute() runs the kernel in that order: Q read and O, LSE written through it, K and V read in
// token order along each row's window (or, with causality or dropout, copied into that order and
// walked block by block).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "attnkit/pattern.h"
#include "kernels/cpu/tile_plan.h"
#include "patterns/grid/tiling.h"

namespace attnkit::grid_patterns {

// A grid whose lengths may still be unknown (0): they are derived from the sequence length.
struct GridTemplate {
  std::string pattern_name;   // for error messages, e.g. "natten2d"
  std::string axis_names[3];  // parameter names of the lengths, e.g. "height", "width"
  Grid grid;                  // axis lengths 0 = derive from N
};

// Fills the unknown lengths from n (all unknown: the n-th root, i.e. a square / cube grid; one
// unknown: n / the others), then checks the size and each axis rule; throws
// Error("pattern", ...).
Grid resolve_grid(const GridTemplate& grid_template, int64_t n);

struct TiledPlan {
  std::shared_ptr<const Tiling> tiling;  // shared with the mask's predicate
  BlockMask mask;  // nq = nk = padded(), q_block = tiling->block, kv_block = key_block
};

// Tiled mask; `causal` adds j <= i in original token order. The tiling is make_tiling(grid)
// unless one is given.
TiledPlan plan_tiled(const Grid& grid, bool causal);
TiledPlan plan_tiled(const Grid& grid, bool causal, Tiling tiling);

// Every token's window per axis, in original coordinates, for the kernel's window walk.
cpu::GridWindows grid_windows(const Grid& grid);

// What a plan without causality keeps for its forward (Plan::state): the rows' windows, and the
// pairs the walk scores (tiling.h walked_pairs) over all token pairs (RunStats::tile_density).
struct GridWalk {
  cpu::GridWindows windows;
  double density = 0.0;
};
double walk_density(const Grid& grid, const Tiling& tiling);

class GridPattern final : public Pattern {
 public:
  GridPattern(const PatternParams& params, Direction direction, GridTemplate grid_template)
      : Pattern(params, direction), template_(std::move(grid_template)) {}
  Plan plan(const PlanInputs& inputs) const override;

 protected:
  // Without causality or dropout the kernel walks the rows' windows over K and V in token order
  // (tile_plan.h, GridWindows): no K / V copies, no block list, no predicate bytes. Otherwise
  // Pattern::execute().
  void execute(const AttentionArgs& args, const Plan& plan) const override;
  double tile_density(const AttentionArgs& args, const Plan& plan) const override;

 private:
  GridTemplate template_;
};

}  // namespace attnkit::grid_patterns
