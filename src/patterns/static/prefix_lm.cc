// prefix_lm: prefix language model mask ("Exploring the Limits of Transfer Learning with a
// Unified Text-to-Text Transformer", T5; Raffel et al., 2020, Sec. 3.2.1).
//
// Rule: query at position p >= 0 sees key j iff j < prefix (bidirectional inside the prefix and
// visible to everyone after it) or j <= p (causal after the prefix). Queries at p < 0 (Nq > Nk)
// see nothing. Default prefix = 1024 (the paper has no fixed value; it is the input length).
#include <algorithm>

#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class PrefixRule final : public IntervalRule {
 public:
  PrefixRule(int64_t nq, int64_t nk, int64_t prefix) : IntervalRule(nq, nk, 1), prefix_(prefix) {}
  void ranges(int64_t, int64_t p, RowRanges* out) const override {
    if (p >= 0) out->add(0, std::max(prefix_, p + 1));
  }
  int64_t nested_until(int64_t, int64_t) const override { return nk() - 1; }  // sets only grow

 private:
  int64_t prefix_;
};

class PrefixPattern final : public IntervalPattern {
 public:
  explicit PrefixPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kBidirectional), prefix_(params.get_int("prefix")) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<PrefixRule>(nq, nk, prefix_);
  }

 private:
  int64_t prefix_;
};

}  // namespace

PatternRegistration prefix_lm_pattern() {
  return {{"prefix_lm",
           "prefix LM: keys j < prefix seen by all, causal after",
           "Raffel et al. 2020, T5 (prefix LM mask)",
           PatternFamily::kStatic,
           {int_param("prefix", 1024, 0, int64_t{1} << 40, "length of the bidirectional prefix")}},
          &construct_pattern<PrefixPattern>};
}
}  // namespace attnkit::static_patterns
