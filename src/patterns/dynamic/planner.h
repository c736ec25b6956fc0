// Helpers shared by the content-based planners (topk_oracle, infllm_v2, hip, dhsa, hyper,
// routing): sizes of an AttentionArgs, causal limits, per-head f32 loads and block-list masks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/pattern.h"

namespace attnkit::planner {

struct Dims {
  int64_t batch = 0, heads_q = 0, heads_kv = 0, group = 1;
  int64_t nq = 0, nk = 0, dim = 0, dim_v = 0;
};
Dims dims_of(const AttentionArgs& args);

// Last key index visible to query row i (bottom-right causal alignment), nk - 1 without
// causality; negative when the row sees no key.
inline int64_t last_visible(const AttentionArgs& args, int64_t i) {
  const int64_t nq = args.q.shape[2], nk = args.k.shape[2];
  return args.causal ? std::min(nk - 1, i + nk - nq) : nk - 1;
}
// limit[r] = number of raw keys visible to row start + r, in [0, nk].
std::vector<int64_t> key_limits(const AttentionArgs& args, int64_t start, int64_t count);

// Per-(b, h) selected kv blocks -> a BlockMask of FULL entries (the kernel ANDs causality).
// `lists` is indexed by ((b * heads + h) * q_blocks + qb); each list may be unsorted.
BlockMask mask_from_lists(const AttentionArgs& args, int64_t q_block, int64_t kv_block,
                          int64_t heads, std::vector<std::vector<int32_t>> lists);

// A listed kv block and its kind.
struct Entry {
  int32_t kv_index;
  BlockKind kind;
};
// Lists of (kv block, kind), each sorted by kv block without duplicates, plus the predicate that
// decides PARTIAL entries -> a validated BlockMask.
BlockMask mask_from_entries(const AttentionArgs& args, int64_t q_block, int64_t kv_block,
                            int64_t heads, std::vector<std::vector<Entry>> lists,
                            std::shared_ptr<const TilePredicate> predicate);

// Every kv block a query block can see (dense, causal-limited): the dense fallback.
BlockMask dense_mask(const AttentionArgs& args, int64_t q_block, int64_t kv_block);

// Throws Error("--pattern", ...) unless lo <= value <= hi.
int64_t int_param(const PatternParams& params, const std::string& pattern, const std::string& key,
                  int64_t lo, int64_t hi);
// Throws unless value is a positive multiple of 16 (a BlockMask block size).
int64_t block_param(const PatternParams& params, const std::string& pattern,
                    const std::string& key);

// Attended pairs of one mask, summed over the (b, h) lists the kernel will run, divided by
// (batch * heads_q): what RunStats.pairs reports. Causality (args.causal) is applied and
// PARTIAL entries are counted element by element through the predicate.
double mask_pairs(const BlockMask& mask, const AttentionArgs& args);

// A [1, 1, n, dim] f32 view of a contiguous row-major buffer (scratch copies of planners).
TensorView contiguous(const float* data, int64_t n, int64_t dim);

}  // namespace attnkit::planner
