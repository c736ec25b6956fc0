// natten1d: 1-D Neighborhood Attention (Hassani et al., "Neighborhood Attention Transformer",
// CVPR 2023; "Dilated Neighborhood Attention Transformer", arXiv 2209.15001; "Faster Neighborhood
// Attention", NeurIPS 2024, arXiv 2403.04690). Per-axis rule in natten.h, planning in
// grid_pattern.h.
//
// Query i sees the K keys of its clamped window on the one axis (row-major order = the sequence);
// with dilation D the sequence splits into D interleaved groups. Tokens stay in order unless
// dilation > 1 or N % 64 != 0, in which case run() permutes group-major (see tiling.h).
//
// Spec and defaults: natten1d:kernel=7,dilation=1,causal=0
// kernel 7 is NAT/DiNAT's choice (NATTEN's API has no default); dilation 1 and causal 0 are
// NATTEN's defaults. Requirement per axis: kernel * dilation <= length. Causality of the attention
// call itself (args.causal, bottom-right) is ANDed in original token order.
#include "patterns/grid/natten_params.h"

namespace attnkit::grid {
namespace {

std::unique_ptr<Pattern> make(const PatternParams& params) { return make_natten(params, 1); }

[[maybe_unused]] const bool registered = register_pattern(
    PatternInfo{"natten1d",
                "1-D neighborhood attention: K nearest keys per axis, clamped at borders",
                "Hassani et al., Neighborhood Attention (CVPR 2023) / Faster NA (NeurIPS 2024)",
                natten_param_list(1)},
    &make);

}  // namespace
}  // namespace attnkit::grid
