// The walk that the LSE-only pass and the probability reduction share: scores
//   s[i, j] = scale * q_i . k_j,   i < nq,  j < limit[i] (all nk when limit is null)
// in chunks of kWalkChunk keys (transposed once per chunk, reused by every row tile) and tiles of
// kWalkRows query rows, handed over a tile at a time: visit(i0, rows, j0, s, lds, seen) with
// s[r * lds + j] the score of row i0 + r and key j0 + j, valid for j < seen[r]. Rows with
// skip(i) get seen = 0 and do not widen the tile. visit may overwrite s. With kBf16 the
// queries (once) and each key chunk are rounded to bf16 and packed in pairs (score_tile_bf16).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/planner_ops.h"

namespace attnkit::cpu {

inline constexpr int64_t kWalkChunk = 256;  // keys per transposed chunk: [dim][256] f32 in L2
inline constexpr int64_t kWalkRows = 32;    // query rows per score tile (32 x 256 scores = 32 KiB)
inline constexpr int64_t kWalkPanel = 32;   // columns of one score panel (2 AVX-512 vectors)

template <class Skip, class Visit>
void walk_scores(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk,
                 int64_t ldk, int64_t dim, float scale, const int64_t* limit,
                 ScorePrecision precision, Skip&& skip, Visit&& visit) {
  std::vector<float> kt(dim * kWalkChunk, 0.0f), scores(kWalkRows * kWalkChunk);
  const bool bf16 = precision == ScorePrecision::kBf16;
  const int64_t pairs = (dim + 1) / 2;
  std::vector<uint32_t> qp, kp;  // bf16 pairs: queries [pairs][nq], the key chunk [pairs][chunk]
  if (bf16) {
    std::vector<float> qt(dim * nq);
    transpose(q, nq, dim, ldq, qt.data(), nq);
    qp.resize(pairs * nq);
    pack_bf16_pairs(qt.data(), dim, nq, nq, qp.data(), nq);
    kp.assign(pairs * kWalkChunk, 0);
  }
  int64_t seen[kWalkRows];
  for (int64_t j0 = 0; j0 < nk; j0 += kWalkChunk) {
    const int64_t cols = std::min(kWalkChunk, nk - j0);
    bool transposed = false;
    for (int64_t i0 = 0; i0 < nq; i0 += kWalkRows) {
      const int64_t rows = std::min(kWalkRows, nq - i0);
      // Visible columns of this chunk per row; skip the tile if no row sees any.
      int64_t tile_cols = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t lim = skip(i0 + r) ? 0 : limit ? limit[i0 + r] : nk;
        seen[r] = std::clamp<int64_t>(lim - j0, 0, cols);
        tile_cols = std::max(tile_cols, seen[r]);
      }
      if (tile_cols == 0) continue;
      if (!transposed) {
        transpose_keys(keys + j0 * ldk, cols, dim, ldk, kt.data(), kWalkChunk);
        if (bf16) pack_bf16_pairs(kt.data(), dim, cols, kWalkChunk, kp.data(), kWalkChunk);
        transposed = true;
      }
      // Whole 32-column panels (stale but finite columns past tile_cols are computed and
      // ignored): the masked tail path is several times slower per column.
      const int64_t padded =
          std::min(kWalkChunk, (tile_cols + kWalkPanel - 1) / kWalkPanel * kWalkPanel);
      if (bf16)
        score_tile_bf16(qp.data() + i0, nq, rows, kp.data(), kWalkChunk, padded, pairs, scale,
                        scores.data(), kWalkChunk);
      else
        score_tile(q + i0 * ldq, ldq, rows, kt.data(), kWalkChunk, padded, dim, scale,
                   scores.data(), kWalkChunk);
      visit(i0, rows, j0, scores.data(), kWalkChunk, static_cast<const int64_t*>(seen));
    }
  }
}

}  // namespace attnkit::cpu
