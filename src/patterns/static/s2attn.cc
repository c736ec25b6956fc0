// s2attn: shifted sparse attention (S²-Attn) of LongLoRA, "LongLoRA: Efficient Fine-tuning of
// Long-Context Large Language Models" (Chen et al., ICLR 2024); the code's rule, as in the
// SinkLoRA repository's llama_attn_replace.py.
//
// Rule: the Nk keys are cut into groups of G = ceil(Nk / groups) positions. The first
// ceil(H/2) query heads attend inside their group (causal). The other heads see the sequence
// rolled by -G/2 (position u moves to r(u) = (u - G/2) mod Nk), attend inside groups of that
// rolled order, causally in the rolled order, and are rolled back: key j is seen from query
// position p iff r(j) / G == r(p) / G and r(j) <= r(p). The wrap-around group joins the last
// G/2 tokens with the first G/2 (the first tokens then see the last ones: the leak SinkLoRA fixes).
// Defaults: groups = 4 (group_size_ratio = 1/4), causal = 1. causal = 0 drops the in-group
// order (bidirectional groups, as for encoders).
// Choices: when Nk is not a multiple of `groups` the last group is shorter; queries before the
// first key (Nq > Nk) see nothing; heads split as torch.chunk(2) does (the first half is larger).
#include <algorithm>

#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class ShiftedRule final : public IntervalRule {
 public:
  ShiftedRule(int64_t nq, int64_t nk, int64_t heads, int64_t groups, bool causal)
      : IntervalRule(nq, nk, heads),
        group_(std::max<int64_t>(1, (nk + groups - 1) / groups)),
        shift_(group_ / 2),
        causal_(causal),
        first_shifted_((heads + 1) / 2) {}
  int64_t head_class(int64_t h) const override { return h >= first_shifted_ ? 1 : 0; }
  void ranges(int64_t h, int64_t p, RowRanges* out) const override {
    if (p < 0 || p >= nk()) return;
    const int64_t shift = head_class(h) ? shift_ : 0;
    const int64_t r = (p - shift + nk()) % nk();
    const int64_t begin = r / group_ * group_;
    const int64_t end = causal_ ? r + 1 : std::min(begin + group_, nk());
    // Roll [begin, end) back by +shift, splitting it where it wraps.
    const int64_t b = begin + shift, e = end + shift;
    if (e <= nk()) {
      out->add(b, e);
    } else if (b >= nk()) {
      out->add(b - nk(), e - nk());
    } else {
      out->add(0, e - nk());
      out->add(b, nk());
    }
  }
  // Inside a (rolled) group the sets grow (causal) or stay (not causal), up to the wrap point.
  int64_t nested_until(int64_t h, int64_t p) const override {
    if (p < 0) return -1;
    const int64_t shift = head_class(h) ? shift_ : 0;
    const int64_t r = (p - shift + nk()) % nk();
    const int64_t group_last = std::min((r / group_ + 1) * group_, nk()) - 1;
    return std::min(p + (group_last - r), nk() - 1);
  }

 private:
  int64_t group_, shift_;
  bool causal_;
  int64_t first_shifted_;
};

class ShiftedPattern final : public IntervalPattern {
 public:
  explicit ShiftedPattern(const PatternParams& params)
      : IntervalPattern(params,
                        params.get_int("causal") ? Direction::kCausal : Direction::kBidirectional),
        groups_(params.get_int("groups")),
        causal_(params.get_int("causal") != 0) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk,
                                                int64_t heads) const override {
    return std::make_shared<ShiftedRule>(nq, nk, heads, groups_, causal_);
  }

 private:
  int64_t groups_;
  bool causal_;
};

}  // namespace

PatternRegistration s2attn_pattern() {
  return {
      {"s2attn",
       "LongLoRA shifted sparse attention: groups of Nk/groups; half the heads shifted by half "
       "a group, with wrap-around",
       "Chen et al. 2024, LongLoRA (S2-Attn)",
       PatternFamily::kStatic,
       {int_param("groups", 4, 1, int64_t{1} << 30, "number of groups (group size = Nk / groups)"),
        int_param("causal", 1, 0, 1,
                  "1: causal inside groups (in rolled order); 0: bidirectional groups")}},
      &construct_pattern<ShiftedPattern>};
}
}  // namespace attnkit::static_patterns
