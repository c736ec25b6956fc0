// Shared engine of the 1-D static patterns (and of grid/radial.cc): a rule that says, for one query
// row, which key ranges it sees. From that one function come the vectorizable tile predicate (per
// row: clear, then memset the ranges) and the exact block lists (per query block: difference arrays
// over kv blocks, O(rows x ranges + listed blocks), or two rows per run where the rule says its
// allowed sets are nested). Each pattern file only states its rule: `ranges()` and, optionally,
// `nested_until()`.
//
// Positions: query row i of nq has absolute position p = i + (nk - nq) (bottom-right alignment);
// keys are 0..nk-1. Rows with p < 0 normally see nothing (they precede every key).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "attnkit/block_mask.h"
#include "attnkit/pattern.h"

namespace attnkit::static_patterns {

// Keys begin, begin + stride, ... below end. Ranges may lie partly outside [0, nk) (clipped).
struct KeyRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t stride = 1;
};

// The allowed keys of one query row: a few ranges in any order, which may overlap. A block
// covered only by several ranges together (or by a strided one) is listed PARTIAL, never FULL.
class RowRanges {
 public:
  void clear() { items_.clear(); }
  void add(int64_t begin, int64_t end, int64_t stride = 1) {
    if (begin < end) items_.push_back({begin, end, stride});
  }
  // Clips to [0, nk), drops empty ranges, turns one-key strided ranges into stride 1, and sorts
  // and merges the stride-1 ranges (strided ones follow, unmerged).
  void normalize(int64_t nk);
  const std::vector<KeyRange>& items() const { return items_; }

 private:
  std::vector<KeyRange> items_;
};

class IntervalRule : public TilePredicate {
 public:
  // heads: 1 when every query head has the same rule, else the number of query heads.
  IntervalRule(int64_t nq, int64_t nk, int64_t heads) : nq_(nq), nk_(nk), heads_(heads) {}

  // Key ranges of the query at absolute position p (= row + nk - nq) for query head h.
  virtual void ranges(int64_t h, int64_t p, RowRanges* out) const = 0;
  // Heads whose rules are identical share a class; block lists are built once per class.
  virtual int64_t head_class(int64_t h) const { return 0; }
  // Optional speed-up: the last position p' >= p such that the allowed key sets only grow (or
  // stay) from p to p': A(p) ⊆ A(p+1) ⊆ ... ⊆ A(p'). The block builder then reads two rows per
  // such run (the union is A(p'), the intersection A(p)) instead of every row. Default: p.
  virtual int64_t nested_until(int64_t h, int64_t p) const { return p; }
  // Optional speed-up for the tile predicate: the ranges of `ranges(h, p)` that may meet keys
  // [k0, k1) (more may be returned). Default: all of them.
  virtual void ranges_in(int64_t h, int64_t p, int64_t k0, int64_t k1, RowRanges* out) const {
    ranges(h, p, out);
  }

  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override;
  // One rule for every head (heads == 1): the kernel fills one tile per GQA group.
  bool same_for_all_heads() const override { return heads_ == 1; }
  int64_t nq() const { return nq_; }
  int64_t nk() const { return nk_; }
  int64_t heads() const { return heads_; }
  int64_t offset() const { return nk_ - nq_; }

 private:
  int64_t nq_, nk_, heads_;
};

// The block mask of a rule: exact FULL / PARTIAL / absent lists, built from the row ranges.
BlockMask build_interval_mask(std::shared_ptr<const IntervalRule> rule, int64_t q_block = 64,
                              int64_t kv_block = 64);

// A static pattern whose rule is an IntervalRule made for the inputs' sizes: plan() builds its
// exact block mask (ANDed with causality by the kernel when planned causal).
class IntervalPattern : public Pattern {
 public:
  Plan plan(const PlanInputs& inputs) const override;

 protected:
  using Pattern::Pattern;
  // nq, nk: query and key rows; heads: the number of query heads.
  virtual std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk,
                                                        int64_t heads) const = 0;
};

}  // namespace attnkit::static_patterns
