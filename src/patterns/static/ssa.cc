// ssa: Stochastically Subsampled self-Attention, "The Information Pathways Hypothesis:
// Transformers are Dynamic Self-Ensembles" (Hussain, Zaki, Subramanian, KDD 2023).
//
// The paper subsamples the attention connectivity at random each training step (share 1/ratio,
// 4-8x cheaper), with a locally biased sampler for causal / local data. No code is public, so
// this is our block-level rendering, documented here and tested exactly:
//   positions are cut into pattern blocks of `block` tokens (query block a = p / block, key
//   block c = j / block); query block a keeps m = ceil((a + 1) / ratio) of its a + 1 causal key
//   blocks: always the diagonal block (locality; every row keeps at least itself), plus m - 1
//   of the blocks c < a drawn without replacement with weight 1 / (a - c) (harmonic local bias:
//   near blocks are much likelier than far ones, but every block can be drawn), using
//   Efraimidis-Spirakis keys log(u) / w with u from a hash of (seed, a, c).
//   key j is seen from query position p iff j <= p and block j / block is kept by block p / block.
// The sample is shared by every head and is a pure function of (seed, sizes): `seed` plays the
// role of the training step. Defaults: ratio = 4, seed = 0, block = 64.
#include <algorithm>
#include <cmath>

#include "patterns/static/interval_rule.h"
#include "patterns/static/static_patterns.h"

namespace attnkit::static_patterns {
namespace {

uint64_t mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

class SubsampledRule final : public IntervalRule {
 public:
  SubsampledRule(int64_t nq, int64_t nk, int64_t ratio, int64_t seed, int64_t block)
      : IntervalRule(nq, nk, 1), block_(block) {
    // Only query blocks that hold a query position (p in [max(0, nk - nq), nk)) need a sample.
    const int64_t blocks = (nk + block - 1) / block;
    const int64_t first = std::max<int64_t>(0, nk - nq) / block;
    kept_start_.assign(blocks + 1, 0);
    std::vector<std::pair<double, int64_t>> keys;
    for (int64_t a = 0; a < blocks; ++a) {
      kept_start_[a] = static_cast<int64_t>(kept_.size());
      if (a < first) continue;
      const int64_t m = (a + 1 + ratio - 1) / ratio;
      keys.clear();
      const uint64_t row_seed = mix(mix(static_cast<uint64_t>(seed)) ^ a);
      for (int64_t c = 0; c < a; ++c) {
        const uint64_t h = mix(row_seed ^ (c * 0x632BE5AB));
        const double u = (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        keys.push_back({std::log(u) * static_cast<double>(a - c), c});  // log(u) / w
      }
      const int64_t draw = std::min<int64_t>(m - 1, a);
      std::nth_element(keys.begin(), keys.begin() + draw, keys.end(),
                       [](const auto& x, const auto& y) { return x.first > y.first; });
      const size_t at = kept_.size();
      for (int64_t k = 0; k < draw; ++k) kept_.push_back(keys[k].second);
      kept_.push_back(a);
      std::sort(kept_.begin() + at, kept_.end());
    }
    kept_start_[blocks] = static_cast<int64_t>(kept_.size());
  }
  void ranges(int64_t, int64_t p, RowRanges* out) const override {
    if (p < 0 || p >= nk()) return;
    const int64_t a = p / block_;
    for (int64_t k = kept_start_[a]; k < kept_start_[a + 1]; ++k)
      out->add(kept_[k] * block_, std::min((kept_[k] + 1) * block_, p + 1));
  }
  // Only the kept blocks that meet [k0, k1).
  void ranges_in(int64_t, int64_t p, int64_t k0, int64_t k1, RowRanges* out) const override {
    if (p < 0 || p >= nk() || k0 >= k1) return;
    const int64_t a = p / block_;
    const auto first = kept_.begin() + kept_start_[a], last = kept_.begin() + kept_start_[a + 1];
    for (auto it = std::lower_bound(first, last, k0 / block_);
         it != last && *it <= (k1 - 1) / block_; ++it)
      out->add(*it * block_, std::min((*it + 1) * block_, p + 1));
  }
  // Inside one pattern block only the diagonal block's causal end moves: the sets grow.
  int64_t nested_until(int64_t, int64_t p) const override {
    return p < 0 ? -1 : (p / block_ + 1) * block_ - 1;
  }

 private:
  int64_t block_;
  std::vector<int64_t>
      kept_start_;  // kept key blocks of query block a: kept_[start[a]..start[a+1])
  std::vector<int64_t> kept_;
};

class SubsampledPattern final : public IntervalPattern {
 public:
  explicit SubsampledPattern(const PatternParams& params)
      : IntervalPattern(params, Direction::kCausal),
        ratio_(params.get_int("ratio")),
        seed_(params.get_int("seed")),
        block_(params.get_int("block")) {}

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    return std::make_shared<SubsampledRule>(nq, nk, ratio_, seed_, block_);
  }

 private:
  int64_t ratio_, seed_, block_;
};

}  // namespace

PatternRegistration ssa_pattern() {
  return {{"ssa",
           "stochastically subsampled attention: each query block keeps 1/ratio of its causal key "
           "blocks, the diagonal always, the rest drawn with a 1/distance local bias",
           "Hussain, Zaki, Subramanian 2023, The Information Pathways Hypothesis (SSA)",
           PatternFamily::kStatic,
           {int_param("ratio", 4, 1, int64_t{1} << 30,
                      "subsampling factor: a query block keeps ceil(blocks / ratio) key blocks"),
            int_param("seed", 0, INT64_MIN, INT64_MAX, "sample seed (one per training step)"),
            int_param("block", 64, 1, int64_t{1} << 30, "pattern block size in tokens")}},
          &construct_pattern<SubsampledPattern>};
}
}  // namespace attnkit::static_patterns
