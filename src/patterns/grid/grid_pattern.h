// GridPattern: the shared planner and runner of the separable grid patterns (natten1d/2d/3d,
// halo2d).
//
// Two masks of the same rule:
//   plan()  -> the mask in ORIGINAL token order (blocks of 64 consecutive row-major tokens), the
//   one
//              `attnkit mask` prints and `--dump` writes: to_dense(plan().mask)[i][j] is the rule
//              for tokens i, j of the input. Blocks are classified exactly by splitting each
//              64-token range into at most 2 * ndim - 1 boxes.
//   run()   -> permutes Q, K, V into box-tiled order (tiling.h), builds the TILED mask (one query
//   box
//              x one key box per block; FULL iff every query of the box sees every key of the other
//              box and neither box has padding), runs attention(args, mask) on the permuted tensors
//              and scatters O and LSE back. args.causal (bottom-right, i.e. j <= i for
//              self-attention) is applied in original token order inside the tiled mask.
// Only keys in the union window of a query box are enumerated, so planning costs O(visited blocks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "attnkit/pattern.h"
#include "patterns/grid/tiling.h"

namespace attnkit::grid {

// A grid whose lengths may still be unknown (0): they are derived from the sequence length.
struct GridTemplate {
  std::string pattern_name;   // for error messages, e.g. "natten2d"
  std::string axis_names[3];  // parameter names of the lengths, e.g. "height", "width"
  Grid grid;                  // axis lengths 0 = derive from N
};

// Fills the unknown lengths from n (all unknown: the n-th root, i.e. a square / cube grid; one
// unknown: n / the others), then checks the size and each axis rule; throws Error("--pattern",
// ...).
Grid resolve_grid(const GridTemplate& grid_template, int64_t n);

struct TiledPlan {
  std::shared_ptr<const Tiling> tiling;  // shared with the mask's predicate
  BlockMask mask;  // nq = nk = tiling->padded(), q_block = kv_block = tiling->block
};

// Original-order mask (64 x 64 blocks) of the grid rule.
BlockMask plan_original(const Grid& grid);
// Tiled mask; `causal` adds j <= i in original token order.
TiledPlan plan_tiled(const Grid& grid, bool causal);

// Element density of the rule and the share of (query, key) pairs inside visited key tiles of the
// tiled mask (visited blocks x block^2 / N^2): the work the kernel actually does.
struct TiledDensity {
  double element = 0.0;
  double visited = 0.0;
  int64_t visited_blocks = 0;
  int64_t block = 0;
  int64_t tile[3] = {1, 1, 1};
};
TiledDensity tiled_density(const Grid& grid);
// The same for a pattern spec ("natten2d:height=128,width=128,kernel=13") on n tokens.
TiledDensity tiled_density(const std::string& spec, int64_t n);

class GridPattern : public Pattern {
 public:
  GridPattern(GridTemplate grid_template, std::string spec)
      : template_(std::move(grid_template)), spec_(std::move(spec)) {}
  std::string name() const override { return template_.pattern_name; }
  std::string spec() const override { return spec_; }
  Plan plan(const AttentionArgs& args) const override;
  RunStats run(const AttentionArgs& args) const override;
  // The grid for a self-attention of n tokens (throws when n does not fit).
  Grid grid_for(int64_t n) const { return resolve_grid(template_, n); }

 private:
  Grid grid_for_args(const AttentionArgs& args) const;
  GridTemplate template_;
  std::string spec_;
};

}  // namespace attnkit::grid
