// causal: the decoder mask of "Attention Is All You Need" (Vaswani et al., 2017).
//
// Rule: query i (absolute position p = i + Nk - Nq, bottom-right aligned as in FlashAttention
// 2.1+) sees key j iff j <= p. No parameters. As a pattern it drives the block-sparse kernel with
// only the diagonal blocks PARTIAL, which makes it the baseline of every sparse comparison.
#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class CausalRule final : public IntervalRule {
 public:
  using IntervalRule::IntervalRule;
  void ranges(int64_t, int64_t p, RowRanges* out) const override { out->add(0, p + 1); }
  int64_t nested_until(int64_t, int64_t) const override { return nk() - 1; }  // sets only grow
};

class CausalPattern final : public IntervalPattern {
 public:
  explicit CausalPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<CausalRule>(nq, nk, 1);
  }
};

}  // namespace

PatternRegistration causal_pattern() {
  return {{"causal",
           "causal (decoder) mask, bottom-right aligned: key j <= query position",
           "Vaswani et al. 2017, Attention Is All You Need",
           PatternFamily::kStatic,
           {}},
          &construct_pattern<CausalPattern>};
}
}  // namespace attnkit::static_patterns
