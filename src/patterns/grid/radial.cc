// radial: Radial Attention's static mask over video tokens (Li, Li, Cai, ... Han, "Radial
// Attention: O(n log n) Sparse Attention with Energy Decay for Long Video Generation", NeurIPS
// 2025, arXiv 2506.19852). Rule taken from the official code, mit-han-lab/radial-attention
// radial_attn/attn_mask.py (get_window_width, get_diagonal_split_mask, gen_log_mask_shrinked).
//
// Tokens: `frames` frames of s = frame_tokens tokens each, frame-major (query token k of frame i,
// key token l of frame j, dist = |i - j|). Query (i, k) sees key (j, l) iff
//   - sink and j == 0                      (the first frame is an attention sink: always seen), or
//   - dist <= 1                            (dense central band: the frame and its neighbours), or
//   - dist >= 2: with base = 2^bit_length(s) / 2^bit_length(dist)    (halves per power of two),
//       width = max(base * decay, min_width),  keep = base >= min_width or
//       dist % int(min_width / base) == 0     (frame pairs skipped periodically once base is
//       small), allowed iff keep and |k - l| <= width.
// Bidirectional (video diffusion attends both ways). Defaults: frames=16 (the code's MaskMap
// default) with frame_tokens=0 = N / frames; decay=0.95 (HunyuanVideo's script; Wan2.1 uses 0.2,
// Wan2.2 0.8); min_width=128 (the code's threshold, equal to its block size); model=hunyuan;
// sink=-1 = as the model: the official code keeps frame 0 as a sink for Wan only (it was removed
// for HunyuanVideo in commit 2f61c30, "remove attention sink for hunyuanvideo"). The distance-1
// band is a whole frame for both models, as the current code has it (until commit af371ca Wan's
// was a band of s/2).
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
// Family: grid (tokens on a frames x frame_tokens grid, attended both ways). Each query row's keys
// are a few intervals, so the rule runs on the static family's interval engine (interval_rule.h)
// rather than on the box tiling of the separable neighbourhoods.
#include <cmath>

#include "attnkit/error.h"
#include "patterns/grid/grid_patterns.h"
#include "patterns/static/interval_rule.h"

namespace attnkit::grid_patterns {
namespace {

using static_patterns::IntervalPattern;
using static_patterns::IntervalRule;
using static_patterns::RowRanges;

int64_t bit_length(int64_t x) {
  int64_t bits = 0;
  while (x > 0) ++bits, x >>= 1;
  return bits;
}

struct RadialParams {
  int64_t frames = 16, frame_tokens = 0, min_width = 128;
  double decay = 0.95;
  bool sink = false;
};

// One query row: per key frame, nothing / the whole frame / a diagonal band of half-width w.
class RadialRule : public IntervalRule {
 public:
  RadialRule(const RadialParams& p, int64_t n) : IntervalRule(n, n, 1), p_(p) {
    const int64_t s = p.frame_tokens;
    band_.assign(p.frames, s);  // -1: frame pair skipped; >= s - 1: the whole frame
    for (int64_t dist = 1; dist < p.frames; ++dist) {
      if (dist == 1) continue;  // the whole neighbouring frame
      const double base = std::ldexp(1.0, static_cast<int>(bit_length(s) - bit_length(dist)));
      const double min_width = static_cast<double>(p.min_width);
      const bool keep = base >= min_width || dist % static_cast<int64_t>(min_width / base) == 0;
      const double width = std::max(base * p.decay, min_width);
      band_[dist] = keep ? static_cast<int64_t>(std::floor(width)) : -1;
    }
    for (int64_t dist = 0; dist < p.frames; ++dist)
      if (band_[dist] >= 0) kept_.push_back(dist);
  }

