// natten2d: 2-D Neighborhood Attention (Hassani et al., "Neighborhood Attention Transformer",
// CVPR 2023; "Dilated Neighborhood Attention Transformer", arXiv 2209.15001; "Faster Neighborhood
// Attention", NeurIPS 2024, arXiv 2403.04690). Per-axis rule in natten.h, planning in
// grid_pattern.h.
//
// Tokens are the row-major pixels of a height x width grid. Query (y, x) sees key (y', x') iff
// both axes allow the pair: |window| = kernel_h x kernel_w keys in non-causal mode, shifted
// inward at the borders. run() permutes tokens into 8 x 8 boxes per dilation group (tiling.h), so
// a 13 x 13 neighbourhood touches 3 x 3 or 3 x 4 key boxes per query box.
//
// Spec and defaults: natten2d:height=0,width=0,kernel=7,dilation=1,causal=0 (+ kernel_h/_w,
// dilation_h/_w, causal_h/_w) kernel 7 is NAT/DiNAT's choice (NATTEN's API has no default);
// dilation 1 and causal 0 are NATTEN's defaults. Requirement per axis: kernel * dilation <= length.
// Causality of the attention call itself (args.causal, bottom-right) is ANDed in original token
// order.
#include "patterns/grid/natten_params.h"

namespace attnkit::grid {
namespace {

std::unique_ptr<Pattern> make(const PatternParams& params) { return make_natten(params, 2); }

[[maybe_unused]] const bool registered = register_pattern(
    PatternInfo{"natten2d",
                "2-D neighborhood attention: K nearest keys per axis, clamped at borders",
                "Hassani et al., Neighborhood Attention (CVPR 2023) / Faster NA (NeurIPS 2024)",
                natten_param_list(2)},
    &make);

}  // namespace
}  // namespace attnkit::grid
