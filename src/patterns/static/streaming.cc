// streaming: attention sinks + recent window, "Efficient Streaming Language Models with
// Attention Sinks" (StreamingLLM; Xiao et al., ICLR 2024).
//
// Rule: query at position p sees key j iff j <= p and (j < sinks or j > p - window).
// Defaults: sinks = 4 (the paper's 4 initial tokens, `start_size` in kv_cache.py), window = 512
// (`recent_size` default of StartRecentKVCache). As a mask this is the prefill equivalent of the
// rolling cache; the RoPE position shift inside the cache is a model-side concern.
#include <algorithm>

#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class StreamingRule final : public IntervalRule {
 public:
  StreamingRule(int64_t nq, int64_t nk, int64_t sinks, int64_t window)
      : IntervalRule(nq, nk, 1), sinks_(sinks), window_(window) {}
  void ranges(int64_t, int64_t p, RowRanges* out) const override {
    out->add(0, std::min(sinks_, p + 1));
    out->add(p - window_ + 1, p + 1);
  }

 private:
  int64_t sinks_, window_;
};

class StreamingPattern final : public IntervalPattern {
 public:
  explicit StreamingPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal),
        sinks_(params.get_int("sinks")),
        window_(params.get_int("window")) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<StreamingRule>(nq, nk, sinks_, window_);
  }

 private:
  int64_t sinks_, window_;
};

}  // namespace

PatternRegistration streaming_pattern() {
  return {{"streaming",
           "attention sinks + causal recent window: j < sinks or p-window < j <= p",
           "Xiao et al. 2024, Efficient Streaming Language Models with Attention Sinks",
           PatternFamily::kStatic,
           {int_param("sinks", 4, 0, int64_t{1} << 40, "initial tokens every query sees"),
            int_param("window", 512, 1, int64_t{1} << 40,
                      "recent keys seen per query, itself included")}},
          &construct_pattern<StreamingPattern>};
}
}  // namespace attnkit::static_patterns
