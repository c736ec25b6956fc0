// Lightning Attention-2: causal linear attention with a per-head decay (Qin et al., "Lightning
// Attention-2: A Free Lunch for Handling Unlimited Sequence Lengths in Large Language Models",
// arXiv 2401.04658; the seed paper "Various Lengths, Constant Speed: Efficient Language Modeling
// with Lightning Attention", ICML 2024, is Lightning-2 inside TransNormerLLM). Official code
// OpenNLPLab/lightning-attention (lightning_attn/ops/triton/lightning_attn2.py), read for
// understanding only.
//
// The function (no softmax, no 1/sqrt(D) scale, no normaliser; the model adds a norm after it):
//   O[t] = sum_{s <= t} lambda^(t - s) (Q[t] . K[s]) V[s] + lambda^(t + 1) Q[t] S0,
//   lambda = exp(-slope_h) per head,
// and the state after the call S = lambda^N S0 + sum_s lambda^(N - 1 - s) K[s]^T V[s] ([D, E]).
// S0 is the state carried from earlier tokens (0 when not given). Token by token this is the
// recurrence S_t = lambda S_{t-1} + K[t]^T V[t], O[t] = Q[t] S_t: decoding one token is a call
// with N = 1 and the state, and a chunked prefill with the state carried equals one call.
// (Official code keeps the state one step "older", KV = lambda S; it is the same function.)
//
// Slopes: the official rule (lightning_slopes) gives H heads slope_h = 2^(-8 (h + 1) / H) when H
// is a power of two; otherwise the slopes of P = 2^floor(log2 H) heads, then every other slope of
// 2P heads until there are H. TransNormerLLM scales them per layer by (1 - l / (L - 1) + 1e-5),
// the caller's choice here. A slope of 0 is no decay (plain causal linear attention).
//
// Kernel: blocks of `block` tokens. Within a block, the masked quadratic part
// ((Q K^T) * M) V with M[a, b] = lambda^(a - b) for a >= b; across blocks, the [D, E] state:
// O += diag(lambda^(a + 1)) Q S, then S = lambda^B S + (diag(lambda^(B - 1 - b)) K)^T V. Time and
// memory are linear in N; the backward sweeps forward for dQ and backward for dK, dV (no
// gradient to the slopes, as in the official code). Q, K, V share their head count (one decay
// per head); D and E are free (the official split of D > 128 into summed chunks is a GPU detail:
// the result is the same, and tested so).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit {

struct LightningArgs {
  TensorView q;  // [B, H, N, D]  f32 | f16 | bf16
  TensorView k;  // [B, H, N, D]  same dtype
  TensorView v;  // [B, H, N, E]  same dtype
  // H slopes >= 0 (lambda_h = exp(-slope_h)); empty means lightning_slopes(H).
  std::vector<float> slopes;
  TensorView state_in;         // optional f32 [B, H, D, E]: S0
  MutableTensorView out;       // [B, H, N, E] f32
  MutableTensorView state_out;  // optional f32 [B, H, D, E]: S after the last token
  int64_t block = 64;          // tokens per block, in [1, 1024]; the result does not depend on it
  int threads = 0;             // 0 means every core
};

// The official slope rule for `heads` heads (see above).
std::vector<float> lightning_slopes(int64_t heads);

// Errors name "q", "k", "v", "slopes", "state_in", "out", "state_out", "block", "threads".
void lightning_attention(const LightningArgs& args);

// Gradients of a loss L(O, S) given dL/dO (dout) and, optionally, dL/dS (dstate_out):
//   dQ[t] = sum_{s <= t} lambda^(t-s) (dO[t] . V[s]) K[s] + lambda^(t+1) dO[t] S0^T
//   dK[s] = sum_{t >= s} lambda^(t-s) (dO[t] . V[s]) Q[t] + lambda^(N-1-s) G V[s]
//   dV[s] = sum_{t >= s} lambda^(t-s) (Q[t] . K[s]) dO[t] + lambda^(N-1-s) G^T K[s]
//   dS0   = sum_t lambda^(t+1) Q[t]^T dO[t] + lambda^N G          (G = dstate_out, or 0)
// All gradients are f32; dstate_in is written only when given (and needs nothing else).
struct LightningBackwardArgs {
  LightningArgs forward;         // q, k, v, slopes, state_in, block, threads (out not read)
  TensorView dout;               // [B, H, N, E]  f32 | f16 | bf16
  TensorView dstate_out;         // optional f32 [B, H, D, E]
  MutableTensorView dq, dk, dv;  // f32, shaped like q, k, v
  MutableTensorView dstate_in;   // optional f32 [B, H, D, E]
};
void lightning_attention_backward(const LightningBackwardArgs& args);

// The O(N^2) oracle in double, straight from the definition (the official
// ops/torch/linear_attention.py with the carried state added); writes out and, if given,
// state_out. The backward oracle: the sums above, in double.
void lightning_attention_reference(const LightningArgs& args);
void lightning_attention_backward_reference(const LightningBackwardArgs& args);

}  // namespace attnkit
