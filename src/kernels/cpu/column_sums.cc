// Column sums of the normalised attention probabilities, a second pass from the forward's LSE:
//   C[b, h, j] = sum_i exp(tau_i * scale * Q[b,h,i] . K[b,g,j] - LSE[b,h,i])   (pairs the
// forward saw; tau_i the row's temperature factor, core/score_modifiers.h; the gate plays no part)
// per query head through prob_reduce (one output row per head: row_group = Nq), then, for an
// output with Hkv heads, summed over each group's query heads in head order (deterministic).
#include <algorithm>
#include <vector>

#include "attnkit/attention.h"
#include "core/attention_args.h"
#include "core/score_modifiers.h"
#include "kernels/cpu/planner_ops.h"

namespace attnkit {

void attention_column_sums(const AttentionArgs& args, const MutableTensorView& col_sums) {
  validate_column_sums(args, col_sums);
  const int64_t batch = args.q.shape[0], heads_q = args.q.shape[1], nq = args.q.shape[2];
  const int64_t heads_kv = args.k.shape[1], nk = args.k.shape[2], dim = args.q.shape[3];
  const int64_t group = heads_q / heads_kv;
  const float scale = effective_scale(args);
  // Key limits of bottom-right aligned causality: row i sees keys [0, i + Nk - Nq].
  std::vector<int64_t> limit(nq);
  for (int64_t i = 0; i < nq; ++i)
    limit[i] = args.causal ? std::clamp<int64_t>(i + nk - nq + 1, 0, nk) : nk;
  // Per query head sums [B * Hq, Nk], each written by one thread.
  std::vector<float> per_head(static_cast<size_t>(batch * heads_q * nk), 0.0f);
#pragma omp parallel num_threads(effective_threads(args.threads))
  {
    std::vector<float> q(nq * dim), keys(nk * dim), lse(nq);
    int64_t loaded = -1;  // the (b, g) whose keys are in `keys`
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < batch * heads_q; ++bh) {
      const int64_t b = bh / heads_q, h = bh % heads_q, g = h / group;
      if (loaded != b * heads_kv + g) {
        cpu::load_rows(args.k, b, g, 0, nk, keys.data());
        loaded = b * heads_kv + g;
      }
      cpu::load_rows(args.q, b, h, 0, nq, q.data());
      if (has_score_modifiers(args))  // the probabilities of the modified scores
        for (int64_t i = 0; i < nq; ++i) {
          const float tau = row_factors(args, b, h, i).tau;
          for (int64_t d = 0; d < dim; ++d) q[i * dim + d] *= tau;
        }
      for (int64_t i = 0; i < nq; ++i) lse[i] = *args.lse.row<float>(b, h, i);
      cpu::prob_reduce(q.data(), nq, dim, lse.data(), keys.data(), nk, dim, dim, scale,
                       limit.data(), nq, 1, &per_head[bh * nk]);
    }
  }
  const int64_t out_heads = col_sums.shape[1];
  const int64_t summed = out_heads == heads_q ? 1 : group;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < out_heads; ++h)
      for (int64_t j = 0; j < nk; ++j) {
        float sum = 0.0f;
        for (int64_t r = 0; r < summed; ++r)
          sum += per_head[((b * heads_q) + h * summed + r) * nk + j];
        *col_sums.row<float>(b, h, j) = sum;
      }
}

}  // namespace attnkit
