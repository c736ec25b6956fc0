// LSE-only pass: lse[i] = log sum_{j < limit[i]} exp(scale * q_i . k_j), without computing O.
// InfLLM-V2's stage 1 runs it over coarse pooled keys (128/64) to normalise its block scores;
// the top-k oracle runs it over the raw keys to get the exact dense LSE in O(N * d) memory.
//
// Keys are processed in chunks of kChunk, transposed once per chunk and reused by every query
// tile; each row keeps a running (max, sum) pair, the online log-sum-exp of FlashAttention.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/planner_ops.h"

namespace attnkit::kernels {
namespace {
constexpr int64_t kChunk = 256;  // keys per transposed chunk: [dim][256] f32 stays in L2
constexpr int64_t kRows = 32;    // query rows per score tile (32 x 256 scores = 32 KiB)
constexpr int64_t kPanel = 32;   // columns of one score panel (2 AVX-512 vectors)
}  // namespace

void lse_pass(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk,
              int64_t ldk, int64_t dim, float scale, const int64_t* limit, float* lse) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> row_max_so_far(nq, neg_inf), row_sum(nq, 0.0f);
  std::vector<float> kt(dim * kChunk, 0.0f), scores(kRows * kChunk);
  for (int64_t j0 = 0; j0 < nk; j0 += kChunk) {
    const int64_t cols = std::min(kChunk, nk - j0);
    bool transposed = false;
    for (int64_t i0 = 0; i0 < nq; i0 += kRows) {
      const int64_t rows = std::min(kRows, nq - i0);
      // Visible columns of this chunk per row; skip the tile if no row sees any.
      int64_t tile_cols = 0;
      for (int64_t r = 0; r < rows; ++r) {
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
        const int64_t lim = limit ? limit[i0 + r] : nk;
        const int64_t seen = std::clamp<int64_t>(lim - j0, 0, tile_cols);
        if (seen == 0) continue;
        float* s = scores.data() + r * kChunk;
        const float m_old = row_max_so_far[i0 + r];
        const float m_new = std::max(m_old, row_max(s, seen));
        if (std::isinf(m_new)) continue;  // every score so far is -inf
        const float rescale = std::isinf(m_old) ? 0.0f : std::exp(m_old - m_new);
        row_sum[i0 + r] = row_sum[i0 + r] * rescale + exp_shift_sum(s, seen, m_new, false);
        row_max_so_far[i0 + r] = m_new;
      }
    }
  }
  for (int64_t i = 0; i < nq; ++i)
    lse[i] = row_sum[i] > 0.0f ? row_max_so_far[i] + std::log(row_sum[i]) : neg_inf;
}

}  // namespace attnkit::kernels
