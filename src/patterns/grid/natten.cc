// natten1d / natten2d / natten3d: Neighborhood Attention on a 1-, 2- or 3-D grid (Hassani et al.,
// "Neighborhood Attention Transformer", CVPR 2023; "Dilated Neighborhood Attention Transformer",
// arXiv 2209.15001; "Faster Neighborhood Attention", NeurIPS 2024, arXiv 2403.04690). The per-axis
// rule is in natten.h, the planning in grid_pattern.h.
//
// Tokens are the row-major cells of the grid (1-D: the sequence; 2-D: height x width pixels; 3-D:
// depth x height x width voxels, video: depth = frames). Query i sees key j iff every axis allows
// the pair: kernel keys per axis in non-causal mode, the window shifted inward at the borders;
// with dilation D an axis splits into D interleaved groups. The neighbourhood is the AND of the
// axis rules, so causal_d=1 gives causal-in-time, non-causal-in-space attention. The plan puts
// tokens into query boxes of 32 or 64 tokens and key boxes inside them, per dilation group, with
// the shapes that visit the fewest tiles for this grid and kernel (tiling.h): on 128 x 128 with
// kernel 13, 8 x 8 boxes, a 13 x 13 neighbourhood touching 3 x 3 or 3 x 4 key boxes; on
// 16 x 32 x 32 with kernel 13, 16 x 2 x 2 boxes (1.43x the pairs, against 2.36x for 4 x 4 x 4).
//
// Spec and defaults: natten2d:height=0,width=0,kernel=7,dilation=1,causal=0 (+ kernel_h/_w,
// dilation_h/_w, causal_h/_w; 3-D: depth/height/width and _d/_h/_w). kernel 7 is NAT/DiNAT's
// choice (NATTEN's API has no default); dilation 1 and causal 0 are NATTEN's defaults. Grid
// lengths 0 = derived from N: all unknown -> a square / cube grid, one unknown -> N / the others.
// Per-axis overrides -1 (the default) mean "the shared value". Requirement per axis:
// kernel * dilation <= length (NATTEN's own check). Bidirectional unless every axis is causal.
// Causality of the attention call itself (args.causal, bottom-right) is ANDed in token order.
#include <string>

#include "attnkit/error.h"
#include "patterns/grid/grid_pattern.h"
#include "patterns/grid/grid_patterns.h"

namespace attnkit::grid_patterns {
namespace {

const char* kAxisName[3][3] = {
    {"length", "", ""}, {"height", "width", ""}, {"depth", "height", "width"}};
const char* kAxisSuffix[3][3] = {{"", "", ""}, {"h", "w", ""}, {"d", "h", "w"}};
constexpr int64_t kMax = int64_t{1} << 30;

std::vector<PatternParam> natten_params(int ndim) {
  std::vector<PatternParam> list;
  if (ndim > 1) {
    for (int a = 0; a < ndim; ++a) {
      list.push_back(
          int_param(kAxisName[ndim - 1][a], 0, 0, kMax,
                    std::string("grid ") + kAxisName[ndim - 1][a] + "; 0 = derived from N"));
    }
  }
  list.push_back(
      int_param("kernel", 7, 1, kMax, "neighbourhood size per axis (keys seen along each axis)"));
  list.push_back(int_param("dilation", 1, 1, kMax,
                           "gap between neighbours; tokens split into dilation groups"));
  list.push_back(
      int_param("causal", 0, 0, 1, "1: the kernel most recent positions per axis, self included"));
  if (ndim > 1) {
    for (const char* key : {"kernel", "dilation", "causal"}) {
      for (int a = 0; a < ndim; ++a) {
        list.push_back(int_param(
            std::string(key) + "_" + kAxisSuffix[ndim - 1][a], -1, -1,
            std::string(key) == "causal" ? 1 : kMax,
            std::string(key) + " along " + kAxisName[ndim - 1][a] + "; -1 = the shared value"));
      }
    }
  }
  return list;
}

GridTemplate natten_template(const PatternParams& params, int ndim) {
  GridTemplate gt;
  gt.pattern_name = params.pattern();
  gt.grid.ndim = ndim;
  for (int a = 0; a < ndim; ++a) {
    gt.axis_names[a] = kAxisName[ndim - 1][a];
    AxisRule& rule = gt.grid.axis[a];
    rule.kind = AxisRule::Kind::kNatten;
    rule.length = ndim > 1 ? params.get_int(gt.axis_names[a]) : 0;
    rule.kernel = params.get_int("kernel");
    rule.dilation = params.get_int("dilation");
    rule.causal = params.get_int("causal") != 0;
    if (ndim > 1) {
      const std::string suffix = std::string("_") + kAxisSuffix[ndim - 1][a];
      const int64_t k = params.get_int("kernel" + suffix);
      const int64_t d = params.get_int("dilation" + suffix);
      const int64_t c = params.get_int("causal" + suffix);
      check(k != 0 && d != 0, "pattern",
            "'" + gt.pattern_name + "' parameters kernel" + suffix + " and dilation" + suffix +
                " must be >= 1 (or -1 for the shared value)");
      if (k > 0) rule.kernel = k;
      if (d > 0) rule.dilation = d;
      if (c >= 0) rule.causal = c != 0;
    }
  }
  return gt;
}

// Causal in token order only when every axis is (row-major order is then monotone).
Direction natten_direction(const GridTemplate& gt) {
  for (int a = 0; a < gt.grid.ndim; ++a)
    if (!gt.grid.axis[a].causal) return Direction::kBidirectional;
  return Direction::kCausal;
}

template <int kDims>
std::unique_ptr<Pattern> make_natten(const PatternParams& params) {
  GridTemplate gt = natten_template(params, kDims);
  const Direction direction = natten_direction(gt);
  return std::make_unique<GridPattern>(params, direction, std::move(gt));
}

}  // namespace

PatternRegistration natten_pattern(int ndim) {
  const std::string name = "natten" + std::to_string(ndim) + "d";
  const PatternFactory factory = ndim == 1   ? &make_natten<1>
                                 : ndim == 2 ? &make_natten<2>
                                             : &make_natten<3>;
  return {{name,
           std::to_string(ndim) +
               "-D neighborhood attention: K nearest keys per axis, clamped at borders",
           "Hassani et al., Neighborhood Attention (CVPR 2023) / Faster NA (NeurIPS 2024)",
           PatternFamily::kGrid, natten_params(ndim)},
          factory};
}

}  // namespace attnkit::grid_patterns
