// The walk that the LSE-only pass and the probability reduction share: scores
//   s[i, j] = scale * q_i . k_j,   i < nq,  j < limit[i] (all nk when limit is null)
// in chunks of kWalkChunk keys (prepared once per chunk, reused by every row tile) and tiles of
// kWalkRows query rows, handed over a tile at a time: visit(i0, rows, j0, s, lds, seen) with
// s[r * lds + j] the score of row i0 + r and key j0 + j, valid for j < seen[r]. Rows with
// skip(i) get seen = 0 and do not widen the tile. visit may overwrite s.
// Two operand forms: f32 rows (each key chunk transposed when first needed) and Bf16Matrix
// (packed once by the caller, read in place).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/planner_ops.h"

namespace attnkit::cpu {

inline constexpr int64_t kWalkChunk = 256;  // keys per transposed chunk: [dim][256] f32 in L2
inline constexpr int64_t kWalkRows = 32;    // query rows per score tile (32 x 256 scores = 32 KiB)
inline constexpr int64_t kWalkPanel = 32;   // columns of one score panel (2 AVX-512 vectors)
static_assert(kBf16Chunk == kWalkChunk, "a packed chunk is a walk's chunk");

// The tile loop: prepare(j0, cols) once per chunk that some tile needs, then
// score(i0, rows, j0, padded, s, lds) for each tile with padded = its visible columns rounded up
// to whole panels.
template <class Prepare, class Score, class Skip, class Visit>
void walk_tiles(int64_t nq, int64_t nk, const int64_t* limit, Prepare&& prepare, Score&& score,
                Skip&& skip, Visit&& visit) {
  std::vector<float> scores(kWalkRows * kWalkChunk);
  int64_t seen[kWalkRows];
  for (int64_t j0 = 0; j0 < nk; j0 += kWalkChunk) {
    const int64_t cols = std::min(kWalkChunk, nk - j0);
    bool prepared = false;
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
      if (!prepared) prepare(j0, cols), prepared = true;
      // Whole 32-column panels (stale but finite columns past tile_cols are computed and
      // ignored): the masked tail path is several times slower per column.
      const int64_t padded =
          std::min(kWalkChunk, (tile_cols + kWalkPanel - 1) / kWalkPanel * kWalkPanel);
      score(i0, rows, j0, padded, scores.data(), kWalkChunk);
      visit(i0, rows, j0, scores.data(), kWalkChunk, static_cast<const int64_t*>(seen));
    }
  }
}

// f32 operands: q [nq][ldq], keys [nk][ldk].
template <class Skip, class Visit>
void walk_scores(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk,
                 int64_t ldk, int64_t dim, float scale, const int64_t* limit, Skip&& skip,
                 Visit&& visit) {
  std::vector<float> kt(dim * kWalkChunk, 0.0f);
  walk_tiles(
      nq, nk, limit,
      [&](int64_t j0, int64_t cols) {
        transpose_keys(keys + j0 * ldk, cols, dim, ldk, kt.data(), kWalkChunk);
      },
      [&](int64_t i0, int64_t rows, int64_t, int64_t padded, float* s, int64_t lds) {
        score_tile(q + i0 * ldq, ldq, rows, kt.data(), kWalkChunk, padded, dim, scale, s, lds);
      },
      skip, visit);
}

// Packed bf16 operands (pack_bf16): scores of the bf16-rounded values.
template <class Skip, class Visit>
void walk_scores(const Bf16Matrix& q, const Bf16Matrix& keys, float scale, const int64_t* limit,
                 Skip&& skip, Visit&& visit) {
  const int64_t pairs = (q.dim + 1) / 2;
  walk_tiles(
      q.n, keys.n, limit, [](int64_t, int64_t) {},
      [&](int64_t i0, int64_t rows, int64_t j0, int64_t padded, float* s, int64_t lds) {
        // Row tiles (32) and panels (32) never cross a packed chunk (256).
        score_tile_bf16(q.at(i0), kBf16Chunk, rows, keys.at(j0), kBf16Chunk, padded, pairs,
                        scale, s, lds);
      },
      skip, visit);
}

}  // namespace attnkit::cpu
