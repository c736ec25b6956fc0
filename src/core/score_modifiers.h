// Per-row factors of AttentionArgs' score modifiers (internal), shared by every kernel and the
// reference so that they all read one rule:
//   tau  = row_scale[b,h,i] * (1 + position_scale * ln(position + 1)), 0 for a kUniform head
//   gate = output_gate[b,h,i], 0 for a kZero head
// Scores of the row are multiplied by tau, its output by gate (the LSE stays ungated).
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/attention.h"

namespace attnkit {

struct RowFactors {
  float tau = 1.0f;
  float gate = 1.0f;
};

// Whether any modifier is set: without one, kernels keep their unmodified path (bit-identical).
inline bool has_score_modifiers(const AttentionArgs& a) {
  return !a.row_scale.empty() || a.position_scale != 0.0f || !a.output_gate.empty() ||
         a.head_modes != nullptr;
}

// Factors of row i of (b, h); nq, nk the call's lengths (for the bottom-right position).
inline RowFactors row_factors(const AttentionArgs& a, int64_t b, int64_t h, int64_t i) {
  RowFactors f;
  if (!a.row_scale.empty()) f.tau = a.row_scale.get(b, h, i, 0);
  if (a.position_scale != 0.0f) {
    const int64_t position =
        a.first_position >= 0 ? a.first_position + i : i + a.k.shape[2] - a.q.shape[2];
    f.tau *= 1.0f + a.position_scale * std::log(static_cast<float>(position + 1));
  }
  if (!a.output_gate.empty()) f.gate = a.output_gate.get(b, h, i, 0);
  if (a.head_modes) {
    if (a.head_modes[h] == HeadMode::kUniform) f.tau = 0.0f;
    if (a.head_modes[h] == HeadMode::kZero) f.gate = 0.0f;
  }
  return f;
}

// Whether every row of heads [h0, h0 + heads) x queries [q0, q0 + rows) of batch b is gated to 0
// and no LSE is asked for: a kernel may then skip them (their O is 0).
inline bool gated_off(const AttentionArgs& a, int64_t b, int64_t h0, int64_t heads, int64_t q0,
                      int64_t rows) {
  if (!has_score_modifiers(a) || !a.lse.empty()) return false;
  for (int64_t h = h0; h < h0 + heads; ++h)
    for (int64_t i = q0; i < q0 + rows; ++i)
      if (row_factors(a, b, h, i).gate != 0.0f) return false;
  return true;
}

// Checks the modifiers against the call's shapes; throws Error naming "row_scale",
// "position_scale", "first_position", "output_gate" or "head_modes".
void validate_score_modifiers(const AttentionArgs& a);

}  // namespace attnkit
