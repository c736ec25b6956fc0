// document: packed sequences ("document masking"), the block-diagonal causal mask of training on
// several documents packed into one sequence (e.g. the FlexAttention "document_mask" example and
// xformers' BlockDiagonalCausalMask).
//
// Rule: the keys are cut into consecutive documents of the given lengths; query at position p
// sees key j iff j <= p and j lies in p's document.
// Choices: `lengths=a+b+c` repeats cyclically until it covers all Nk keys (so a single length L
// means documents of L tokens each, and the default works at any size), and a document cut
// short by the end of the keys simply ends there. Default lengths = 1024.
#include <algorithm>

#include "attnkit/error.h"
#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

std::vector<int64_t> parse_lengths(const std::string& text) {
  std::vector<int64_t> lengths;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t plus = std::min(text.find('+', start), text.size());
    const std::string item = text.substr(start, plus - start);
    char* end = nullptr;
    const long long value = std::strtoll(item.c_str(), &end, 10);
    check(!item.empty() && end && *end == '\0' && value >= 1 && value <= (int64_t{1} << 40),
          "pattern",
          "'document' parameter 'lengths' must be positive integers joined by '+', got '" + text +
              "'");
    lengths.push_back(value);
    check(lengths.size() <= 1000000, "pattern", "'document' has more than 10^6 lengths");
    start = plus + 1;
  }
  return lengths;
}

class DocumentRule final : public IntervalRule {
 public:
  DocumentRule(int64_t nq, int64_t nk, const std::vector<int64_t>& lengths)
      : IntervalRule(nq, nk, 1) {
    for (int64_t at = 0, k = 0; at < nk; at += lengths[k++ % lengths.size()]) starts_.push_back(at);
  }
  void ranges(int64_t, int64_t p, RowRanges* out) const override {
    if (p < 0) return;
    const int64_t start = *(std::upper_bound(starts_.begin(), starts_.end(), p) - 1);
    out->add(start, p + 1);
  }
  // Sets grow inside a document.
  int64_t nested_until(int64_t, int64_t p) const override {
    if (p < 0) return -1;
    const auto next = std::upper_bound(starts_.begin(), starts_.end(), p);
    return next == starts_.end() ? nk() - 1 : *next - 1;
  }

 private:
  std::vector<int64_t> starts_;  // first key of each document, ascending, starts_[0] = 0
};

class DocumentPattern final : public IntervalPattern {
 public:
  explicit DocumentPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal),
        lengths_(parse_lengths(params.get_string("lengths"))) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<DocumentRule>(nq, nk, lengths_);
  }

 private:
  std::vector<int64_t> lengths_;
};

}  // namespace

PatternRegistration document_pattern() {
  return {{"document",
           "packed documents: causal inside each document, nothing across",
           "packed-sequence (document) masking, as in FlexAttention's document_mask",
           PatternFamily::kStatic,
           {text_param("lengths", "1024", "document lengths a+b+c, repeated to cover the keys")}},
          &construct_pattern<DocumentPattern>};
}
}  // namespace attnkit::static_patterns
