// What attention runs between two shards of a context-parallel sequence (internal): the queries
// at global positions q against the keys at k, with causality and a pattern in global
// coordinates. Shards are whole chunks (context_shard), so two ranges are equal, disjoint, or one
// lies wholly before the other; a pattern's chunks are whole blocks of its mask.
#pragma once

#include <cstdint>
#include <optional>

#include "attnkit/block_mask.h"
#include "attnkit/distributed.h"
#include "attnkit/pattern.h"

namespace attnkit {

struct PairPlan {
  enum class Kind : uint8_t {
    kSkip,      // nothing visible
    kFull,      // every pair (keys wholly before the queries, or no causality), mask aside
    kDiagonal,  // the same positions: causal, bottom-right aligned as the kernels are
  } kind = Kind::kSkip;
  std::optional<BlockMask> mask;  // the pattern's part of its global mask, in the pair's coordinates
};

class PairPlanner {
 public:
  // Plans `pattern` (may be null) once over the N x N sequence.
  PairPlanner(const Pattern* pattern, int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t n,
              int64_t dim, bool causal);
  PairPlan plan(TokenRange q, TokenRange k) const;

 private:
  std::optional<Plan> global_;
  bool causal_;
};

// The lists of `mask` restricted to the queries [q.start, q.end) and keys [k.start, k.end) of
// its token coordinates, shifted to start at 0; PARTIAL entries ask `mask`'s predicate at the
// shifted positions. Both starts must be multiples of the mask's block sizes.
BlockMask restrict_mask(const BlockMask& mask, TokenRange q, TokenRange k);

}  // namespace attnkit
