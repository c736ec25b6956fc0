// The grid family: separable neighbourhoods on 1-3-D grids (NATTEN, HaloNet), planned in box
// order (grid_pattern.h). Listed in the registry's table (src/patterns/registry.cc).
#pragma once

#include "attnkit/pattern.h"

namespace attnkit::grid_patterns {

PatternRegistration natten_pattern(int ndim);  // natten1d, natten2d, natten3d
PatternRegistration halo2d_pattern();

}  // namespace attnkit::grid_patterns
