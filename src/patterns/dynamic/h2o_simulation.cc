// h2o: the teacher-forced H2O mask (Zhang et al., NeurIPS 2023), the statistic behind the
// paper's lm-eval numbers (the official h2o_hf/utils_lm_eval `local_heavy_hitter_mask`).
//
// Rule, per query head, over a sequence of T tokens (Nq = Nk = T, causal):
//   Hb = int(heavy * T), Rb = int(recent * T)      (ratios of the sequence's own length)
//   P_t = the UNMASKED causal softmax row t (exact: from an LSE pass)
//   rows t < Hb see every key j <= t; acc_j = sum_{t < Hb} P_t[j] for j < Hb
//   for t = Hb .. T - 1:  sel_t = topk(acc, Hb - 1) + {t};  acc = (acc + P_t) * 1[sel_t]
//   row t sees (sel_t + {j : t - Rb <= j}), j <= t
// So each row drops the lowest accumulated column of the heavy set and adds its own: a key j
// enters at row j (keys j < Hb from the start) and, once dropped at row end_j, never returns (its
// acc is zero while Hb others are positive). The mask is the per-key interval [j, end_j) plus the
// recent band: O(T) memory per head, computed in O(T * Hb * D). Choices where the code is silent:
// ties drop the newer key (topk keeps the lower index, as our top-k); Hb = 0 keeps only the
// recent band. The cache policy with the actual (masked) probabilities is h2o in
// src/model/kv_cache.h: the two statistics differ and are tested separately.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "attnkit/error.h"
#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

constexpr int64_t kBlock = 64;

// end[(b * Hq + h) * T + j]: the first row that no longer holds key j in its heavy set.
class HeavyHitterPredicate final : public TilePredicate {
 public:
  HeavyHitterPredicate(std::vector<int32_t> end, int64_t heads, int64_t tokens, int64_t recent)
      : end_(std::move(end)), heads_(heads), tokens_(tokens), recent_(recent) {}
  bool allowed(int64_t b, int64_t h, int64_t t, int64_t j) const {
    return j <= t && (t - recent_ <= j || t < end_[(b * heads_ + h) * tokens_ + j]);
  }
  void fill(int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t nk, uint8_t* allow,
            int64_t ld) const override {
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nk; ++j) allow[i * ld + j] = allowed(b, h, q0 + i, k0 + j);
  }
  int32_t end(int64_t b, int64_t h, int64_t j) const {
    return end_[(b * heads_ + h) * tokens_ + j];
  }
  int64_t recent() const { return recent_; }

 private:
  std::vector<int32_t> end_;
  int64_t heads_, tokens_, recent_;
};

class H2oPattern final : public Pattern {
 public:
  explicit H2oPattern(const PatternParams& params)
      : Pattern(params, Direction::kCaller),
        heavy_(params.get_real("heavy")),
        recent_(params.get_real("recent")) {}
  Plan plan(const PlanInputs& in) const override;

 private:
  double heavy_, recent_;
};

