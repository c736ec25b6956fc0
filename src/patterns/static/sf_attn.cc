// sf_attn: SinkLoRA's SF-Attn, "SinkLoRA: Enhanced Efficiency and Chat Capabilities for
// Long-Context Large Language Models" (Hengyu Zhang, arXiv 2406.05678, Sec. 3.2.2).
//
// Rule (G = ceil(Nk / groups), s = G/2; positions bottom-right aligned):
//   group of position u, unshifted heads (the first ceil(H/2)): u / G.
//   shifted heads: the S2-Attn groups moved by s but "returned to place" instead of wrapped:
//     [0, s), [s, s + G), [s + G, s + 2G), ..., the last one ending at Nk. The wrapped group of
//     S2-Attn is split back into its two pieces, so no token sees the other end of the sequence.
//   key j is seen from query position p iff (j <= p, when causal) and
//     (same group  or  j < sinks  or  p < sinks)
//   i.e. the first `sinks` tokens are global: everyone sees them and they see everyone
//   (Longformer-style B(i,:) = B(:,i) = 1), still subject to causality when causal = 1.
// Defaults: groups = 4, sinks = 4 (the paper's g = 4 sink attention tokens), causal = 1.
// The repository snapshot holds only LongLoRA's S2-Attn, so this follows the paper's text; the
// choice of how the shifted half is "returned to place" is the split described above.
#include <algorithm>

#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class SinkShiftRule final : public IntervalRule {
 public:
  SinkShiftRule(int64_t nq, int64_t nk, int64_t heads, int64_t groups, int64_t sinks, bool causal)
      : IntervalRule(nq, nk, heads),
        group_(std::max<int64_t>(1, (nk + groups - 1) / groups)),
        shift_(group_ / 2),
        sinks_(sinks),
        causal_(causal),
        first_shifted_((heads + 1) / 2) {}
  int64_t head_class(int64_t h) const override { return h >= first_shifted_ ? 1 : 0; }
  void ranges(int64_t h, int64_t p, RowRanges* out) const override {
    if (p < 0 || p >= nk()) return;
    const int64_t last = causal_ ? p + 1 : nk();  // keys below `last` may be seen
    if (p < sinks_) {
      out->add(0, last);  // a sink sees everyone
      return;
    }
    out->add(0, std::min(sinks_, last));
    int64_t begin, end;
    if (head_class(h) == 0) {
      begin = p / group_ * group_;
      end = begin + group_;
    } else if (p < shift_) {
      begin = 0;
      end = shift_;
    } else {
      begin = shift_ + (p - shift_) / group_ * group_;
      end = begin + group_;
    }
    out->add(begin, std::min(end, last));
  }
  // The sinks' rows form one growing run, then each group does.
  int64_t nested_until(int64_t h, int64_t p) const override {
    if (p < 0) return -1;
    if (p < sinks_) return sinks_ - 1;
    int64_t end;
    if (head_class(h) == 0) {
      end = (p / group_ + 1) * group_;
    } else {
      end = p < shift_ ? shift_ : shift_ + ((p - shift_) / group_ + 1) * group_;
    }
    return std::min(end, nk()) - 1;
  }

 private:
  int64_t group_, shift_, sinks_;
  bool causal_;
  int64_t first_shifted_;
};

class SinkShiftPattern final : public IntervalPattern {
 public:
  explicit SinkShiftPattern(const PatternParams& params)
      : IntervalPattern(params,
                        params.get_int("causal") ? Direction::kCausal : Direction::kBidirectional),
        groups_(params.get_int("groups")),
        sinks_(params.get_int("sinks")),
        causal_(params.get_int("causal") != 0) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk,
                                                int64_t heads) const override {
    return std::make_shared<SinkShiftRule>(nq, nk, heads, groups_, sinks_, causal_);
  }

 private:
  int64_t groups_, sinks_;
  bool causal_;
};

}  // namespace

PatternRegistration sf_attn_pattern() {
  return {
      {"sf_attn",
       "SinkLoRA SF-Attn: S2-Attn groups with the shifted groups returned to place (no "
       "wrap-around) plus global sink tokens",
       "Zhang 2024, SinkLoRA (arXiv 2406.05678), SF-Attn",
       PatternFamily::kStatic,
       {int_param("groups", 4, 1, int64_t{1} << 30, "number of groups (group size = Nk / groups)"),
        int_param("sinks", 4, 0, int64_t{1} << 40,
                  "global sink tokens at the start (see and are seen by all)"),
        int_param("causal", 1, 0, 1, "1: everything also causal; 0: bidirectional")}},
      &construct_pattern<SinkShiftPattern>};
}
}  // namespace attnkit::static_patterns
