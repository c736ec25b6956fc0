#include "patterns/static/interval_rule.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace attnkit::static_patterns {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// First member of strided range r at or after key `from`.
int64_t first_member(const KeyRange& r, int64_t from) {
  if (from <= r.begin) return r.begin;
  return r.begin + ceil_div(from - r.begin, r.stride) * r.stride;
}

// Block lists of one (head class, query block) into `out`. Scratch arrays are per thread and
// are returned to zero over the touched span before returning.
void build_row(const IntervalRule& rule, int64_t h, int64_t qb, int64_t q_block, int64_t kv_block,
               std::vector<BlockEntry>* out) {
  const int64_t kv_blocks = ceil_div(rule.nk(), kv_block);
  thread_local std::vector<int32_t> touch_diff, full_diff;
  thread_local RowRanges row;
  if (static_cast<int64_t>(touch_diff.size()) < kv_blocks + 1) {
    touch_diff.assign(kv_blocks + 1, 0);
    full_diff.assign(kv_blocks + 1, 0);
  }
  const int64_t q0 = qb * q_block;
  const int64_t rows = std::min(q_block, rule.nq() - q0);
  // Every diff entry written lies in [span_lo, span_hi + 1] (kept even if a rule's nested_until
  // is wrong, so the scratch arrays always return to zero; the tests catch the wrong lists).
  int64_t span_lo = kv_blocks, span_hi = -1;
  // Blocks met by the allowed keys of one row (or of the union of a nested run: its last row).
  const auto add_touched = [&](const RowRanges& ranges) {
    for (const KeyRange& r : ranges.items()) {
      const int64_t first = r.begin / kv_block, last = (r.end - 1) / kv_block;
      span_lo = std::min(span_lo, first);
      span_hi = std::max(span_hi, last);
      if (r.stride == 1) {
        touch_diff[first] += 1;
        touch_diff[last + 1] -= 1;
        continue;
      }
      for (int64_t kb = first; kb <= last; ++kb) {
        if (first_member(r, kb * kv_block) < std::min(r.end, (kb + 1) * kv_block)) {
          touch_diff[kb] += 1;
          touch_diff[kb + 1] -= 1;
        }
      }
    }
  };
  // Blocks covered by one row (or by every row of a nested run: its first row), `weight` rows.
  const auto add_full = [&](const RowRanges& ranges, int32_t weight) {
    for (const KeyRange& r : ranges.items()) {
      if (r.stride != 1) continue;  // a strided range covers no block (see the header)
      // Fully covered blocks start at or after begin and end at or before end (the last block
      // ends at nk).
      const int64_t full_first = ceil_div(r.begin, kv_block);
      const int64_t full_end = r.end == rule.nk() ? kv_blocks : r.end / kv_block;
      if (full_first < full_end) {
        span_lo = std::min(span_lo, full_first);
        span_hi = std::max(span_hi, full_end - 1);
        full_diff[full_first] += weight;
        full_diff[full_end] -= weight;
      }
    }
  };
  for (int64_t i = q0; i < q0 + rows;) {
    const int64_t p = i + rule.offset();
    const int64_t last = std::clamp(
        std::min(rule.nested_until(h, p), rule.nk() - 1) - rule.offset(), i, q0 + rows - 1);
    row.clear();
    rule.ranges(h, p, &row);
    row.normalize(rule.nk());
    add_full(row, static_cast<int32_t>(last - i + 1));
    if (last != i) {
      row.clear();
      rule.ranges(h, last + rule.offset(), &row);
      row.normalize(rule.nk());
    }
    add_touched(row);
    i = last + 1;
  }
  int64_t touched = 0, full = 0;
  for (int64_t kb = span_lo; kb <= span_hi; ++kb) {
    touched += touch_diff[kb];
    full += full_diff[kb];
    touch_diff[kb] = 0;
    full_diff[kb] = 0;
    if (touched > 0)
      out->push_back(
          {static_cast<int32_t>(kb), full == rows ? BlockKind::kFull : BlockKind::kPartial});
  }
  if (span_hi >= 0) {
    touch_diff[span_hi + 1] = 0;
    full_diff[span_hi + 1] = 0;
  }
}

}  // namespace

