// The static family: patterns whose rule looks only at positions (1-D interval rules, one file
// each in this folder). Listed in the registry's table (src/patterns/registry.cc).
#pragma once

#include "attnkit/pattern.h"

namespace attnkit::static_patterns {

PatternRegistration causal_pattern();
PatternRegistration window_pattern();
PatternRegistration dilated_pattern();
PatternRegistration streaming_pattern();
PatternRegistration document_pattern();
PatternRegistration prefix_lm_pattern();
PatternRegistration power_pattern();
PatternRegistration s2attn_pattern();
PatternRegistration sf_attn_pattern();
PatternRegistration ssa_pattern();

}  // namespace attnkit::static_patterns
