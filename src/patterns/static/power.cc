// power: PowerAttention, "PowerAttention: Exponentially Scaling of Receptive Fields for
// Effective Sparse Attention" (Chen et al., arXiv 2503.03588), Algorithm 1.
//
// Rule, with d = floor(p / block) - floor(j / block) the block distance of query position p and
// key j:   allowed iff j <= p and (j < block  or  d < window  or  d is a power of two)
// (d = 0 passes the power-of-two test too, so the diagonal block is always kept). Defaults from
// the paper's setting (Sec. 4.1): block = 256 tokens, window = 5 blocks, one sink block.
// The pattern blocks are the paper's, independent of the kernel's 64-wide tiles.
#include <algorithm>

#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

class PowerRule final : public IntervalRule {
 public:
  PowerRule(int64_t nq, int64_t nk, int64_t block, int64_t window)
      : IntervalRule(nq, nk, 1), block_(block), window_(window) {}
  void ranges(int64_t, int64_t p, RowRanges* out) const override {
    if (p < 0) return;
    const int64_t qb = p / block_;
    out->add(0, std::min(block_, p + 1));  // sink block
    // Power-of-two distances beyond the window, farthest first so the ranges come sorted.
    int64_t d = 1;
    while (d * 2 <= qb) d *= 2;
    for (; d >= 1 && d >= window_; d /= 2) out->add((qb - d) * block_, (qb - d + 1) * block_);
    // Window of `window` blocks (distance 0 .. window-1), the diagonal block always.
    out->add((qb - std::max<int64_t>(window_, 1) + 1) * block_, p + 1);
  }
  // Inside one pattern block only the causal ends move: the sets grow.
  int64_t nested_until(int64_t, int64_t p) const override {
    return p < 0 ? -1 : (p / block_ + 1) * block_ - 1;
  }

 private:
  int64_t block_, window_;
};

class PowerPattern final : public IntervalPattern {
 public:
  explicit PowerPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal),
        block_(params.get_int("block")),
        window_(params.get_int("window")) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<PowerRule>(nq, nk, block_, window_);
  }

 private:
  int64_t block_, window_;
};

}  // namespace

PatternRegistration power_pattern() {
  return {{"power",
           "causal; sink block, window blocks, and blocks at power-of-two block distances",
           "Chen et al. 2025, PowerAttention (arXiv 2503.03588), Algorithm 1",
           PatternFamily::kStatic,
           {int_param("block", 256, 1, int64_t{1} << 30, "pattern block size in tokens"),
            int_param("window", 5, 0, int64_t{1} << 30,
                      "local window in blocks (block distance < window)")}},
          &construct_pattern<PowerPattern>};
}
}  // namespace attnkit::static_patterns