  // Only the kept frame distances are visited (in ascending key order), so a row costs
  // O(kept frames), no more than the keys it attends: planning stays bounded by the attention
  // however many frames there are.
  void ranges(int64_t h, int64_t pos, RowRanges* out) const override {
    const int64_t i = pos / p_.frame_tokens;
    if (p_.sink && i != 0) add_frame(0, pos, out);
    for (auto it = kept_.rbegin(); it != kept_.rend(); ++it)  // frames i - dist, ascending
      if (*it > 0 && i - *it >= 0 && !(p_.sink && i - *it == 0)) add_frame(i - *it, pos, out);
    for (int64_t dist : kept_)  // frames i + dist, ascending
      if (i + dist < p_.frames) add_frame(i + dist, pos, out);
  }
  // The frames that meet keys [k0, k1) only: the kernel's tiles ask for a few frames at a time.
  void ranges_in(int64_t h, int64_t pos, int64_t k0, int64_t k1, RowRanges* out) const override {
    const int64_t s = p_.frame_tokens, i = pos / s;
    for (int64_t j = k0 / s; j <= (k1 - 1) / s && j < p_.frames; ++j)
      if ((p_.sink && j == 0) || band_[std::abs(i - j)] >= 0) add_frame(j, pos, out);
  }

 private:
  // Keys of frame j seen from position pos: the whole frame, or a band around pos's offset.
  void add_frame(int64_t j, int64_t pos, RowRanges* out) const {
    const int64_t s = p_.frame_tokens, i = pos / s, k = pos % s;
    const int64_t w = p_.sink && j == 0 ? s : band_[std::abs(i - j)];
    out->add(j * s + std::max<int64_t>(k - w, 0), j * s + std::min(s, k + w + 1));
  }

  RadialParams p_;
  std::vector<int64_t> band_;  // per frame distance: -1 skipped, else the band half-width
  std::vector<int64_t> kept_;  // frame distances with a band, ascending
};

RadialParams radial_params(const PatternParams& params) {
  RadialParams p;
  p.frames = params.get_int("frames");
  p.frame_tokens = params.get_int("frame_tokens");
  p.min_width = params.get_int("min_width");
  p.decay = params.get_real("decay");
  const int64_t sink = params.get_int("sink");
  p.sink = sink < 0 ? params.get_string("model") == "wan" : sink == 1;
  return p;
}

class RadialPattern final : public IntervalPattern {
 public:
  explicit RadialPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kBidirectional), p_(radial_params(params)) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk,
                                                int64_t heads) const override {
    check(nq == nk, "pattern",
          "'radial' is a self-attention over video tokens: Nq = " + std::to_string(nq) +
              " must equal Nk = " + std::to_string(nk));
    RadialParams p = p_;
    if (p.frame_tokens == 0) {
      check(nq % p.frames == 0, "pattern",
            "'radial': N = " + std::to_string(nq) + " is not a multiple of frames = " +
                std::to_string(p.frames) + "; give frame_tokens or another frames");
      p.frame_tokens = nq / p.frames;
    }
    check(p.frames * p.frame_tokens == nq, "pattern",
          "'radial': frames * frame_tokens = " + std::to_string(p.frames) + " * " +
              std::to_string(p.frame_tokens) +
              " must equal the sequence length N = " + std::to_string(nq));
    check(p.frame_tokens >= 1, "pattern", "'radial': N = 0 has no frames");
    return std::make_shared<RadialRule>(p, nq);
  }

 private:
  RadialParams p_;
};

}  // namespace

PatternRegistration radial_pattern() {
  const int64_t kMax = int64_t{1} << 30;
  return {{"radial",
           "Radial Attention: dense near frames, diagonal bands halving per 2x frame distance",
           "Li et al., Radial Attention (NeurIPS 2025), rule of mit-han-lab/radial-attention",
           PatternFamily::kGrid,
           {int_param("frames", 16, 1, kMax, "video frames (the code's MaskMap default)"),
            int_param("frame_tokens", 0, 0, kMax, "tokens per frame; 0 = N / frames"),
            real_param("decay", "0.95", 1e-6, 1e6,
                       "band width factor (HunyuanVideo 0.95, Wan2.1 0.2, Wan2.2 0.8)"),
            int_param("min_width", 128, 1, kMax,
                      "minimum band width; below it frame pairs are skipped"),
            int_param("sink", -1, -1, 1,
                      "1: every query sees the whole first frame; -1: as the model (Wan only)"),
            choice_param("model", "hunyuan", {"hunyuan", "wan"},
                         "hunyuan: no sink; wan: frame 0 is a sink (with sink=-1)")}},
          &construct_pattern<RadialPattern>};
}

}  // namespace attnkit::grid_patterns
