// window: causal sliding-window (local) attention, as in Longformer's sliding window
// (Beltagy et al., 2020), Mistral's SWA and the "recent" part of StreamingLLM.
//
// Rule: query at position p sees keys p - size + 1 .. p (size keys, itself included), bottom-right
// aligned. Default size = 512 (Longformer's window; no single paper fixes it for causal LMs).
// Choice: the window is one-sided (causal); a two-sided window is natten1d's job.
#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class WindowRule final : public IntervalRule {
 public:
  WindowRule(int64_t nq, int64_t nk, int64_t size) : IntervalRule(nq, nk, 1), size_(size) {}
  void ranges(int64_t, int64_t p, RowRanges* out) const override { out->add(p - size_ + 1, p + 1); }

 private:
  int64_t size_;
};

class WindowPattern final : public IntervalPattern {
 public:
  explicit WindowPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal), size_(params.get_int("size")) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<WindowRule>(nq, nk, size_);
  }

 private:
  int64_t size_;
};

}  // namespace

PatternRegistration window_pattern() {
  return {{"window",
           "causal sliding window: query p sees keys p-size+1..p",
           "Beltagy et al. 2020, Longformer (sliding window); Jiang et al. 2023, Mistral 7B",
           PatternFamily::kStatic,
           {int_param("size", 512, 1, int64_t{1} << 40, "keys seen per query, itself included")}},
          &construct_pattern<WindowPattern>};
}
}  // namespace attnkit::static_patterns
