// Exact (dense, causal) and block-sparse attention on the CPU, the scalar reference, and LSE merge.
//
//   O[b,h,i,:] = sum_j softmax_j(scale * Q[b,h,i,:] . K[b,g,j,:]) V[b,g,j,:]   over allowed j
//   LSE[b,h,i] = log sum_j exp(scale * Q . K)                                  (natural log)
// with g = h / (Hq / Hkv) (GQA/MQA). Causality is bottom-right aligned: query i sees key j iff
// j <= i + (Nk - Nq). A row that sees no key gets O = 0 and LSE = -inf.
#pragma once

#include <cstdint>
#include <functional>

#include "attnkit/tensor.h"

namespace attnkit {

struct BlockMask;

// Per query head override of attention (AttentionArgs::head_modes).
enum class HeadMode : uint8_t { kNormal = 0, kUniform = 1, kZero = 2 };

struct AttentionArgs {
  TensorView q;  // [B, Hq, Nq, D]   f32 | f16 | bf16
  TensorView k;  // [B, Hkv, Nk, D]  same dtype as q (*)
  TensorView v;  // [B, Hkv, Nk, Dv] same dtype as k
  // (*) Or f16 / bf16 K and V with an f32 Q when Nq <= 16 (decode over a 16-bit KV cache: the
  // decode kernel reads K and V in place); also accepted by attention_column_sums.
  MutableTensorView out;  // [B, Hq, Nq, Dv]  f32
  MutableTensorView lse;  // optional [B, Hq, Nq, 1] f32 (Tensor::rows_view of a [B, Hq, Nq])
  float scale = 0.0f;     // 0 means 1/sqrt(D)
  bool causal = false;    // bottom-right aligned
  int threads = 0;        // 0 means every core
  // Attention dropout (training): each probability P[b,h,i,j] is kept with probability 1 - dropout
  // and scaled by 1 / (1 - dropout), else zeroed, after normalisation (the row sum and the LSE are
  // those of the undropped P). The mask is a pure function of (dropout_seed, b, h, i, j)
  // (core/dropout.h), so the backward redraws it. 0 = off; must be in [0, 1). Not on the decode
  // path.
  float dropout = 0.0f;
  uint64_t dropout_seed = 0;
  // Optional: the kernels add the number of (query, key) pairs they attended, summed over batch
  // and heads (counted from the masked score tiles, so it is exact for any mask).
  int64_t* attended_pairs = nullptr;

