// Shared checks for static patterns: the mask a pattern plans must equal, element for element,
// a straightforward predicate written in the test; every block's FULL / PARTIAL / absent tag must
// agree with the tile's contents; tiles at unaligned offsets must fill correctly; and the pair
// counts (density, with and without causality) must be exact.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "attnkit/block_mask.h"
#include "attnkit/pattern.h"

namespace attnkit::testing {

// May query head h at absolute position p (= i + nk - nq) see key j? (nk keys, heads query heads)
using ReferenceRule = std::function<bool(int64_t h, int64_t p, int64_t j)>;

struct PatternCase {
  int64_t nq, nk, heads = 1;
};

// The odd shapes every pattern is checked on: nq != nk both ways, sizes that are not multiples
// of the 64-wide blocks, single rows, and a long-ish row block count.
inline std::vector<PatternCase> odd_cases() {
  return {{1, 1},        {7, 7},        {1, 300},    {63, 65},        {65, 63},
          {130, 257, 3}, {257, 130, 2}, {200, 1000}, {1000, 1000, 3}, {64, 1024, 2}};
}

// Shapes only: static patterns never read the data.
inline PlanInputs shape_inputs(int64_t nq, int64_t nk, int64_t heads) {
  return PlanInputs::shapes(1, heads, 1, nq, nk);
}

// Runs every check of the header comment. `exact_partial`: PARTIAL blocks must also not be all
// allowed (true for every rule made of stride-1 ranges).
inline void check_pattern(const std::string& spec, const PatternCase& c,
                          const ReferenceRule& reference, bool exact_partial = true) {
  SCOPED_TRACE(spec + " nq=" + std::to_string(c.nq) + " nk=" + std::to_string(c.nk) +
               " heads=" + std::to_string(c.heads));
  const auto pattern = make_pattern(spec);
  const Plan plan = pattern->plan(shape_inputs(c.nq, c.nk, c.heads));
  const BlockMask& mask = plan.mask;
  ASSERT_NO_THROW(mask.validate());
  ASSERT_EQ(mask.nq, c.nq);
  ASSERT_EQ(mask.nk, c.nk);
  ASSERT_TRUE(mask.heads == 1 || mask.heads == c.heads);
  double reference_pairs = 0.0, causal_pairs = 0.0;
  for (int64_t h = 0; h < c.heads; ++h) {
    const int64_t mh = mask.heads == 1 ? 0 : h;
    std::vector<uint8_t> want(c.nq * c.nk);
    for (int64_t i = 0; i < c.nq; ++i)
      for (int64_t j = 0; j < c.nk; ++j) {
        want[i * c.nk + j] = reference(h, i + c.nk - c.nq, j);
        reference_pairs += want[i * c.nk + j];
        causal_pairs += want[i * c.nk + j] && j <= i + c.nk - c.nq;
      }
    // 1. Element for element.
    const std::vector<uint8_t> got = to_dense(mask, 0, mh);
    int64_t mismatches = 0;
    for (int64_t e = 0; e < c.nq * c.nk; ++e) {
      if (got[e] == want[e]) continue;
      if (++mismatches <= 5)
        ADD_FAILURE() << "head " << h << " query " << e / c.nk << " key " << e % c.nk << ": mask "
                      << int(got[e]) << ", reference " << int(want[e]);
    }
    EXPECT_EQ(mismatches, 0) << "head " << h;
    // 2. Every block's tag against the reference contents.
    for (int64_t qb = 0; qb < mask.q_blocks(); ++qb) {
      const int64_t r = mask.list(0, mh, qb);
      std::vector<int> kind(mask.kv_blocks(), 0);
      for (int64_t e = mask.row_start[r]; e < mask.row_start[r + 1]; ++e)
        kind[mask.kv_index[e]] = static_cast<int>(mask.kind[e]);
      for (int64_t kb = 0; kb < mask.kv_blocks(); ++kb) {
        int64_t allowed = 0, cells = 0;
        for (int64_t i = qb * mask.q_block; i < std::min(c.nq, (qb + 1) * mask.q_block); ++i)
          for (int64_t j = kb * mask.kv_block; j < std::min(c.nk, (kb + 1) * mask.kv_block); ++j) {
            allowed += want[i * c.nk + j];
            ++cells;
          }
        const std::string where = "head " + std::to_string(h) + " block (" + std::to_string(qb) +
                                  ", " + std::to_string(kb) + ")";
        if (kind[kb] == 0) {
          EXPECT_EQ(allowed, 0) << where << " absent but has allowed pairs";
        } else if (kind[kb] == 1) {
          EXPECT_EQ(allowed, cells) << where << " FULL but not all allowed";
        } else {
          EXPECT_GT(allowed, 0) << where << " PARTIAL but nothing allowed";
          if (exact_partial) {
            EXPECT_LT(allowed, cells) << where << " PARTIAL but all allowed";
          }
        }
      }
    }
    // 3. Unaligned tiles, with a row stride wider than the tile.
    if (mask.predicate) {
      const int64_t tiles[][4] = {{0, c.nq, 0, c.nk},
                                  {c.nq / 3, (c.nq + 1) / 2, c.nk / 5, (c.nk + 2) / 3},
                                  {c.nq - 1, 1, 0, c.nk}};
      for (const auto& t : tiles) {
        const int64_t q0 = t[0], rows = t[1], k0 = t[2], cols = t[3], ld = cols + 3;
        if (rows <= 0 || cols <= 0 || q0 + rows > c.nq || k0 + cols > c.nk) continue;
        std::vector<uint8_t> tile(rows * ld, 7);
        mask.predicate->fill(0, h, q0, rows, k0, cols, tile.data(), ld);
        int64_t bad = 0;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j)
            bad += tile[i * ld + j] != want[(q0 + i) * c.nk + k0 + j];
        EXPECT_EQ(bad, 0) << "head " << h << " tile at (" << q0 << ", " << k0 << ") size " << rows
                          << " x " << cols;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = cols; j < ld; ++j) ASSERT_EQ(tile[i * ld + j], 7) << "wrote past nk";
      }
    }
  }
  // 4. Pair counts: density() averages over the mask's heads (all of them, or one shared by
  //    every head), with causality the kernel's bottom-right AND.
  EXPECT_NEAR(density(mask, true), causal_pairs / c.heads / (double(c.nq) * c.nk), 1e-12);
  EXPECT_NEAR(density(mask, false), reference_pairs / c.heads / (double(c.nq) * c.nk), 1e-12);
  if (c.nq > 0 && c.nk > 0) {
    double dense_avg = 0.0;  // density() averages over the mask's own heads
    for (int64_t h = 0; h < mask.heads; ++h) {
      const std::vector<uint8_t> d = to_dense(mask, 0, h);
      for (uint8_t v : d) dense_avg += v;
    }
    dense_avg /= double(mask.heads) * c.nq * c.nk;
    EXPECT_NEAR(density(mask), dense_avg, 1e-12);
  }
}

}  // namespace attnkit::testing
