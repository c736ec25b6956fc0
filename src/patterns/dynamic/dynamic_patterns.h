// The dynamic family: content-based planners that read Q and K (one file each in this folder).
// Listed in the registry's table (src/patterns/registry.cc).
#pragma once

#include "attnkit/pattern.h"

namespace attnkit::dynamic_patterns {

PatternRegistration topk_oracle_pattern();
PatternRegistration infllm_v2_pattern();
PatternRegistration hip_pattern();
PatternRegistration dhsa_pattern();
PatternRegistration hyper_pattern();
PatternRegistration routing_pattern();
PatternRegistration h2o_pattern();

}  // namespace attnkit::dynamic_patterns
