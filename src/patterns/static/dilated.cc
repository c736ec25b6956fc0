// dilated: causal dilated sliding window, as in Longformer's dilated sliding window
// (Beltagy et al., 2020) and the "dilated" equal-budget baseline of PowerAttention.
//
// Rule: query at position p sees keys p - k * dilation for k = 0 .. size - 1 (and >= 0).
// Defaults: size = 256, dilation = 2 (a receptive field of 511 positions).
// Choices where the sources are loose: `size` counts the keys seen (not the span), the query's
// own position is always one of them, and the holes are relative to each query (so neighbouring
// queries see interleaved key sets; no block is FULL when dilation > 1).
#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class DilatedRule final : public IntervalRule {
 public:
  DilatedRule(int64_t nq, int64_t nk, int64_t size, int64_t dilation)
      : IntervalRule(nq, nk, 1), size_(size), dilation_(dilation) {}
  void ranges(int64_t, int64_t p, RowRanges* out) const override {
    out->add(p - (size_ - 1) * dilation_, p + 1, dilation_);
  }

 private:
  int64_t size_, dilation_;
};

class DilatedPattern final : public IntervalPattern {
 public:
  explicit DilatedPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal),
        size_(params.get_int("size")),
        dilation_(params.get_int("dilation")) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<DilatedRule>(nq, nk, size_, dilation_);
  }

 private:
  int64_t size_, dilation_;
};

}  // namespace

PatternRegistration dilated_pattern() {
  return {
      {"dilated",
       "causal dilated window: query p sees keys p - k*dilation, k < size",
       "Beltagy et al. 2020, Longformer (dilated sliding window)",
       PatternFamily::kStatic,
       {int_param("size", 256, 1, int64_t{1} << 30, "keys seen per query, itself included"),
        int_param("dilation", 2, 1, int64_t{1} << 20, "distance between consecutive keys seen")}},
      &construct_pattern<DilatedPattern>};
}
}  // namespace attnkit::static_patterns
