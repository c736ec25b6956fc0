// Checks shared by the grid / video pattern tests: a mask against an element predicate written in
// the test (element for element, and every block's FULL / PARTIAL / empty tag), and run() against
// the reference over the same predicate.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/block_mask.h"
#include "attnkit/pattern.h"
#include "support/attention_check.h"

namespace attnkit::testing {

using PairRule = std::function<bool(int64_t i, int64_t j)>;

// Shapes-only inputs for plan(): n queries and keys.
inline PlanInputs grid_inputs(int64_t n, bool causal = false) {
  return PlanInputs::shapes(1, 1, 1, n, n, 16, causal);
}

// to_dense(mask) == rule everywhere, and every block is tagged exactly: FULL iff all pairs of the
// block are allowed, absent iff none is, PARTIAL otherwise (strict = false also accepts PARTIAL
// blocks without any allowed pair, for masks that only promise "no allowed pair missing"). The
// rule is in the mask's own (kernel) order.
inline void expect_mask_matches(const BlockMask& mask, const PairRule& rule,
                                const std::string& label, bool strict = true) {
  ASSERT_NO_THROW(mask.validate()) << label;
  const std::vector<uint8_t> dense = to_dense(mask, 0, 0);
  ASSERT_EQ(static_cast<int64_t>(dense.size()), mask.nq * mask.nk) << label;
  int64_t element_errors = 0;
  for (int64_t i = 0; i < mask.nq; ++i) {
    for (int64_t j = 0; j < mask.nk; ++j) {
      const bool want = rule(i, j);
      if (dense[i * mask.nk + j] != (want ? 1 : 0) && element_errors++ < 5) {
        ADD_FAILURE() << label << ": element (" << i << ", " << j << ") is "
                      << int(dense[i * mask.nk + j]) << ", rule says " << want;
      }
    }
  }
  EXPECT_EQ(element_errors, 0) << label << ": mismatching elements";
  int64_t block_errors = 0;
  for (int64_t qb = 0; qb < mask.q_blocks(); ++qb) {
    const int64_t list = mask.list(0, 0, qb);
    for (int64_t kb = 0; kb < mask.kv_blocks(); ++kb) {
      int64_t allowed = 0, size = 0;
      for (int64_t i = qb * mask.q_block; i < std::min(mask.nq, (qb + 1) * mask.q_block); ++i) {
        for (int64_t j = kb * mask.kv_block; j < std::min(mask.nk, (kb + 1) * mask.kv_block); ++j) {
          allowed += rule(i, j) ? 1 : 0;
          ++size;
        }
      }
      int kind = 0;  // 0 absent, else BlockKind
      for (int64_t e = mask.row_start[list]; e < mask.row_start[list + 1]; ++e) {
        if (mask.kv_index[e] == kb) kind = static_cast<int>(mask.kind[e]);
      }
      const bool ok = kind == 0                                    ? allowed == 0
                      : kind == static_cast<int>(BlockKind::kFull) ? allowed == size
                      : strict                                     ? (allowed > 0 && allowed < size)
                                                                   : allowed < size;
      if (!ok && block_errors++ < 5) {
        ADD_FAILURE() << label << ": block (" << qb << ", " << kb << ") tagged "
                      << (kind == 0   ? "empty"
                          : kind == 1 ? "FULL"
                                      : "PARTIAL")
                      << " but " << allowed << " of " << size << " pairs are allowed";
      }
    }
  }
  EXPECT_EQ(block_errors, 0) << label << ": misclassified blocks";
}

// A plan against the rule in token order: to_dense(plan) equals it (causality included), and
// its mask, in kernel order (the token order applied), is tagged exactly.
inline void expect_plan_matches(const Plan& plan, const PairRule& rule, const std::string& label,
                                bool strict = true) {
  const int64_t nq = plan.nq(), nk = plan.nk();
  const std::vector<uint8_t> dense = to_dense(plan, 0, 0);
  ASSERT_EQ(static_cast<int64_t>(dense.size()), nq * nk) << label;
  int64_t errors = 0;
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nk; ++j) {
      const bool want = rule(i, j) && (!plan.causal || j <= i + nk - nq);
      if (dense[i * nk + j] != (want ? 1 : 0) && errors++ < 5)
        ADD_FAILURE() << label << ": token pair (" << i << ", " << j << ") is "
                      << int(dense[i * nk + j]) << ", rule says " << want;
    }
  EXPECT_EQ(errors, 0) << label << ": mismatching token pairs";
  const auto& order = plan.token_order;
  const bool causal = plan.causal;
  expect_mask_matches(
      plan.mask,
      [&](int64_t p, int64_t s) {
        // The kernel ANDs causality itself; the grid planner also puts it into the mask.
        if (order.empty()) return rule(p, s) && (!causal || s <= p + nk - nq);
        const int64_t i = order[p], j = order[s];
        return i >= 0 && j >= 0 && rule(i, j) && (!causal || j <= i);
      },
      label + " (kernel order)", strict);
}

// The pattern's run() against the reference with the same rule (ANDed with p.causal there).
inline void expect_run_matches(const std::string& spec, const Problem& p, const PairRule& rule) {
  SCOPED_TRACE(spec + " " + p.name());
  const std::unique_ptr<Pattern> pattern = make_pattern(spec);
  check_problem(
      p, [&](const AttentionArgs& a) { pattern->run(a); },
      [&](int64_t, int64_t, int64_t i, int64_t j) { return rule(i, j); });
}

}  // namespace attnkit::testing
