// Recall of content-based planners on planted-key inputs at a target density, next to the exact
// dense result (targets in BENCHMARKS.md: oracle recall >= 0.99; infllm_v2 and
// hip within 0.05 of it at the same budget; planning <= 20% of the attention it drives).
//
// recall = mean over (batch, head, row) of exp(LSE_sparse - LSE_dense): the share of softmax
// mass the kept keys carry. density = attended causal pairs / (Nq * Nk), counted from the plan.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/attention.h"

namespace attnkit {

// Blocks per query block (block = 64) that give `density` causal pairs / N^2 for N tokens when
// every query block keeps min(qb + 1, B) blocks.
int64_t blocks_for_density(int64_t n, int64_t block, double density);

// Specs of the three planners of the recall target at B blocks per query block (block 64):
// topk_oracle:budget=B, infllm_v2 (dense_len=0, topk=B), hip (k = B * 64 minus its ~288
// token-exact sink and window keys per row).
std::vector<std::string> recall_specs(int64_t blocks);

struct RecallRow {
  std::string spec;
  double recall = 0.0;         // mean exp(LSE_sparse - LSE_dense)
  double min_recall = 0.0;     // worst row
  double rel_l2 = 0.0;         // ||O_sparse - O_dense|| / ||O_dense||
  double density = 0.0;        // attended pairs / (Nq * Nk), from RunStats
  double plan_seconds = 0.0;   // from RunStats
  double total_seconds = 0.0;  // Pattern::run wall time (plan + attention)
};

// Runs the spec through Pattern::run on `args` (args.out / args.lse are overwritten) and
// compares with the dense result (dense_out [B, Hq, Nq, Dv], dense_lse [B, Hq, Nq, 1]).
RecallRow measure_recall(const std::string& spec, const AttentionArgs& args,
                         const TensorView& dense_out, const TensorView& dense_lse);

}  // namespace attnkit
