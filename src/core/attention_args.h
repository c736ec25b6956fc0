// Checks and defaults shared by every attention entry point (internal: not part of the public API).
#pragma once

#include "attnkit/attention.h"

namespace attnkit {

// Checks shapes, dtypes, head ratio and strides; throws Error naming "q", "k", "v", "out", "lse",
// "scale" or "threads".
void validate(const AttentionArgs& args);
// validate(args.forward) plus the gradients: LSE required; dout, dlse, dq, dk, dv shaped like
// out, lse, q, k, v; the gradients f32. Throws Error naming the argument.
void validate(const BackwardArgs& args);
// args.scale, or 1/sqrt(D) when it is 0.
float effective_scale(const AttentionArgs& args);
float effective_scale(float scale, int64_t dim);
// threads, or every core when it is 0.
int effective_threads(int threads);

}  // namespace attnkit