// end_j of every key of one (batch, query head).
void heavy_set_intervals(const PlanInputs& in, const Dims& d, int64_t b, int64_t h, int64_t hb,
                         float scale, int32_t* end) {
  const int64_t T = d.nq, g = h / d.group;
  std::vector<float> q(T * d.dim), keys(T * d.dim), lse(T);
  cpu::load_rows(in.q, b, h, 0, T, q.data());
  cpu::load_rows(in.k, b, g, 0, T, keys.data());
  std::vector<int64_t> limit(T);
  for (int64_t t = 0; t < T; ++t) limit[t] = t + 1;
  cpu::lse_pass(q.data(), T, d.dim, keys.data(), T, d.dim, d.dim, scale, limit.data(), lse.data());
  auto probability = [&](int64_t t, int64_t j) {
    float dot = 0.0f;
    for (int64_t x = 0; x < d.dim; ++x) dot += q[t * d.dim + x] * keys[j * d.dim + x];
    return static_cast<double>(std::exp(scale * dot - lse[t]));
  };
  for (int64_t j = 0; j < T; ++j) end[j] = static_cast<int32_t>(hb == 0 ? j : T);
  if (hb == 0) return;
  std::vector<int64_t> set(hb);  // the heavy set: key indices, with their accumulated mass
  std::vector<double> acc(hb, 0.0);
  for (int64_t s = 0; s < hb; ++s) {
    set[s] = s;
    for (int64_t t = s; t < hb; ++t) acc[s] += probability(t, s);
  }
  for (int64_t t = hb; t < T; ++t) {
    int64_t drop = 0;  // the lowest acc; among equals the newest key
    for (int64_t s = 1; s < hb; ++s)
      if (acc[s] < acc[drop] || (acc[s] == acc[drop] && set[s] > set[drop])) drop = s;
    end[set[drop]] = static_cast<int32_t>(t);
    set[drop] = t;
    acc[drop] = 0.0;
    for (int64_t s = 0; s < hb; ++s) acc[s] += probability(t, set[s]);
  }
}

Plan H2oPattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  check(d.nq == d.nk, "pattern",
        "h2o simulates decoding over one sequence: it needs nq == nk, got nq=" +
            std::to_string(d.nq) + ", nk=" + std::to_string(d.nk));
  const int64_t T = d.nq;
  const int64_t hb = static_cast<int64_t>(heavy_ * T), rb = static_cast<int64_t>(recent_ * T);
  const float scale = effective_scale(in.scale, d.dim);
  std::vector<int32_t> end(d.batch * d.heads_q * T);
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(in.threads))
  for (int64_t bh = 0; bh < d.batch * d.heads_q; ++bh)
    heavy_set_intervals(in, d, bh / d.heads_q, bh % d.heads_q, hb, scale, &end[bh * T]);
  auto predicate = std::make_shared<HeavyHitterPredicate>(std::move(end), d.heads_q, T, rb);
  // A block is listed if some pair in it is allowed (for key j the earliest row max(r0, j) is the
  // likeliest), FULL if every pair is.
  const BlockRowBuilder rows = [&](int64_t b, int64_t h, int64_t qb,
                                   std::vector<BlockEntry>* entries) {
    const int64_t r0 = qb * kBlock, r1 = std::min(T, r0 + kBlock) - 1;
    for (int64_t c0 = 0; c0 <= r1; c0 += kBlock) {
      const int64_t c1 = std::min(T, c0 + kBlock) - 1;
      bool any = false, all = c1 <= r0;
      for (int64_t j = c0; j <= c1; ++j) {
        const int64_t t = std::max(r0, j);
        any = any || (t <= r1 && predicate->allowed(b, h, t, j));
        all = all && (r1 - rb <= j || predicate->end(b, h, j) > r1);
      }
      if (any)
        entries->push_back(
            {static_cast<int32_t>(c0 / kBlock), all ? BlockKind::kFull : BlockKind::kPartial});
    }
  };
  Plan plan;
  plan.mask = block_mask_from_rows(mask_shape(in, kBlock, kBlock, d.heads_q), predicate, rows);
  plan.causal = in.causal;
  return plan;
}

}  // namespace

PatternRegistration h2o_pattern() {
  return {{"h2o",
           "teacher-forced H2O: heavy hitters by accumulated unmasked attention plus a recent band",
           "H2O (Zhang et al., NeurIPS 2023), the lm-eval simulation mask",
           PatternFamily::kDynamic,
           {real_param("heavy", "0.1", 0.0, 1.0, "heavy-hitter budget as a ratio of the length"),
            real_param("recent", "0.1", 0.0, 1.0, "recent band as a ratio of the length")}},
          &construct_pattern<H2oPattern>};
}

}  // namespace attnkit::dynamic_patterns
