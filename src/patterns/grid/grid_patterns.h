// The grid family: patterns over tokens laid out on a grid, attended both ways: separable
// neighbourhoods on 1-3-D grids (NATTEN, HaloNet), planned in box order (grid_pattern.h), and
// Radial Attention's frame-distance bands over video frames (on the interval engine). Listed in the
// registry's table (src/patterns/registry.cc).
#pragma once

#include "attnkit/pattern.h"

namespace attnkit::grid_patterns {

PatternRegistration natten_pattern(int ndim);  // natten1d, natten2d, natten3d
PatternRegistration halo2d_pattern();
PatternRegistration radial_pattern();  // frames x frame_tokens

}  // namespace attnkit::grid_patterns
