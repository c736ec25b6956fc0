// ssa: Stochastically Subsampled self-Attention, "The Information Pathways Hypothesis:
// Transformers are Dynamic Self-Ensembles" (Hussain, Zaki, Subramanian, KDD 2023).
//
// What the paper does: it subsamples the attention connectivity at random each TRAINING step
// (share 1/ratio, 4-8x cheaper), with a locally biased sampler for causal / local data, and at
// inference uses dense attention (after a short fine-tune) or a self-ensemble: the mean of the
// outputs of several independently subsampled passes. The paper's sampler is not published
// (the authors' repository holds a README and a project page, no code).
//
// THE SAMPLER BELOW IS ATTNKIT'S OWN, not the paper's: a block-level rendering, documented here
// and tested exactly (the paper's, as far as its text tells, works on tokens):
//   positions are cut into pattern blocks of `block` tokens (query block a = p / block, key
//   block c = j / block); query block a keeps m = ceil((a + 1) / ratio) of its a + 1 causal key
//   blocks: always the diagonal block (locality; every row keeps at least itself), plus m - 1
//   of the blocks c < a drawn without replacement with weight 1 / (a - c) (harmonic local bias:
//   near blocks are much likelier than far ones, but every block can be drawn), using
//   Efraimidis-Spirakis keys log(u) / w with u from a hash of (seed, a, c).
//   key j is seen from query position p iff j <= p and block j / block is kept by block p / block.
// The sample is shared by every head and is a pure function of (seed, sizes): `seed` plays the
// role of the training step. Numbers measured with one sample describe attnkit's sampler used at
// inference, which is not what the paper evaluates.
//
// ensemble = R > 1 is the paper's self-ensemble inference: R passes with seeds seed, seed + 1,
// ..., seed + R - 1, O = mean of the R outputs, LSE = log(mean of exp(LSE_r)) (the mean mass the
// passes keep, so recall is the mean recall; a row empty in every pass keeps O = 0, LSE = -inf).
// The plan shows the union of the R samples; RunStats counts the pairs of all R passes (the work
// done). Defaults: ratio = 4, seed = 0, block = 64, ensemble = 1.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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

// The union of the samples of `seeds` (one seed: one sample).
class SubsampledRule final : public IntervalRule {
 public:
  SubsampledRule(int64_t nq, int64_t nk, int64_t ratio, const std::vector<int64_t>& seeds,
                 int64_t block)
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
      const int64_t draw = std::min<int64_t>(m - 1, a);
      const size_t at = kept_.size();
      for (int64_t seed : seeds) {
        keys.clear();
        const uint64_t row_seed = mix(mix(static_cast<uint64_t>(seed)) ^ a);
        for (int64_t c = 0; c < a; ++c) {
          const uint64_t h = mix(row_seed ^ (c * 0x632BE5AB));
          const double u = (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
          keys.push_back({std::log(u) * static_cast<double>(a - c), c});  // log(u) / w
        }
        std::nth_element(keys.begin(), keys.begin() + draw, keys.end(),
                         [](const auto& x, const auto& y) { return x.first > y.first; });
        for (int64_t k = 0; k < draw; ++k) kept_.push_back(keys[k].second);
      }
      kept_.push_back(a);
      std::sort(kept_.begin() + at, kept_.end());
      kept_.erase(std::unique(kept_.begin() + at, kept_.end()), kept_.end());
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
        block_(params.get_int("block")),
        ensemble_(params.get_int("ensemble")) {}

  // One sample: the interval plan. An ensemble: the plan of the union, with one mask per pass
  // kept for execute().
  Plan plan(const PlanInputs& in) const override {
    Plan plan = IntervalPattern::plan(in);
    if (ensemble_ == 1) return plan;
    std::vector<BlockMask> passes;
    for (int64_t r = 0; r < ensemble_; ++r)
      passes.push_back(build_interval_mask(std::make_shared<SubsampledRule>(
          in.q.shape[2], in.k.shape[2], ratio_, std::vector<int64_t>{seed_ + r}, block_)));
    plan.state = std::make_shared<const std::vector<BlockMask>>(std::move(passes));
    return plan;
  }

 protected:
  std::shared_ptr<const IntervalRule> make_rule(int64_t nq, int64_t nk, int64_t) const override {
    std::vector<int64_t> seeds;
    for (int64_t r = 0; r < ensemble_; ++r) seeds.push_back(seed_ + r);
    return std::make_shared<SubsampledRule>(nq, nk, ratio_, seeds, block_);
  }

  // The ensemble's backward: O = mean_r O_r gives dO_r = dO / R; LSE = log mean exp(LSE_r) gives
  // dLSE_r = dLSE exp(LSE_r - LSE) / R. Each pass is recomputed, differentiated with the
  // block-sparse backward, and the gradients summed in pass order.
  void execute_backward(const BackwardArgs& args, const Plan& plan) const override {
    if (ensemble_ == 1) return IntervalPattern::execute_backward(args, plan);
    const auto& passes = *std::any_cast<std::shared_ptr<const std::vector<BlockMask>>>(plan.state);
    const AttentionArgs& f = args.forward;
    const int64_t batch = f.q.shape[0], heads = f.q.shape[1], nq = f.q.shape[2];
    const int64_t dim_v = f.v.shape[3], rows = batch * heads * nq;
    const float share = 1.0f / static_cast<float>(passes.size());
    Tensor out({batch, heads, nq, dim_v}, DType::kF32), lse({batch, heads, nq}, DType::kF32);
    Tensor dout({batch, heads, nq, dim_v}, DType::kF32), dlse({batch, heads, nq}, DType::kF32);
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t d = 0; d < dim_v; ++d)
        dout.f32()[row * dim_v + d] =
            share * args.dout.get(row / (heads * nq), row / nq % heads, row % nq, d);
    auto like = [](const TensorLayout& t) {
      return Tensor({t.shape[0], t.shape[1], t.shape[2], t.shape[3]}, DType::kF32);
    };
    Tensor grads[3] = {like(f.q), like(f.k), like(f.v)};  // one pass's dQ, dK, dV
    const MutableTensorView targets[3] = {args.dq, args.dk, args.dv};
    AttentionArgs pass = f;
    pass.out = out.view();
    pass.lse = lse.rows_view();
    BackwardArgs step = args;
    step.forward = pass;
    step.dout = dout.view();
    step.dlse = args.dlse.empty() ? TensorView{} : dlse.rows_view();
    step.dq = grads[0].view(), step.dk = grads[1].view(), step.dv = grads[2].view();
    for (size_t r = 0; r < passes.size(); ++r) {
      attention(pass, passes[r]);
      if (!args.dlse.empty()) {
        for (int64_t row = 0; row < rows; ++row) {
          const int64_t b = row / (heads * nq), h = row / nq % heads, i = row % nq;
          const float total = *f.lse.row<float>(b, h, i), mine = lse.f32()[row];
          dlse.f32()[row] = total == -std::numeric_limits<float>::infinity()
                                ? 0.0f
                                : share * args.dlse.get(b, h, i, 0) * std::exp(mine - total);
        }
      }
      attention_backward(step, passes[r]);
      for (int x = 0; x < 3; ++x) {
        const MutableTensorView& t = targets[x];
        const float* g = grads[x].f32();
        const int64_t n = t.shape[2], dim = t.shape[3];
        for (int64_t e = 0; e < t.shape[0] * t.shape[1] * n; ++e) {
          float* row = t.row<float>(e / (t.shape[1] * n), e / n % t.shape[1], e % n);
          for (int64_t d = 0; d < dim; ++d) row[d] = (r == 0 ? 0.0f : row[d]) + g[e * dim + d];
        }
      }
    }
  }

