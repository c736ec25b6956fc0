// topk_oracle: the upper bound every content-based planner is judged against.
//
// Rule: for every query block (block rows) and query head, keep the `budget` kv blocks that
// carry the most exact attention mass
//     mass(qb, kb) = sum_{i in qb} sum_{j in kb, j visible to i} exp(scale q_i . k_j - LSE_i),
// where LSE_i is the exact dense (causal) log-sum-exp of row i. Computed exactly in O(N * d)
// memory with two passes over the keys: an LSE-only pass (cpu::lse_pass) and a
// normalised-probability reduction grouped per (query block, kv block) (cpu::prob_reduce).
// Costs two dense QK^T passes: it is an oracle for measurement, not a fast planner.
//
// Parameters: budget = kv blocks per query block (default 8); block = q_block = kv_block
// (default 64); share = 0 per query head (the tightest bound, default) or 1 one selection per
// kv head from the mass summed over its GQA group (what InfLLM-V2 and DHSA do).
// Choice: blocks a query block cannot see at all are never picked, so a query block that sees
// fewer than `budget` blocks keeps all of them; ties go to the lower block index.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/attention_args.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/dynamic/planner.h"

namespace attnkit::dynamic_patterns {
namespace {

class TopkOraclePattern final : public Pattern {
 public:
  explicit TopkOraclePattern(const PatternParams& params)
      : Pattern(params, Direction::kCaller),
        budget_(params.get_int("budget")),
        block_(params.get_int("block")),
        share_(params.get_int("share") == 1) {}
  Plan plan(const PlanInputs& in) const override;

 private:
  int64_t budget_, block_;
  bool share_;
};

Plan TopkOraclePattern::plan(const PlanInputs& in) const {
  in.validate(true);
  const Dims d = dims_of(in);
  const float scale = effective_scale(in.scale, d.dim);
  const int64_t q_blocks = (d.nq + block_ - 1) / block_;
  std::vector<std::vector<int32_t>> lists(d.batch * d.heads_q * q_blocks);
  // Work items: (b, kv head, chunk of query blocks); each loads its kv head once and loops over
  // the group's query heads, so per-group sums never race.
  constexpr int64_t kChunkBlocks = 8;
  const int64_t chunks = (q_blocks + kChunkBlocks - 1) / kChunkBlocks;
  const int64_t items = d.batch * d.heads_kv * chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(in.threads))
  for (int64_t item = 0; item < items; ++item) {
    const int64_t b = item / (d.heads_kv * chunks), g = item / chunks % d.heads_kv;
    const int64_t qb0 = item % chunks * kChunkBlocks;
    const int64_t qb1 = std::min(q_blocks, qb0 + kChunkBlocks);
    const int64_t row0 = qb0 * block_, rows = std::min(d.nq, qb1 * block_) - row0;
    const auto limit = key_limits(in, row0, rows);
    const int64_t nk_seen = *std::max_element(limit.begin(), limit.end());
    std::vector<float> keys(nk_seen * d.dim), q(rows * d.dim), lse(rows);
    cpu::load_rows(in.k, b, g, 0, nk_seen, keys.data());
    // prob_reduce's row stride: the kv blocks that hold any of the nk_seen keys.
    const int64_t cols = (nk_seen + block_ - 1) / block_;
    std::vector<float> mass((qb1 - qb0) * cols, 0.0f);
    for (int64_t hh = 0; hh < d.group; ++hh) {
      const int64_t h = g * d.group + hh;
      cpu::load_rows(in.q, b, h, row0, rows, q.data());
      cpu::lse_pass(q.data(), rows, d.dim, keys.data(), nk_seen, d.dim, d.dim, scale, limit.data(),
                    lse.data());
      if (!share_) std::fill(mass.begin(), mass.end(), 0.0f);
      cpu::prob_reduce(q.data(), rows, d.dim, lse.data(), keys.data(), nk_seen, d.dim, d.dim, scale,
                       limit.data(), block_, block_, mass.data());
      if (share_ && hh + 1 < d.group) continue;
      for (int64_t qb = qb0; qb < qb1; ++qb) {
        const int64_t last = last_visible(in, std::min(d.nq, (qb + 1) * block_) - 1);
        const int64_t visible = last < 0 ? 0 : std::min(cols, last / block_ + 1);
        const auto chosen = cpu::topk_indices(mass.data() + (qb - qb0) * cols, visible, budget_);
        const int64_t h_first = share_ ? g * d.group : h;
        const int64_t h_last = share_ ? h_first + d.group : h + 1;
        for (int64_t ho = h_first; ho < h_last; ++ho)
          lists[(b * d.heads_q + ho) * q_blocks + qb] = chosen;
      }
    }
  }
  Plan plan;
  plan.mask = block_mask_from_indices(mask_shape(in, block_, block_, d.heads_q), lists);
  plan.causal = in.causal;
  return plan;
}

}  // namespace

PatternRegistration topk_oracle_pattern() {
  return {{"topk_oracle",
           "per query block, the kv blocks with the most exact attention mass (upper bound)",
           "oracle (exact block-level attention mass via an LSE pass)",
           PatternFamily::kDynamic,
           {int_param("budget", 8, 1, 1 << 24, "kv blocks kept per query block"),
            block_param("block", 64, "query and kv block size (multiple of 16)"),
            int_param("share", 0, 0, 1,
                      "1: one selection per kv head (mass summed over the GQA group)")}},
          &construct_pattern<TopkOraclePattern>};
}

}  // namespace attnkit::dynamic_patterns
