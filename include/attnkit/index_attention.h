// Index-list attention: each query attends an explicit list of keys (PointGS's point interaction,
// where each 3-D Gaussian attends its k nearest neighbours; also token-level selections such as
// a teacher-forced H2O mask or a router's chosen tokens). PointGS released no code; its rule as
// the seed notes read it is softmax over kNN(i) of q_i . k_j / sqrt(d); a relative-position term
// (p_i - p_j), if the model has one, belongs to the caller's q and k.
//
//   O[b,h,i,:] = sum_{j in L(b,h,i)} softmax_j(scale * Q[b,h,i,:] . K[b,g,j,:]) V[b,g,j,:]
//   LSE[b,h,i] = log sum_{j in L(b,h,i)} exp(scale * Q[b,h,i,:] . K[b,g,j,:])
// with g = h / (Hq / Hkv) (GQA) and L the row's list. It equals dense attention under the boolean
// mask that allows exactly the listed pairs (tested so). A list entry of -1 is padding (skipped
// wherever it stands); a row whose list holds no key gets O = 0 and LSE = -inf. A key listed twice
// in one row is an error (the set semantics of the equivalent mask; counting it twice would weight
// it double), as is an index outside [-1, Nk).
//
// Work is proportional to the listed pairs: each row gathers its keys and values (no N x N
// anything). The backward recomputes the probabilities from the LSE per row (dQ) and walks the
// lists transposed (per key, the rows that list it, in row order) for dK and dV, so no two threads
// write one gradient and the result does not depend on the schedule.
#pragma once

#include <cstdint>

#include "attnkit/attention.h"
#include "attnkit/tensor.h"

namespace attnkit {

// The lists, in one of two forms:
//  - padded: int32 [B or 1, Hq or 1, Nq, K] (a dimension of size 1 is shared by every batch or
//    query head), strides in elements; -1 entries are padding;
//  - CSR, one list set for every batch and head: row i lists columns[offsets[i] .. offsets[i+1])
//    (offsets has Nq + 1 non-decreasing entries starting at 0; -1 entries are skipped too).
struct IndexLists {
  const int32_t* padded = nullptr;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};
  const int64_t* offsets = nullptr;
  const int32_t* columns = nullptr;

  // C-order padded lists of `shape` at `data`.
  static IndexLists padded_lists(const int32_t* data, const int64_t (&shape)[4]);
  static IndexLists csr(const int64_t* offsets, const int32_t* columns);
};

// args: q, k, v, out, optional lse, scale, threads as for attention(); causality, dropout and the
// score modifiers are not part of this operator (args.causal must be false). Errors name "q",
// "k", "v", "out", "lse", "scale", "threads" or "indices" (with the row and the value at fault).
void index_attention(const AttentionArgs& args, const IndexLists& indices);

// Gradients as attention_backward() defines them (dLSE optional; dK, dV summed over each GQA
// group), over the listed pairs only. args.forward holds the forward's out and lse.
void index_attention_backward(const BackwardArgs& args, const IndexLists& indices);

// The oracles: attention_reference() and attention_backward_reference() under the element
// predicate that allows exactly the listed pairs (O(Nq * Nk * K): tests and small runs).
void index_attention_reference(const AttentionArgs& args, const IndexLists& indices);
void index_attention_backward_reference(const BackwardArgs& args, const IndexLists& indices);

// The k nearest neighbours of every point, nearest first: points f32 [n, 3] (row-major), out
// int32 [n, k] row-major. A point is its own nearest neighbour (distance 0; PointGS's kNN
// includes the Gaussian itself, as point transformers do); equal distances go to the lower
// index; rows of n < k points are padded with -1. A k-d tree: O(n log n) to build, about
// O(k log n) per query. Errors name "points" (non-finite coordinates) or "k".
void knn(const float* points, int64_t n, int64_t k, int32_t* out, int threads = 0);

}  // namespace attnkit
