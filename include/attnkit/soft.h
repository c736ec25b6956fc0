// SOFT: softmax-free attention with a Gaussian kernel and Nystrom landmarks (Lu et al., "SOFT:
// Softmax-free Transformer with Linear Complexity", NeurIPS 2021, arXiv 2110.11945; IJCV 2024,
// arXiv 2207.03341). Official code fudan-zvg/SOFT (models/softmax_free_transformer.py,
// SOFT/kernel/inverse.py), read for understanding only.
//
// The rule, as the official SoftmaxFreeAttentionKernel computes it (non-causal):
//   K := Q (one projection: the kernel matrix is symmetric positive semi-definite)
//   Q' = scale * Q, scale = D^(-1/4) by default (the code's Q / d^(1/4))
//   G(a, b) = exp(-|a - b|^2 / 2)                 (= exp(-|q - k|^2 / (2 sqrt(D))) in raw units)
//   K1 = G(Q', L) [N, m],  K2 = G(L, L) [m, m],  L the m landmarks (rows in Q' units)
//   O  = K1 Ninv(K2) (K1^T V)                      (no row normalisation)
// Ninv is the official Newton-Schulz iteration, 20 steps by default:
//   P = K2 + 0.01 I,  alpha = 1.8 / (max_i sum_j K2[i, j])^2,  X = alpha P,  X <- 2 X - X P X
// Its result is a spectral filter of P, f(lambda) = (1 - (1 - alpha lambda^2)^(2^iterations)) /
// lambda per eigenvalue, not P^-1: directions with alpha lambda^2 << 2^-iterations are damped
// (tested against that closed form). `inverse = kExact` uses K2^-1 itself (Cholesky in double;
// with landmarks = tokens, SOFT is then exactly G(Q', Q') V, tested so).
//
// Landmarks: the official code makes them with a learned strided convolution (kernel = stride =
// sr, then LayerNorm and GELU) on the H x W token grid. An operator has no weights, so they are
// either given (e.g. that convolution run in torch: `landmarks` gets its gradient) or, as the
// paper's pooling ablation, the mean of Q' over stride x stride windows of the grid (or of
// `stride` consecutive tokens of a 1-D sequence); like the convolution without padding, windows
// that would run past the edge are dropped (m = floor(H/sr) floor(W/sr), or floor(N / stride)).
// The depthwise convolution the official block adds to V's path is the model's, not this
// operator's.
//
// Backward as the official code treats it: Ninv's result is taken as the exact inverse of K2
// (dK2 = -X^T dX X^T), no gradient through the iterations or alpha. Time O(N m (D + E) + m^3)
// per head, memory O(N (D + E + m)): linear in N at fixed m.
#pragma once

#include <cstdint>

#include "attnkit/tensor.h"

namespace attnkit {

enum class SoftInverse : uint8_t { kNewton, kExact };

struct SoftArgs {
  TensorView q;  // [B, H, N, D]  f32 | f16 | bf16 (K := Q)
  TensorView v;  // [B, H, N, E]  same dtype
  // Optional [B, H, m, D] (any dtype), in Q' units. Without it, landmarks are pooled: `stride`
  // is required, and grid_height x grid_width (both 0 for a 1-D sequence) must equal N.
  TensorView landmarks;
  int64_t grid_height = 0, grid_width = 0;
  int64_t stride = 0;
  float scale = 0.0f;            // 0 means D^(-1/4)
  int newton_iterations = 20;    // in [0, 100]
  SoftInverse inverse = SoftInverse::kNewton;
  MutableTensorView out;  // [B, H, N, E] f32
  int threads = 0;        // 0 means every core
};

// Errors name "q", "v", "landmarks", "grid_height", "grid_width", "stride", "scale",
// "newton_iterations", "out", "threads" (and "landmarks" when K2 is singular for kExact).
void soft_attention(const SoftArgs& args);

// Gradients of a loss given dL/dO: dQ (through K1, K2 and pooled landmarks), dV, and, when
// landmarks were given, dL/dlandmarks. All f32.
struct SoftBackwardArgs {
  SoftArgs forward;              // everything but out
  TensorView dout;               // [B, H, N, E]  f32 | f16 | bf16
  MutableTensorView dq, dv;      // shaped like q, v
  MutableTensorView dlandmarks;  // [B, H, m, D]: required with given landmarks, else empty
};
void soft_attention_backward(const SoftBackwardArgs& args);

// The same chain in double, written out loop by loop (Newton in double too): the oracle.
void soft_attention_reference(const SoftArgs& args);
void soft_attention_backward_reference(const SoftBackwardArgs& args);

// The number of landmarks the call uses (given, or pooled from the grid or sequence).
int64_t soft_landmark_count(const SoftArgs& args);

}  // namespace attnkit
