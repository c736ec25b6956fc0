// ACT, the attention calibration technique (Yu et al., "Unveiling and Harnessing Hidden
// Attention Sinks", ICML 2024; official code GATECH-EIC/ACT, models/llama_modelling_aug.py,
// read for understanding only).
//
// Rule, per (batch, query head) over the probability map A of the call (causal or not):
//   col_mean[j] = sum_i A[i, j] / (rows that may see j)        (L - j in a causal prefill)
//   S = {j : col_mean[j] > tau} without its first element      (the first sink, normally BOS)
//   A[i, S] *= beta, and the freed mass (1 - beta) * sum_{j in S} A[i, j] is spread over the
//   other columns in proportion to A[i, :]
// computed here in closed form, an exact merge of two partial attentions:
//   O'_i = beta m_i O_S,i + (1 - beta m_i) O_notS,i,   m_i = exp(LSE_S,i - LSE_i)
// (O_S, O_notS the normalised outputs over S and over the other keys). This is not the same as
// adding log(beta) to the sink logits. Defaults as the code: tau = 0.1, beta = 0.4. The official
// code calibrates a searched subset of heads (per task) in layers 2..30 of Llama-2-7B; which
// heads and layers is the caller's choice here. A row that sees no key outside S (possible only
// under a mask) has nowhere to put the freed mass: it is left unchanged (the code's
// renormalisation would divide by zero).
// Cost: one attention for the LSE, the column sums, then two masked attentions over S and its
// complement when S is not empty. Memory O(N * d) (the masks list blocks, S per head).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention.h"

namespace attnkit {

struct ActOptions {
  float tau = 0.1f;   // column-mean threshold of a sink
  float beta = 0.4f;  // factor on the sinks' attention (1 = identity)
  // Sinks to calibrate instead of detecting them: per (b, h), b * Hq + h, ascending key
  // indices (decode steps reuse the prefill's). Empty: detect.
  std::vector<std::vector<int32_t>> sinks;
};

// attention(args) with ACT applied to every (batch, query head); args.out receives O', args.lse
// (if given) the uncalibrated LSE. Returns S per (b, h) (b * Hq + h), ascending. Errors name the
// arguments of attention() or "tau", "beta", "sinks".
std::vector<std::vector<int32_t>> attention_act(const AttentionArgs& args,
                                                const ActOptions& options = {});

// The reference: the official rule on the explicit probability map, in double (O(Nq * Nk) memory:
// tests only).
std::vector<std::vector<int32_t>> attention_act_reference(const AttentionArgs& args,
                                                          const ActOptions& options = {});

}  // namespace attnkit
