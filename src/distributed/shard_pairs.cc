#include "distributed/shard_pairs.h"

#include <memory>
#include <string>
#include <vector>

#include "attnkit/error.h"

namespace attnkit {
namespace {

// A tile predicate asked at positions shifted by (q0, k0): the global rule of a pair's sub-mask.
class ShiftedPredicate final : public TilePredicate {
 public:
  ShiftedPredicate(std::shared_ptr<const TilePredicate> inner, int64_t q0, int64_t k0)
      : inner_(std::move(inner)), q0_(q0), k0_(k0) {}
  void fill(int64_t b, int64_t h, int64_t q_start, int64_t nq, int64_t k_start, int64_t nk,
            uint8_t* allow, int64_t ld) const override {
    inner_->fill(b, h, q0_ + q_start, nq, k0_ + k_start, nk, allow, ld);
  }
  bool same_for_all_heads() const override { return inner_->same_for_all_heads(); }

 private:
  std::shared_ptr<const TilePredicate> inner_;
  int64_t q0_, k0_;
};

}  // namespace

BlockMask restrict_mask(const BlockMask& mask, TokenRange q, TokenRange k) {
  check(q.start % mask.q_block == 0 && k.start % mask.kv_block == 0, "pattern",
        "shard boundaries " + std::to_string(q.start) + ", " + std::to_string(k.start) +
            " are not whole blocks of " + std::to_string(mask.q_block) + " x " +
            std::to_string(mask.kv_block));
  BlockMask sub;
  sub.q_block = mask.q_block, sub.kv_block = mask.kv_block;
  sub.nq = q.size(), sub.nk = k.size();
  sub.batch = mask.batch, sub.heads = mask.heads;
  const int64_t qb0 = q.start / mask.q_block, kb0 = k.start / mask.kv_block;
  const int64_t kb1 = kb0 + sub.kv_blocks();
  sub.row_start.push_back(0);
  bool partial = false;
  for (int64_t b = 0; b < sub.batch; ++b)
    for (int64_t h = 0; h < sub.heads; ++h)
      for (int64_t qb = 0; qb < sub.q_blocks(); ++qb) {
        const int64_t list = mask.list(b, h, qb0 + qb);
        for (int64_t e = mask.row_start[list]; e < mask.row_start[list + 1]; ++e) {
          const int32_t kv = mask.kv_index[e];
          if (kv < kb0 || kv >= kb1) continue;
          sub.kv_index.push_back(static_cast<int32_t>(kv - kb0));
          sub.kind.push_back(mask.kind[e]);
          partial = partial || mask.kind[e] == BlockKind::kPartial;
        }
        sub.row_start.push_back(static_cast<int64_t>(sub.kv_index.size()));
      }
  if (partial) sub.predicate = std::make_shared<ShiftedPredicate>(mask.predicate, q.start, k.start);
  sub.validate();
  return sub;
}

PairPlanner::PairPlanner(const Pattern* pattern, int64_t batch, int64_t heads_q, int64_t heads_kv,
                         int64_t n, int64_t dim, bool causal)
    : causal_(causal) {
  if (pattern)
    global_ = pattern->plan(PlanInputs::shapes(batch, heads_q, heads_kv, n, n, dim, causal));
}

PairPlan PairPlanner::plan(TokenRange q, TokenRange k) const {
  PairPlan p;
  if (causal_ && k.start >= q.end) return p;  // every key after every query
  const bool diagonal = causal_ && k.start < q.end && q.start < k.end;
  if (diagonal)
    check(q.start == k.start && q.end == k.end, "global_n",
          "shards overlap without being equal (internal: chunks are whole)");
  p.kind = diagonal ? PairPlan::Kind::kDiagonal : PairPlan::Kind::kFull;
  if (global_) {
    p.mask = restrict_mask(global_->mask, q, k);
    if (p.mask->kv_index.empty()) p.kind = PairPlan::Kind::kSkip;
  }
  return p;
}

}  // namespace attnkit
