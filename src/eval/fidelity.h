// Fidelity of an approximate (sparse) attention result against the exact one on the same inputs.
//
//   rel_l2_error = ||O - O_exact||_F / ||O_exact||_F            over every element
//   max_abs_error = max |O - O_exact|
//   recall_i     = exp(LSE_i - LSE_exact_i)   per (batch, head, query) row: the share of the exact
//                  softmax mass carried by the keys the approximation kept (1 = nothing lost).
// Rows the exact result leaves empty (LSE_exact = -inf) are skipped; a row the approximation
// leaves empty has recall 0.
#pragma once

#include <cstdint>

#include "attnkit/tensor.h"

namespace attnkit {

struct Fidelity {
  double rel_l2_error = 0.0;
  double max_abs_error = 0.0;
  double recall_mean = 1.0;
  double recall_min = 1.0;
  int64_t rows = 0;  // rows that entered the recall statistics
};

// out, exact_out: [B, H, N, Dv] f32 views of the same shape; lse, exact_lse: [B, H, N, 1]
// (either may be empty: the recall fields then stay 1 with rows = 0).
Fidelity measure_fidelity(const TensorView& out, const TensorView& lse, const TensorView& exact_out,
                          const TensorView& exact_lse);

}  // namespace attnkit
