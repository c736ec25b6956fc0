// Helpers shared by the content-based planners (topk_oracle, infllm_v2, hip, dhsa, hyper,
// routing): sizes of the inputs, causal limits and block-list shapes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attnkit/block_mask.h"
#include "attnkit/pattern.h"

namespace attnkit::dynamic_patterns {

struct Dims {
  int64_t batch = 0, heads_q = 0, heads_kv = 0, group = 1;
  int64_t nq = 0, nk = 0, dim = 0;
};
Dims dims_of(const PlanInputs& in);

// Last key index visible to query row i (bottom-right causal alignment), nk - 1 without
// causality; negative when the row sees no key.
inline int64_t last_visible(const PlanInputs& in, int64_t i) {
  const int64_t nq = in.q.shape[2], nk = in.k.shape[2];
  return in.causal ? std::min(nk - 1, i + nk - nq) : nk - 1;
}
// limit[r] = number of raw keys visible to row start + r, in [0, nk].
std::vector<int64_t> key_limits(const PlanInputs& in, int64_t start, int64_t count);

// The shape of a mask over the inputs' queries and keys with `heads` lists per batch entry
// (1 = shared by every head).
BlockMaskShape mask_shape(const PlanInputs& in, int64_t q_block, int64_t kv_block, int64_t heads);

// Every kv block a query block can see (dense, causal-limited): the dense fallback.
BlockMask dense_mask(const PlanInputs& in, int64_t q_block, int64_t kv_block);

// dK, dV of every KV head for operators that differentiate per query head: `base_dk`, `base_dv`
// ([B, Hkv, Nk, D] and Dv contiguous, or null for zeros) plus the parts of its query heads
// h >= first_head in head_dk [B*Hq][Nk][D] and head_dv [B*Hq][Nk][Dv], added in head order.
void sum_head_gradients(const BackwardArgs& args, const std::vector<float>& head_dk,
                        const std::vector<float>& head_dv, int64_t first_head,
                        const float* base_dk = nullptr, const float* base_dv = nullptr);

}  // namespace attnkit::dynamic_patterns
