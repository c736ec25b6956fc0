// topk_oracle: the upper bound every content-based planner is judged against.
//
// Rule: for every query block (block rows) and query head, keep the `budget` kv blocks that
// carry the most exact attention mass
//     mass(qb, kb) = sum_{i in qb} sum_{j in kb, j visible to i} exp(scale q_i . k_j - LSE_i),
// where LSE_i is the exact dense (causal) log-sum-exp of row i. Computed exactly in O(N * d)
// memory with two passes over the keys: an LSE-only pass (kernels::lse_pass) and a
// normalised-probability reduction grouped per (query block, kv block) (kernels::prob_reduce).
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

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "core/timing.h"
#include "kernels/cpu/planner_ops.h"
#include "patterns/dynamic/planner.h"

namespace attnkit {
namespace {

constexpr char kName[] = "topk_oracle";

class TopkOracle final : public Pattern {
 public:
  explicit TopkOracle(const PatternParams& params)
      : budget_(planner::int_param(params, kName, "budget", 1, 1 << 24)),
        block_(planner::block_param(params, kName, "block")),
        share_(planner::int_param(params, kName, "share", 0, 1) == 1),
        canonical_(params.canonical()) {}

  std::string name() const override { return kName; }
  std::string spec() const override { return std::string(kName) + ":" + canonical_; }
  Plan plan(const AttentionArgs& args) const override;

 private:
  int64_t budget_, block_;
  bool share_;
  std::string canonical_;
};

Plan TopkOracle::plan(const AttentionArgs& args) const {
  validate(args);
  const double start = now_seconds();
  const planner::Dims d = planner::dims_of(args);
  const float scale = effective_scale(args);
  const int64_t q_blocks = (d.nq + block_ - 1) / block_;
  std::vector<std::vector<int32_t>> lists(d.batch * d.heads_q * q_blocks);
  // Work items: (b, kv head, chunk of query blocks); each loads its kv head once and loops over
  // the group's query heads, so per-group sums never race.
  constexpr int64_t kChunkBlocks = 8;
  const int64_t chunks = (q_blocks + kChunkBlocks - 1) / kChunkBlocks;
  const int64_t items = d.batch * d.heads_kv * chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(args.threads))
  for (int64_t item = 0; item < items; ++item) {
    const int64_t b = item / (d.heads_kv * chunks), g = item / chunks % d.heads_kv;
    const int64_t qb0 = item % chunks * kChunkBlocks;
    const int64_t qb1 = std::min(q_blocks, qb0 + kChunkBlocks);
    const int64_t row0 = qb0 * block_, rows = std::min(d.nq, qb1 * block_) - row0;
    const auto limit = planner::key_limits(args, row0, rows);
    const int64_t nk_seen = *std::max_element(limit.begin(), limit.end());
    std::vector<float> keys(nk_seen * d.dim), q(rows * d.dim), lse(rows);
    kernels::load_rows(args.k, b, g, 0, nk_seen, keys.data());
    // prob_reduce's row stride: the kv blocks that hold any of the nk_seen keys.
    const int64_t cols = (nk_seen + block_ - 1) / block_;
    std::vector<float> mass((qb1 - qb0) * cols, 0.0f);
    for (int64_t hh = 0; hh < d.group; ++hh) {
      const int64_t h = g * d.group + hh;
      kernels::load_rows(args.q, b, h, row0, rows, q.data());
      kernels::lse_pass(q.data(), rows, d.dim, keys.data(), nk_seen, d.dim, d.dim, scale,
                        limit.data(), lse.data());
      if (!share_) std::fill(mass.begin(), mass.end(), 0.0f);
      kernels::prob_reduce(q.data(), rows, d.dim, lse.data(), keys.data(), nk_seen, d.dim, d.dim,
                           scale, limit.data(), block_, block_, mass.data());
      if (share_ && hh + 1 < d.group) continue;
      for (int64_t qb = qb0; qb < qb1; ++qb) {
        const int64_t last = planner::last_visible(args, std::min(d.nq, (qb + 1) * block_) - 1);
        const int64_t visible = last < 0 ? 0 : std::min(cols, last / block_ + 1);
        const auto chosen =
            kernels::topk_indices(mass.data() + (qb - qb0) * cols, visible, budget_);
        const int64_t h_first = share_ ? g * d.group : h;
        const int64_t h_last = share_ ? h_first + d.group : h + 1;
        for (int64_t ho = h_first; ho < h_last; ++ho)
          lists[(b * d.heads_q + ho) * q_blocks + qb] = chosen;
      }
    }
  }
  Plan plan;
  plan.mask = planner::mask_from_lists(args, block_, block_, d.heads_q, std::move(lists));
  plan.plan_seconds = now_seconds() - start;
  return plan;
}

[[maybe_unused]] const bool registered = register_pattern(
    {kName,
     "per query block, the kv blocks with the most exact attention mass (upper bound)",
     "oracle (exact block-level attention mass via an LSE pass)",
     {{"budget", "8", "kv blocks kept per query block"},
      {"block", "64", "query and kv block size (multiple of 16)"},
      {"share", "0", "1: one selection per kv head (mass summed over the GQA group)"}}},
    [](const PatternParams& params) -> std::unique_ptr<Pattern> {
      return std::make_unique<TopkOracle>(params);
    });

}  // namespace
}  // namespace attnkit
