// Shared checks for the content-based planners' tests: the planner's output must equal the
// reference attention restricted to the pairs its plan selected, and selection helpers.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "support/attention_check.h"

namespace attnkit::testing {

// Element predicate "pair (i, j) is attended by the plan", in token order: the mask's lists
// (FULL, or PARTIAL through the predicate) read at the tokens' kernel positions. Causality of an
// identity-order plan is left to the caller (the reference ANDs args.causal); a permuted plan
// holds its own.
inline ElementPredicate plan_predicate(Plan plan) {
  auto p = std::make_shared<const Plan>(std::move(plan));
  std::vector<int64_t> slot;  // token -> kernel position
  if (!p->token_order.empty()) {
    slot.assign(p->nq(), -1);
    for (size_t s = 0; s < p->token_order.size(); ++s)
      if (p->token_order[s] >= 0) slot[p->token_order[s]] = static_cast<int64_t>(s);
  }
  return [p, slot](int64_t b, int64_t h, int64_t i, int64_t j) {
    const BlockMask& m = p->mask;
    if (!slot.empty()) i = slot[i], j = slot[j];
    const int64_t r = m.list(b, h, i / m.q_block);
    const auto first = m.kv_index.begin() + m.row_start[r];
    const auto last = m.kv_index.begin() + m.row_start[r + 1];
    const auto at = std::lower_bound(first, last, static_cast<int32_t>(j / m.kv_block));
    if (at == last || *at != j / m.kv_block) return false;
    if (m.kind[at - m.kv_index.begin()] == BlockKind::kFull) return true;
    uint8_t allowed[16] = {};  // room for predicates that store a vector at a time
    m.predicate->fill(b, h, i, 1, j, 1, allowed, 1);
    return allowed[0] != 0;
  };
}

// The kv blocks listed for (b, h, qb).
inline std::vector<int32_t> blocks_of(const BlockMask& m, int64_t b, int64_t h, int64_t qb) {
  const int64_t r = m.list(b, h, qb);
  return {m.kv_index.begin() + m.row_start[r], m.kv_index.begin() + m.row_start[r + 1]};
}

// Runs the pattern through Pattern::run and compares O and LSE with attention_reference limited
// to the plan's pairs (and causality).
inline void expect_pattern_matches_reference(const std::string& spec, Inputs& in, bool causal,
                                             const std::string& label) {
  const auto pattern = make_pattern(spec);
  AttentionArgs a = in.args();
  a.causal = causal;
  pattern->run(a);
  AttentionArgs r = a;
  r.out = in.ref_out.view();
  r.lse = in.ref_lse.rows_view();
  attention_reference(r, plan_predicate(pattern->plan(PlanInputs::of(a))));
  expect_matches_reference(a, r, label + " " + spec);
}

}  // namespace attnkit::testing
