// Normalised-probability reduction: the attention mass that groups of queries give to groups of
// keys, given each query's LSE,
//   out[i / row_group, j / col_group] += exp(scale * q_i . k_j - lse[i]),   j < limit[i].
// InfLLM-V2 stage 1 (row_group = query block, col_group = 1 over pooled keys, summed over the
// query heads of a kv head by calling once per head) and the top-k oracle (col_group = kv block
// over raw keys, lse = the exact dense LSE) are both this one reduction.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/planner_ops.h"

namespace attnkit::kernels {
namespace {
constexpr int64_t kChunk = 256;
constexpr int64_t kRows = 32;
constexpr int64_t kPanel = 32;  // columns of one score panel (2 AVX-512 vectors)
}  // namespace

void prob_reduce(const float* q, int64_t nq, int64_t ldq, const float* lse, const float* keys,
                 int64_t nk, int64_t ldk, int64_t dim, float scale, const int64_t* limit,
                 int64_t row_group, int64_t col_group, float* out) {
  const int64_t out_cols = (nk + col_group - 1) / col_group;
  std::vector<float> kt(dim * kChunk, 0.0f), scores(kRows * kChunk);
  for (int64_t j0 = 0; j0 < nk; j0 += kChunk) {
    const int64_t cols = std::min(kChunk, nk - j0);
    bool transposed = false;
    for (int64_t i0 = 0; i0 < nq; i0 += kRows) {
      const int64_t rows = std::min(kRows, nq - i0);
      int64_t tile_cols = 0;
      for (int64_t r = 0; r < rows; ++r) {
        if (std::isinf(lse[i0 + r])) continue;
        const int64_t lim = limit ? limit[i0 + r] : nk;
        tile_cols = std::max(tile_cols, std::clamp<int64_t>(lim - j0, 0, cols));
      }
      if (tile_cols == 0) continue;
      if (!transposed) {
        transpose_keys(keys + j0 * ldk, cols, dim, ldk, kt.data(), kChunk);
        transposed = true;
      }
      // Whole 32-column panels (stale but finite columns past tile_cols are computed and
      // ignored): the masked tail path is several times slower per column.
      const int64_t padded = std::min(kChunk, (tile_cols + kPanel - 1) / kPanel * kPanel);
      score_tile(q + i0 * ldq, ldq, rows, kt.data(), kChunk, padded, dim, scale, scores.data(),
                 kChunk);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        if (std::isinf(lse[i])) continue;
        const int64_t lim = limit ? limit[i] : nk;
        const int64_t seen = std::clamp<int64_t>(lim - j0, 0, tile_cols);
        if (seen == 0) continue;
        float* s = scores.data() + r * kChunk;
        float* dst = out + (i / row_group) * out_cols;
        if (col_group == 1) {
          exp_shift_add(s, seen, lse[i], dst + j0);  // fused: no second pass over s
        } else {
          exp_shift_sum(s, seen, lse[i], true);
          // Sum runs of columns that fall into the same group.
          int64_t j = 0;
          while (j < seen) {
            const int64_t group = (j0 + j) / col_group;
            const int64_t end = std::min(seen, (group + 1) * col_group - j0);
            float acc = 0.0f;
            for (; j < end; ++j) acc += s[j];
            dst[group] += acc;
          }
        }
      }
    }
  }
}

}  // namespace attnkit::kernels
