// radial: Radial Attention's static mask over video tokens (Li, Li, Cai, ... Han, "Radial
// Attention: O(n log n) Sparse Attention with Energy Decay for Long Video Generation", NeurIPS
// 2025, arXiv 2506.19852). Rule taken from the official code, mit-han-lab/radial-attention
// radial_attn/attn_mask.py (get_window_width, get_diagonal_split_mask, gen_log_mask_shrinked).
//
// Tokens: `frames` frames of s = frame_tokens tokens each, frame-major (query token k of frame i,
// key token l of frame j, dist = |i - j|). Query (i, k) sees key (j, l) iff
//   - sink and j == 0                      (the first frame is an attention sink: always seen), or
//   - dist == 0, or dist == 1 (model=hunyuan)             (dense central band), or
//   - dist == 1 (model=wan): |k - l| <= s / 2, or
//   - dist >= 2: with base = 2^bit_length(s) / 2^bit_length(dist)    (halves per power of two),
//       width = max(base * decay, min_width),  keep = base >= min_width or
//       dist % int(min_width / base) == 0     (frame pairs skipped periodically once base is
//       small), allowed iff keep and |k - l| <= width.
// Defaults: frames=16 (the code's MaskMap default) with frame_tokens=0 = N / frames; decay=0.95
// (HunyuanVideo's script; Wan2.1 uses 0.2); min_width=128 (the code's threshold, equal to its block
// size); sink=1 (the code always adds frame 0); model=hunyuan.
//
// Choices where we differ from the code, on purpose:
//   - The code applies its split mask to dist <= 1 too; for s < 128 (tiny test frames) that would
//     drop the dense neighbour band, contradicting the paper. We keep dist <= 1 dense (it is the
//     same for the real sizes, s >= 128).
//   - The code then shrinks the element mask to 128 x 128 blocks (shrinkMaskStrict: keep a block
//     if > 60% of its non-empty columns are > 1/3 dense). We run the element rule itself: our
//     blocks are classified exactly and PARTIAL blocks are masked per element, so no pair outside
//     the rule is attended and none inside it is dropped.
//   - Text tokens (dense rows and columns in the code) are not part of this pattern.
#include <cmath>

#include "attnkit/error.h"
#include "patterns/static/interval_rule.h"

namespace attnkit::patterns {
namespace {

int64_t bit_length(int64_t x) {
  int64_t bits = 0;
  while (x > 0) ++bits, x >>= 1;
  return bits;
}

struct RadialParams {
  int64_t frames = 16, frame_tokens = 0, min_width = 128;
  double decay = 0.95;
  bool sink = true, wan = false;
};

// One query row: per key frame, nothing / the whole frame / a diagonal band of half-width w.
class RadialRule : public IntervalRule {
 public:
  RadialRule(const RadialParams& p, int64_t n) : IntervalRule(n, n, 1), p_(p) {
    const int64_t s = p.frame_tokens;
    band_.assign(p.frames, s);  // -1: frame pair skipped; >= s - 1: the whole frame
    for (int64_t dist = 1; dist < p.frames; ++dist) {
      if (dist == 1) {
        band_[1] = p.wan ? s / 2 : s;
        continue;
      }
      const double base = std::ldexp(1.0, static_cast<int>(bit_length(s) - bit_length(dist)));
      const double min_width = static_cast<double>(p.min_width);
      const bool keep = base >= min_width || dist % static_cast<int64_t>(min_width / base) == 0;
      const double width = std::max(base * p.decay, min_width);
      band_[dist] = keep ? static_cast<int64_t>(std::floor(width)) : -1;
    }
  }

  void ranges(int64_t h, int64_t pos, RowRanges* out) const override {
    const int64_t s = p_.frame_tokens;
    const int64_t i = pos / s, k = pos % s;
    for (int64_t j = 0; j < p_.frames; ++j) {
      const int64_t w = p_.sink && j == 0 ? s : band_[std::abs(i - j)];
      if (w < 0) continue;
      out->add(j * s + std::max<int64_t>(k - w, 0), j * s + std::min(s, k + w + 1));
    }
  }

 private:
  RadialParams p_;
  std::vector<int64_t> band_;  // per frame distance
};

class RadialPattern : public IntervalPattern {
 public:
  RadialPattern(const RadialParams& p, std::string params)
      : IntervalPattern("radial", std::move(params)), p_(p) {}

  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk,
                                                int64_t heads) const override {
    check(nq == nk, "--pattern",
          "'radial' is a self-attention over video tokens: Nq = " + std::to_string(nq) +
              " must equal Nk = " + std::to_string(nk));
    RadialParams p = p_;
    if (p.frame_tokens == 0) {
      check(nq % p.frames == 0, "--pattern",
            "'radial': N = " + std::to_string(nq) + " is not a multiple of frames = " +
                std::to_string(p.frames) + "; give frame_tokens or another frames");
      p.frame_tokens = nq / p.frames;
    }
    check(p.frames * p.frame_tokens == nq, "--pattern",
          "'radial': frames * frame_tokens = " + std::to_string(p.frames) + " * " +
              std::to_string(p.frame_tokens) +
              " must equal the sequence length N = " + std::to_string(nq));
    check(p.frame_tokens >= 1, "--pattern", "'radial': N = 0 has no frames");
    return std::make_shared<RadialRule>(p, nq);
  }

 private:
  RadialParams p_;
};

std::unique_ptr<Pattern> make(const PatternParams& params) {
  const int64_t kMax = int64_t{1} << 30;
  RadialParams p;
  p.frames = int_param(params, "radial", "frames", 1, kMax);
  p.frame_tokens = int_param(params, "radial", "frame_tokens", 0, kMax);
  p.min_width = int_param(params, "radial", "min_width", 1, kMax);
  p.sink = int_param(params, "radial", "sink", 0, 1) != 0;
  p.decay = params.get_double("decay");
  check(p.decay > 0.0, "--pattern",
        "'radial' parameter 'decay' must be > 0, got " + params.get_string("decay"));
  const std::string model = params.get_string("model");
  check(model == "hunyuan" || model == "wan", "--pattern",
        "'radial' parameter 'model' must be hunyuan or wan, got '" + model + "'");
  p.wan = model == "wan";
  return std::make_unique<RadialPattern>(p, params.canonical());
}

[[maybe_unused]] const bool registered = register_pattern(
    PatternInfo{"radial",
                "Radial Attention: dense near frames, diagonal bands halving per 2x frame distance",
                "Li et al., Radial Attention (NeurIPS 2025), rule of mit-han-lab/radial-attention",
                {{"frames", "16", "video frames (the code's MaskMap default)"},
                 {"frame_tokens", "0", "tokens per frame; 0 = N / frames"},
                 {"decay", "0.95", "band width factor (HunyuanVideo 0.95, Wan2.1 0.2)"},
                 {"min_width", "128", "minimum band width; below it frame pairs are skipped"},
                 {"sink", "1", "1: every query sees the whole first frame"},
                 {"model", "hunyuan", "hunyuan: frame distance 1 dense; wan: band s/2"}}},
    &make);

}  // namespace
}  // namespace attnkit::patterns
