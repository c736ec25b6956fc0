// The backward reference in float (internal): a naive low-precision kernel whose error against
// the double reference sets the tolerance of the fast kernels in tests.
#pragma once

#include "attnkit/attention.h"

namespace attnkit {

void attention_backward_reference_f32(const BackwardArgs& args, const ElementPredicate& allow = {});

}  // namespace attnkit