void RowRanges::normalize(int64_t nk) {
  size_t kept = 0;
  for (KeyRange r : items_) {
    if (r.stride < 1) r.stride = 1;
    if (r.stride > 1 && r.begin < 0) r.begin = first_member(r, 0);
    r.begin = std::max<int64_t>(r.begin, 0);
    r.end = std::min(r.end, nk);
    if (r.begin >= r.end) continue;
    if (r.stride > 1 && r.begin + r.stride >= r.end) r = {r.begin, r.begin + 1, 1};
    items_[kept++] = r;
  }
  items_.resize(kept);
  // Stride-1 ranges first, sorted by begin; strided ranges after them (rules usually emit
  // them in order already, so the sort is skipped).
  const auto before = [](const KeyRange& a, const KeyRange& b) {
    if ((a.stride == 1) != (b.stride == 1)) return a.stride == 1;
    return a.begin < b.begin;
  };
  if (!std::is_sorted(items_.begin(), items_.end(), before))
    std::sort(items_.begin(), items_.end(), before);
  size_t merged = 0;
  for (size_t k = 0; k < items_.size(); ++k) {
    const KeyRange& r = items_[k];
    if (r.stride == 1 && merged > 0 && items_[merged - 1].stride == 1 &&
        r.begin <= items_[merged - 1].end) {
      items_[merged - 1].end = std::max(items_[merged - 1].end, r.end);
    } else {
      items_[merged++] = r;
    }
  }
  items_.resize(merged);
}

void IntervalRule::fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                        uint8_t* allow, int64_t ld) const {
  thread_local RowRanges row;
  for (int64_t i = 0; i < nq; ++i) {
    uint8_t* out = allow + i * ld;
    std::memset(out, 0, static_cast<size_t>(nk));
    row.clear();
    ranges_in(h, q0 + i + offset(), k0, k0 + nk, &row);
    for (const KeyRange& r : row.items()) {
      const int64_t lo = std::max({r.begin, k0, int64_t{0}});
      const int64_t hi = std::min({r.end, k0 + nk, nk_});
      if (lo >= hi) continue;
      if (r.stride <= 1) {
        std::memset(out + (lo - k0), 1, static_cast<size_t>(hi - lo));
      } else {
        for (int64_t j = first_member(r, lo); j < hi; j += r.stride) out[j - k0] = 1;
      }
    }
  }
}

BlockMask build_interval_mask(std::shared_ptr<const IntervalRule> rule, int64_t q_block,
                              int64_t kv_block) {
  const IntervalRule& r = *rule;
  // One representative head per class; if there is one class the lists broadcast over heads.
  std::map<int64_t, int64_t> representative;
  std::vector<int64_t> class_of(r.heads());
  for (int64_t h = 0; h < r.heads(); ++h) {
    class_of[h] = r.head_class(h);
    representative.emplace(class_of[h], h);
  }
  BlockMaskShape shape{r.nq(),  r.nk(),  1, representative.size() > 1 ? r.heads() : 1,
                       q_block, kv_block};
  if (shape.heads == 1)
    return block_mask_from_rows(shape, rule,
                                [&](int64_t, int64_t, int64_t qb, std::vector<BlockEntry>* out) {
                                  build_row(r, 0, qb, q_block, kv_block, out);
                                });
  // Several classes: build each class's lists once, then copy them to its heads.
  const int64_t q_blocks = ceil_div(r.nq(), q_block);
  std::vector<int64_t> classes;
  for (const auto& [c, h] : representative) classes.push_back(c);
  std::vector<std::vector<BlockEntry>> lists(classes.size() * q_blocks);
#pragma omp parallel for schedule( \
    dynamic,                       \
    4) if (static_cast <int64_t>(lists.size()) * ceil_div(r.nk(), kv_block) >= (int64_t{1} << 22))
  for (int64_t k = 0; k < static_cast<int64_t>(lists.size()); ++k)
    build_row(r, representative[classes[k / q_blocks]], k % q_blocks, q_block, kv_block, &lists[k]);
  return block_mask_from_rows(
      shape, rule, [&](int64_t, int64_t h, int64_t qb, std::vector<BlockEntry>* out) {
        const int64_t c =
            std::lower_bound(classes.begin(), classes.end(), class_of[h]) - classes.begin();
        *out = lists[c * q_blocks + qb];
      });
}

Plan IntervalPattern::plan(const PlanInputs& in) const {
  in.validate(false);
  Plan plan;
  plan.mask = build_interval_mask(make_rule(in.q.shape[2], in.k.shape[2], in.q.shape[1]));
  plan.causal = in.causal;
  return plan;
}

}  // namespace attnkit::static_patterns
