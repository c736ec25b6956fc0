// LSE-only pass: lse[i] = log sum_{j < limit[i]} exp(scale * q_i . k_j), without computing O.
// InfLLM-V2's stage 1 runs it over coarse pooled keys (128/64) to normalise its block scores;
// the top-k oracle runs it over the raw keys to get the exact dense LSE in O(N * d) memory.
// Each row keeps a running (max, sum) pair over the score walk (score_walk.h), the online
// log-sum-exp of FlashAttention.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/planner_ops.h"
#include "kernels/cpu/score_walk.h"

namespace attnkit::cpu {
namespace {

// The online LSE over any score walk: walk(skip, visit).
template <class Walk>
void lse_over(int64_t nq, float* lse, Walk&& walk) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> row_max_so_far(nq, neg_inf), row_sum(nq, 0.0f);
  walk([](int64_t) { return false; },
       [&](int64_t i0, int64_t rows, int64_t, float* s, int64_t lds, const int64_t* seen) {
         lse_absorb_rows(s, lds, rows, seen, &row_max_so_far[i0], &row_sum[i0]);
       });
  for (int64_t i = 0; i < nq; ++i)
    lse[i] = row_sum[i] > 0.0f ? row_max_so_far[i] + std::log(row_sum[i]) : neg_inf;
}

}  // namespace

void lse_pass(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk, int64_t ldk,
              int64_t dim, float scale, const int64_t* limit, float* lse) {
  lse_over(nq, lse, [&](auto&& skip, auto&& visit) {
    walk_scores(q, nq, ldq, keys, nk, ldk, dim, scale, limit, skip, visit);
  });
}

void lse_pass(const Bf16Matrix& q, const Bf16Matrix& keys, float scale, const int64_t* limit,
              float* lse) {
  lse_over(q.n, lse,
           [&](auto&& skip, auto&& visit) { walk_scores(q, keys, scale, limit, skip, visit); });
}

}  // namespace attnkit::cpu
