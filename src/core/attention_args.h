// Checks and defaults shared by every attention entry point (internal: not part of the public API).
#pragma once

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"

namespace attnkit {

// Checks shapes, dtypes, head ratio and strides; throws Error naming "q", "k", "v", "out", "lse",
// "scale" or "threads".
void validate(const AttentionArgs& args);
// validate(), except that an f32 Q may read K and V of another (shared) dtype: for the paths that
// widen Q themselves (decode over a 16-bit KV cache, column sums).
void validate_f32_query(const AttentionArgs& args);
// validate(args.forward) plus the gradients: LSE required; dout, dlse, dq, dk, dv shaped like
// out, lse, q, k, v; the gradients f32. Throws Error naming the argument.
void validate(const BackwardArgs& args);
// validate_f32_query(args), the LSE present, and col_sums an f32 [B, Hq or Hkv, Nk, 1]: the checks
// of attention_column_sums and its reference; throws Error naming "lse" or "col_sums".
void validate_column_sums(const AttentionArgs& args, const MutableTensorView& col_sums);
// The mask must be for these inputs: valid, nq x nk (the inputs' lengths, or the slots of a
// plan's token order), batch and heads 1 or the inputs'. Throws Error("block_mask", ...).
void check_mask_fits(const AttentionArgs& args, const BlockMask& mask, int64_t nq, int64_t nk);
// args.scale, or 1/sqrt(D) when it is 0.
float effective_scale(const AttentionArgs& args);
float effective_scale(float scale, int64_t dim);
// threads, or every core when it is 0.
int effective_threads(int threads);

}  // namespace attnkit
