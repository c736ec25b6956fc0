// Argument checks of Lightning attention, shared by the fast operator and its reference
// (internal).
#pragma once

#include <cstdint>

#include "attnkit/lightning.h"

namespace attnkit {

struct LightningShape {
  int64_t batch, heads, n, dim, dim_v;
};

// Throws Error naming "q", "k", "v", "slopes", "state_in", "out", "state_out", "block" or
// "threads"; the backward form also "dout", "dstate_out", "dq", "dk", "dv", "dstate_in" (and does
// not look at out and state_out).
LightningShape validate_lightning(const LightningArgs& args);
LightningShape validate_lightning(const LightningBackwardArgs& args);

}  // namespace attnkit