  // Score modifiers (core/score_modifiers.h); with all of them off, results are bit-identical to
  // a call without them. Row (b, h, i)'s scores are multiplied by its temperature factor
  //   tau = row_scale[b, h, i] * (1 + position_scale * ln(position + 1))
  // with position = first_position + i, or i + Nk - Nq (the bottom-right aligned position) when
  // first_position < 0: Selective Attention's 1 + s ln(i) over 1-based absolute positions, which
  // decode passes so that a decode step equals its prefill row. tau = 0 makes the row's attention
  // uniform over the keys it sees. Its output row is multiplied by output_gate[b, h, i] (MoH's
  // gate; 0 silences the row, and a kernel may then skip it); the LSE stays the ungated
  // attention's. head_modes overrides whole query heads: kUniform sets tau = 0 (causal: the
  // prefix mean of V), kZero the gate to 0 (AttentionInfluence's two head masks).
  TensorView row_scale;         // optional f32 [B, Hq, Nq, 1], finite
  float position_scale = 0.0f;  // s >= 0
  int64_t first_position = -1;
  TensorView output_gate;                // optional f32 [B, Hq, Nq, 1], finite
  const HeadMode* head_modes = nullptr;  // optional, Hq entries
};

// Fused tiled online-softmax kernel. Picks the decode path when Nq <= 16 and Nk is long (or Q is
// f32 over 16-bit K and V).
// Errors name the argument at fault: "q", "k", "v", "out", "lse", "scale", "threads".
void attention(const AttentionArgs& args);
// The same kernel walking the mask's kv-block lists (AND causal when args.causal); errors about
// the mask name "block_mask".
void attention(const AttentionArgs& args, const BlockMask& block_mask);
// Decode path (few queries, long cache): keys split across threads, partials merged by LSE.
void attention_decode(const AttentionArgs& args);
// The decode path over a mask's kv blocks (sparse decode): for masks of one query block
// (Nq <= 16) whose GQA groups share their kv-block lists (InfLLM-V2's shared selection; window
// and sink patterns, whose PARTIAL edge blocks are filled once per step); decode_can_walk says
// whether it applies, and attention(args, mask) takes it when it does. Errors name "block_mask".
bool decode_can_walk(const AttentionArgs& args, const BlockMask& block_mask);
void attention_decode(const AttentionArgs& args, const BlockMask& block_mask);

// Column sums of the normalised probabilities (H2O's heavy-hitter statistic, ACT's sink test),
// a second pass over the scores from the forward's LSE:
//   C[b, h, j] = sum_i exp(scale * Q[b,h,i] . K[b,g,j] - LSE[b,h,i])   over the pairs the forward
// saw (args.causal respected; rows with LSE = -inf add nothing). `args` are the forward's (lse
// required, out not read). `col_sums` is f32 [B, Hq, Nk, 1] (per query head) or [B, Hkv, Nk, 1]
// (summed over each group's query heads in head order: deterministic); it is overwritten.
// Errors name "lse" or "col_sums" (and the forward's arguments).
void attention_column_sums(const AttentionArgs& args, const MutableTensorView& col_sums);

// Exact combination of two partial results over disjoint key sets:
//   lse = log(exp(lse_a) + exp(lse_b)),  out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b.
// Shapes [B, H, N, Dv] (f32) and [B, H, N, 1]; `out` / `lse` may alias the a or b operands.
void merge(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
           const TensorView& lse_b, const MutableTensorView& out, const MutableTensorView& lse);

// --- Backward (FlashAttention-2 recomputation from the forward's LSE) ---
//
// Given the forward's inputs and outputs and the gradients of a loss with respect to O (dO) and,
// optionally, to the LSE (dLSE), computes dQ, dK, dV:
//   P = exp(scale * Q K^T - LSE)   (recomputed per tile)      D = rowsum(dO * O) - dLSE
//   dV = P^T dO,   dS = P * (dO V^T - D),   dQ = scale * dS K,   dK = scale * dS^T Q
// With dropout (Z = keep mask / (1 - p), redrawn from the seed): dV = (P * Z)^T dO and
// dS = P * ((dO V^T) * Z - D); D = rowsum(dO * O) still holds, O being the dropped output.
// GQA/MQA: dK and dV are summed over the query heads of each group. Rows that see no key
// (LSE = -inf) contribute nothing and get dQ = 0. Gradients are f32 whatever the dtype of Q, K, V
// (which are read and widened as the forward reads them; the arithmetic is f32). Results are
// bitwise identical across runs with the same thread count. Extra memory is O(N * D).
struct BackwardArgs {
  AttentionArgs forward;  // q, k, v, out (the forward's O), lse (required), scale, causal, threads
  TensorView dout;        // [B, Hq, Nq, Dv]  f32 | f16 | bf16
  TensorView dlse;        // optional [B, Hq, Nq, 1] f32: gradient with respect to the LSE
  MutableTensorView dq;   // [B, Hq, Nq, D]   f32
  MutableTensorView dk;   // [B, Hkv, Nk, D]  f32
  MutableTensorView dv;   // [B, Hkv, Nk, Dv] f32
};

// Dense or causal backward. Errors name "q", "k", "v", "out", "lse", "dout", "dlse", "dq", "dk",
// "dv", "scale" or "threads".
void attention_backward(const BackwardArgs& args);
// Backward of attention(args.forward, block_mask): the same pairs (mask AND causal), walked per
// key block through the mask's transpose.
void attention_backward(const BackwardArgs& args, const BlockMask& block_mask);

// Backward of merge(): given the operands, the merged result and its gradients (dout, optional
// dlse), the gradients of both operands (w = exp(lse_x - lse)):
//   dout_x = w dout,   dlse_x = w (dout . (out_x - out) + dlse).
// Every gradient is f32 and may not alias an input.
struct MergeGrads {
  MutableTensorView dout_a, dlse_a, dout_b, dlse_b;
};
void merge_backward(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
                    const TensorView& lse_b, const TensorView& out, const TensorView& lse,
                    const TensorView& dout, const TensorView& dlse, const MergeGrads& grads);

// Element predicate for the reference: may query head h at query i see key j (batch b)?
using ElementPredicate = std::function<bool(int64_t b, int64_t h, int64_t i, int64_t j)>;

// Scalar oracle, accumulating in double; O(Nk) memory per row. `allow` (if set) is ANDed
// with args.causal.
void attention_reference(const AttentionArgs& args, const ElementPredicate& allow = {});
// Column sums in double from the reference's own softmax (args.lse only validated); `allow` as
// above.
void attention_column_sums_reference(const AttentionArgs& args, const MutableTensorView& col_sums,
                                     const ElementPredicate& allow = {});
// Scalar backward oracle in double from explicit P, dP and dS per row (it recomputes the forward
// itself and reads args.forward.out and .lse only for validation); `allow` as above.
void attention_backward_reference(const BackwardArgs& args, const ElementPredicate& allow = {});

}  // namespace attnkit
