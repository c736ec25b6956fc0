// Normalised-probability reduction: the attention mass that groups of queries give to groups of
// keys, given each query's LSE,
//   out[i / row_group, j / col_group] += exp(scale * q_i . k_j - lse[i]),   j < limit[i].
// InfLLM-V2 stage 1 (row_group = query block, col_group = 1 over pooled keys, summed over the
// query heads of a kv head by calling once per head) and the top-k oracle (col_group = kv block
// over raw keys, lse = the exact dense LSE) are both this one reduction, over the score walk
// (score_walk.h) that the LSE pass uses too.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/planner_ops.h"
#include "kernels/cpu/score_walk.h"

namespace attnkit::cpu {
namespace {

// The reduction over any score walk of nk keys: walk(skip, visit).
template <class Walk>
void reduce_over(const float* lse, int64_t nk, int64_t row_group, int64_t col_group, float* out,
                 Walk&& walk) {
  const int64_t out_cols = (nk + col_group - 1) / col_group;
  walk([lse](int64_t i) { return std::isinf(lse[i]); },  // rows that see nothing add nothing
       [&](int64_t i0, int64_t rows, int64_t j0, float* s, int64_t lds, const int64_t* seen) {
         if (col_group == 1 && i0 / row_group == (i0 + rows - 1) / row_group) {
           // One output row for the whole tile: summed over the rows in registers.
           exp_shift_add_rows(s, lds, rows, seen, lse + i0, out + (i0 / row_group) * out_cols + j0);
           return;
         }
         for (int64_t r = 0; r < rows; ++r) {
           const int64_t i = i0 + r;
           float* dst = out + (i / row_group) * out_cols;
           if (seen[r] == 0) continue;
           if (col_group == 1) {
             exp_shift_add(s + r * lds, seen[r], lse[i], dst + j0);
             continue;
           }
           float* row = s + r * lds;
           exp_shift_sum(row, seen[r], lse[i], true);
           // Sum runs of columns that fall into the same group.
           for (int64_t j = 0; j < seen[r];) {
             const int64_t group = (j0 + j) / col_group;
             const int64_t end = std::min(seen[r], (group + 1) * col_group - j0);
             float acc = 0.0f;
             for (; j < end; ++j) acc += row[j];
             dst[group] += acc;
           }
         }
       });
}

}  // namespace

void prob_reduce(const float* q, int64_t nq, int64_t ldq, const float* lse, const float* keys,
                 int64_t nk, int64_t ldk, int64_t dim, float scale, const int64_t* limit,
                 int64_t row_group, int64_t col_group, float* out) {
  reduce_over(lse, nk, row_group, col_group, out, [&](auto&& skip, auto&& visit) {
    walk_scores(q, nq, ldq, keys, nk, ldk, dim, scale, limit, skip, visit);
  });
}

void prob_reduce(const Bf16Matrix& q, const float* lse, const Bf16Matrix& keys, float scale,
                 const int64_t* limit, int64_t row_group, int64_t col_group, float* out) {
  reduce_over(lse, keys.n, row_group, col_group, out,
              [&](auto&& skip, auto&& visit) { walk_scores(q, keys, scale, limit, skip, visit); });
}

}  // namespace attnkit::cpu
