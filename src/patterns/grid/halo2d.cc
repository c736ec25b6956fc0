// halo2d: blocked local attention with a halo (HaloNet; Vaswani et al., "Scaling Local
// Self-Attention for Parameter Efficient Visual Backbones", CVPR 2021, arXiv 2103.12731).
//
// Rule: the height x width grid (tokens row-major) is cut into non-overlapping block x block query
// blocks. Every query of block (by, bx) sees the same keys: the block grown by `halo` pixels on
// each side, rows [by*block - halo, by*block + block + halo) x cols [bx*block - halo, ... + halo).
// It is not a per-query centred window: queries share their block's key set.
// Defaults: block=8, halo=3 (a 14 x 14 memory per 8 x 8 block; timm's HaloAttn defaults).
//
// Border choice: the paper and timm zero-pad the image, and timm lets the padded all-zero keys
// take part in the softmax (they get logit 0 plus a relative-position term). attnkit has no
// padding tokens and no relative logits, so keys outside the image simply do not exist: a border
// block sees only the in-image part of its haloed region (masked out, not zero keys).
// Grids whose sides are not multiples of `block` (timm asserts divisibility) are allowed: the last
// block of a row or column is clipped and keeps the halo rule relative to its nominal start.
// height / width default to 0 = derived from N (square grid, or N / the other side).
// The plan tiles tokens into 8 x 8 query boxes over 4 x 4 key boxes (tiling.h): with block 8 a
// query box is exactly one HaloNet block, whose 14 x 14 keys touch 4 x 4 key boxes (the 2 x 2
// inside the block FULL, the ring PARTIAL): 1.29x the pairs, against 2.85x with 8 x 8 key boxes.
// Bidirectional, as in the paper.
#include "patterns/grid/grid_pattern.h"
#include "patterns/grid/grid_patterns.h"

namespace attnkit::grid_patterns {
namespace {

std::unique_ptr<Pattern> make_halo2d(const PatternParams& params) {
  GridTemplate gt;
  gt.pattern_name = "halo2d";
  gt.axis_names[0] = "height";
  gt.axis_names[1] = "width";
  gt.grid.ndim = 2;
  for (int a = 0; a < 2; ++a) {
    AxisRule& rule = gt.grid.axis[a];
    rule.kind = AxisRule::Kind::kHalo;
    rule.length = params.get_int(gt.axis_names[a]);
    rule.block = params.get_int("block");
    rule.halo = params.get_int("halo");
  }
  return std::make_unique<GridPattern>(params, Direction::kBidirectional, std::move(gt));
}

}  // namespace

PatternRegistration halo2d_pattern() {
  const int64_t kMax = int64_t{1} << 30;
  return {{"halo2d",
           "HaloNet blocked local attention: block x block queries see their block + halo",
           "Vaswani et al., Scaling Local Self-Attention (HaloNet), CVPR 2021",
           PatternFamily::kGrid,
           {int_param("height", 0, 0, kMax, "grid height; 0 = derived from N"),
            int_param("width", 0, 0, kMax, "grid width; 0 = derived from N"),
            int_param("block", 8, 1, kMax, "query block side"),
            int_param("halo", 3, 0, kMax,
                      "extra key pixels on each side of the block (cut at the border)")}},
          &make_halo2d};
}

}  // namespace attnkit::grid_patterns
