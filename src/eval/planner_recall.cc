// Recall measurement of content-based planners; see planner_recall.h.
#include "eval/planner_recall.h"

#include <algorithm>
#include <cmath>

#include "attnkit/pattern.h"
#include "eval/fidelity.h"

namespace attnkit {

int64_t blocks_for_density(int64_t n, int64_t block, double density) {
  const int64_t q_blocks = (n + block - 1) / block;
  const double target = density * static_cast<double>(n) * static_cast<double>(n);
  int64_t best = 1;
  double best_gap = 1e300;
  for (int64_t blocks = 1; blocks <= q_blocks; ++blocks) {
    double pairs = 0.0;  // diagonal block half full, the others full
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      const int64_t kept = std::min(qb + 1, blocks);
      pairs += (kept - 1) * double(block) * block + 0.5 * block * (block + 1);
    }
    const double gap = std::fabs(pairs - target);
    if (gap < best_gap) best_gap = gap, best = blocks;
  }
  return best;
}

std::vector<std::string> recall_specs(int64_t blocks) {
  const std::string b = std::to_string(blocks);
  // InfLLM-V2 forces init + local + diagonal; keep the paper's local 32 when it fits.
  const int64_t local = std::clamp<int64_t>(blocks / 2, 0, 32);
  // HiP's fixed part is token-exact: 16 sink tokens and a 256-token window per row (about 288
  // keys a row once the diagonal's causal half is counted); the search gets the rest.
  const int64_t hip_tokens = std::max<int64_t>(2, blocks * 64 - 288) / 2 * 2;
  return {"topk_oracle:budget=" + b,
          "infllm_v2:dense_len=0,local=" + std::to_string(local) + ",topk=" + b,
          "hip:k=" + std::to_string(hip_tokens)};
}

RecallRow measure_recall(const std::string& spec, const AttentionArgs& args,
                         const TensorView& dense_out, const TensorView& dense_lse) {
  RecallRow row;
  const auto pattern = make_pattern(spec);
  row.spec = pattern->spec();
  const RunStats stats = pattern->run(args);
  row.total_seconds = stats.seconds;
  row.plan_seconds = stats.plan_seconds;
  row.density = stats.density;
  const Fidelity f = measure_fidelity(args.out, args.lse, dense_out, dense_lse);
  row.recall = f.recall_mean;
  row.min_recall = f.recall_min;
  row.rel_l2 = f.rel_l2_error;
  return row;
}

}  // namespace attnkit
