// natten3d: 3-D Neighborhood Attention (Hassani et al., "Neighborhood Attention Transformer",
// CVPR 2023; "Dilated Neighborhood Attention Transformer", arXiv 2209.15001; "Faster Neighborhood
// Attention", NeurIPS 2024, arXiv 2403.04690). Per-axis rule in natten.h, planning in
// grid_pattern.h.
//
// Tokens are the row-major voxels of a depth x height x width grid (video: depth = frames).
// The neighbourhood is the AND of the three axis rules; e.g. causal_d=1 gives causal-in-time,
// non-causal-in-space attention. run() permutes tokens into 4 x 4 x 4 boxes per dilation group.
//
// Spec and defaults: natten3d:depth=0,height=0,width=0,kernel=7,dilation=1,causal=0 (+ _d/_h/_w
// overrides) kernel 7 is NAT/DiNAT's choice (NATTEN's API has no default); dilation 1 and causal 0
// are NATTEN's defaults. Requirement per axis: kernel * dilation <= length. Causality of the
// attention call itself (args.causal, bottom-right) is ANDed in original token order.
#include "patterns/grid/natten_params.h"

namespace attnkit::grid {
namespace {

std::unique_ptr<Pattern> make(const PatternParams& params) { return make_natten(params, 3); }

[[maybe_unused]] const bool registered = register_pattern(
    PatternInfo{"natten3d",
                "3-D neighborhood attention: K nearest keys per axis, clamped at borders",
                "Hassani et al., Neighborhood Attention (CVPR 2023) / Faster NA (NeurIPS 2024)",
                natten_param_list(3)},
    &make);

}  // namespace
}  // namespace attnkit::grid