  // The self-ensemble: R block-sparse passes, O averaged, LSE = log mean exp(LSE_r).
  void execute(const AttentionArgs& args, const Plan& plan) const override {
    if (ensemble_ == 1) return IntervalPattern::execute(args, plan);
    const auto& passes = *std::any_cast<std::shared_ptr<const std::vector<BlockMask>>>(plan.state);
    const int64_t batch = args.q.shape[0], heads = args.q.shape[1], nq = args.q.shape[2];
    const int64_t dim_v = args.v.shape[3], rows = batch * heads * nq;
    Tensor out({batch, heads, nq, dim_v}, DType::kF32), lse({batch, heads, nq}, DType::kF32);
    std::vector<double> sum_o(rows * dim_v, 0.0);
    std::vector<float> pass_lse(passes.size() * rows);  // [pass][row]
    AttentionArgs pass = args;
    pass.out = out.view();
    pass.lse = lse.rows_view();
    for (size_t r = 0; r < passes.size(); ++r) {
      attention(pass, passes[r]);
      std::copy(lse.f32(), lse.f32() + rows, pass_lse.begin() + r * rows);
      for (int64_t e = 0; e < rows * dim_v; ++e) sum_o[e] += out.f32()[e];
    }
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const double count = static_cast<double>(passes.size());
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t b = row / (heads * nq), h = row / nq % heads, i = row % nq;
      float best = neg_inf;  // LSE = best + log(mean exp(LSE_r - best))
      for (size_t r = 0; r < passes.size(); ++r) best = std::max(best, pass_lse[r * rows + row]);
      double mass = 0.0;
      if (best != neg_inf)
        for (size_t r = 0; r < passes.size(); ++r)
          mass += std::exp(double(pass_lse[r * rows + row]) - best);
      float* o = args.out.row<float>(b, h, i);
      for (int64_t d = 0; d < dim_v; ++d) o[d] = static_cast<float>(sum_o[row * dim_v + d] / count);
      if (!args.lse.empty())
        *args.lse.row<float>(b, h, i) =
            best == neg_inf ? neg_inf : static_cast<float>(best + std::log(mass / count));
    }
  }

 private:
  int64_t ratio_, seed_, block_, ensemble_;
};

}  // namespace

PatternRegistration ssa_pattern() {
  return {{"ssa",
           "stochastically subsampled attention with attnkit's own block sampler (the paper's is "
           "unpublished; the paper trains with SSA and infers dense or as an ensemble): each query "
           "block keeps 1/ratio of its causal key blocks, the diagonal always, the rest drawn "
           "with a 1/distance local bias; ensemble=R averages R independent samples",
           "Hussain, Zaki, Subramanian 2023, The Information Pathways Hypothesis (SSA)",
           PatternFamily::kStatic,
           {int_param("ratio", 4, 1, int64_t{1} << 30,
                      "subsampling factor: a query block keeps ceil(blocks / ratio) key blocks"),
            int_param("seed", 0, INT64_MIN, INT64_MAX, "sample seed (one per training step)"),
            int_param("block", 64, 16, int64_t{1} << 30,
                      "pattern block size in tokens (>= 16: the sample grows as (N / block)^2)"),
            int_param("ensemble", 1, 1, 64,
                      "passes of the self-ensemble (seeds seed..seed+R-1), outputs averaged")}},
          &construct_pattern<SubsampledPattern>};
}
}  // namespace attnkit::static_patterns
