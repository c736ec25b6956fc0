// Parameters of natten1d / natten2d / natten3d and their translation into a grid template.
//
// Shared keys: kernel (K, default 7 as NAT / DiNAT; NATTEN itself has no default), dilation (1),
// causal (0). Per-axis overrides for 2-D and 3-D: kernel_<a>, dilation_<a>, causal_<a> with
// a in {d, h, w}; -1 (the default) means "the shared value". Grid lengths (depth, height, width)
// default to 0 = derived from N: all unknown -> a square / cube grid, one unknown -> N / the
// others.
#pragma once

#include <memory>
#include <vector>

#include "attnkit/pattern.h"

namespace attnkit::grid {

// ndim 1, 2 or 3.
std::vector<PatternParam> natten_param_list(int ndim);
std::unique_ptr<Pattern> make_natten(const PatternParams& params, int ndim);

}  // namespace attnkit::grid
