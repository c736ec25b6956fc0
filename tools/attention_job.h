// What `attnkit run` and `attnkit bench` share: input checks and one attention call, dense or
// through a pattern (--pattern SPEC).
#pragma once

#include <memory>
#include <string>

#include "attnkit/attention.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"

namespace attnkit::cli {

// Checks that Q [B,Hq,Nq,D], K [B,Hkv,Nk,D], V [B,Hkv,Nk,Dv] fit together: rank 4, no zero-size
// dimension, equal batch, Hq % Hkv == 0, equal D, equal Nk. Errors name "--q", "--k" or "--v".
void check_attention_shapes(const Tensor& q, const Tensor& k, const Tensor& v);

// Throws Error(argument, "contains NaN at flat index 17") at the first NaN or infinity.
// `why` is appended, e.g. " after conversion to f16" when the conversion overflowed.
void check_finite(const Tensor& tensor, const std::string& argument, const std::string& why = "");

// The dense kernel, or the pattern's run() when `pattern` is set. Without a pattern the stats
// hold the exact dense / bottom-right causal pair count and no planning time.
RunStats run_attention(const AttentionArgs& args, const Pattern* pattern);

}  // namespace attnkit::cli
