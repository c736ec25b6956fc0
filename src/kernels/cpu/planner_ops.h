// Shared primitives of the content-based planners (InfLLM-V2, HiP, DHSA, HyperAttention, Routing,
// top-k oracle) and the token permutations of plans with a token order. Each fast function has a
// scalar reference (src/kernels/ref/primitives_ref.h, accumulating in double) and is tested
// against it in tests/kernels/primitives_test.cc.
//
// Matrices are row-major f32 with an explicit leading dimension (elements between rows):
//   q     [nq, dim]   queries of one head (pre-loaded with load_rows)
//   keys  [nk, dim]   keys of one kv head (raw or pooled)
// The exact LSE merge of two partial results is attnkit::merge (include/attnkit/attention.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit::cpu {

// --- Loading and permutations (permute.cc) ---

// out[r, :] = x[b, h, start + r, :] as f32, r < count; out is contiguous [count, D].
void load_rows(const TensorView& x, int64_t b, int64_t h, int64_t start, int64_t count, float* out);
// x[b, h, start + r, :] = rows[r, :] for r < count: rows contiguous [count, D], x f32 with a
// contiguous head dim.
void store_rows(const float* rows, int64_t count, const MutableTensorView& x, int64_t b, int64_t h,
                int64_t start);
// out[r, :] = x[b, h, index[r], :] as f32 (any dtype), r < count; out contiguous [count, D].
void gather_rows(const TensorView& x, int64_t b, int64_t h, const int32_t* index, int64_t count,
                 float* out);
// Stable argsort of unsigned keys (counting sort on `bits`-bit keys): perm[r] = the index of the
// r-th smallest key, equal keys keep their original order. keys[i] < 2^bits, bits <= 16.
std::vector<int32_t> stable_argsort(const std::vector<uint32_t>& keys, int bits);
// Rows of x [B, H, N, D] (any dtype and strides) in kernel order: *dst becomes the contiguous
// [B, H, order.size(), D] of the same dtype (its memory reused) with row p = x[:, :,
// order[p], :] (zero for -1).
void permute_tokens(const TensorView& x, const std::vector<int32_t>& order, int threads,
                    Tensor* dst);
// The inverse for results: out[b, h, order[p], :] = permuted_out[b, h, p, :] and the same for the
// LSE (skipped when either LSE view is empty); padding rows (-1) are dropped.
void unpermute_tokens(const TensorView& permuted_out, const TensorView& permuted_lse,
                      const std::vector<int32_t>& order, const MutableTensorView& out,
                      const MutableTensorView& lse, int threads);

// --- Mean-pooled keys (pooling.cc) ---

// Number of full windows [m * stride, m * stride + kernel) inside n rows (0 when n < kernel).
int64_t pooled_count(int64_t n, int64_t kernel, int64_t stride);
// out[m, :] = mean of x[m * stride + t, :] over t < kernel, m < pooled_count(n, kernel, stride).
// x [n, dim] with leading dimension ldx; out contiguous [pooled_count, dim].
void mean_pool(const float* x, int64_t n, int64_t dim, int64_t ldx, int64_t kernel, int64_t stride,
               float* out);
// Number of keys of a pooled sequence visible to absolute query position `pos` under a causal
// limit on raw keys `last` (= pos + Nk - Nq): window m is visible iff all of it is, i.e.
// m * stride + kernel - 1 <= last.
int64_t pooled_visible(int64_t last, int64_t kernel, int64_t stride, int64_t pooled);

// --- Score tiles (score_tile.cc, Highway dynamic dispatch) ---

// kt[d * ldkt + j] = keys[j * ldk + d]: keys transposed once so that score tiles stream it.
void transpose_keys(const float* keys, int64_t nk, int64_t dim, int64_t ldk, float* kt,
                    int64_t ldkt);
// s[i * lds + j] = scale * q_i . k_j for i < rows, j < cols; kt from transpose_keys.
void score_tile(const float* q, int64_t ldq, int64_t rows, const float* kt, int64_t ldkt,
                int64_t cols, int64_t dim, float scale, float* s, int64_t lds);
// max_j s[j] over n entries (-inf for n = 0).
float row_max(const float* s, int64_t n);
// sum_j exp(s[j] - shift); with write, also s[j] = exp(s[j] - shift).
float exp_shift_sum(float* s, int64_t n, float shift, bool write);
// dst[j] += exp(s[j] - shift) for j < n (nothing when shift = -inf).
void exp_shift_add(const float* s, int64_t n, float shift, float* dst);
// A tile of rows at once (s[r * lds + j]):
// dst[j] += sum_r exp(s[r, j] - shift[r]) over rows with j < seen[r] (rows with shift = -inf
// add nothing); the rows' terms are summed in registers before dst is read.
void exp_shift_add_rows(const float* s, int64_t lds, int64_t rows, const int64_t* seen,
                        const float* shift, float* dst);
// Online log-sum-exp: each row r with seen[r] > 0 absorbs s[r, j < seen[r]] into its running
// (max[r], sum[r]) (start from (-inf, 0); lse = max + log(sum)).
void lse_absorb_rows(const float* s, int64_t lds, int64_t rows, const int64_t* seen, float* max,
                     float* sum);

// --- bf16 score tiles (score_tile_bf16.cc) ---

// Scoring passes in bf16: operands rounded to bf16 and products summed in f32 (twice the rate
// on CPUs with AVX512-BF16; InfLLM-V2's official kernels score in bf16).

// x rounded to the nearest bf16 (ties to even), returned as the f32 of equal value. Finite x.
inline float round_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, sizeof u);
  return x;
}
// Two values as one packed bf16 pair: lo's bf16 in the low half, hi's in the high half.
inline uint32_t bf16_pair(float lo, float hi) {
  uint32_t l, h;
  const float rl = round_to_bf16(lo), rh = round_to_bf16(hi);
  std::memcpy(&l, &rl, sizeof l);
  std::memcpy(&h, &rh, sizeof h);
  return (l >> 16) | h;
}
// A matrix x [n][dim] packed for bf16 passes, in chunks of kBf16Chunk columns so that a score
// tile's pair rows lie close together: column j's pairs start at at(j) and follow at a stride
// of kBf16Chunk, at(j)[p * kBf16Chunk] = bf16_pair(x[j][2p], x[j][2p + 1]), p < ceil(dim / 2);
// columns past n up to the chunk's end are zero. Passes that score one matrix several times
// take it packed once.
inline constexpr int64_t kBf16Chunk = 256;
struct Bf16Matrix {
  std::vector<uint32_t> data;
  int64_t n = 0, dim = 0;
  int64_t offset(int64_t j) const {
    return (j / kBf16Chunk) * ((dim + 1) / 2) * kBf16Chunk + j % kBf16Chunk;
  }
  const uint32_t* at(int64_t j) const { return data.data() + offset(j); }
};
// x [n][dim] with leading dimension ldx, packed.
Bf16Matrix pack_bf16(const float* x, int64_t n, int64_t dim, int64_t ldx);
// Whether score_tile_bf16 runs on vdpbf16ps here (else on f32 FMAs, same products).
bool native_bf16_dot();
// Rows of a transposed matrix xt [dim][ldx] paired up: out[p * ldo + j] =
// bf16_pair(xt[2p][j], xt[2p + 1][j]) for p < ceil(dim / 2), j < n (the high half 0 past dim).
void pack_bf16_pairs(const float* xt, int64_t dim, int64_t n, int64_t ldx, uint32_t* out,
                     int64_t ldo);
// s[i * lds + j] = scale * sum_{p < pairs} (lo(q) lo(k) + hi(q) hi(k)) with q = qp[p * ldq + i]
// and k = kp[p * ldk + j], i < rows, j < cols: both operands from pack_bf16_pairs (queries
// transposed the same way as keys), products summed in f32.
void score_tile_bf16(const uint32_t* qp, int64_t ldq, int64_t rows, const uint32_t* kp, int64_t ldk,
                     int64_t cols, int64_t pairs, float scale, float* s, int64_t lds);

// --- LSE-only pass (lse_pass.cc) ---

// lse[i] = log sum_{j < limit[i]} exp(scale * q_i . k_j) (natural log; -inf when limit[i] = 0).
// limit == nullptr means every row sees all nk keys. No output O is computed.
void lse_pass(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk, int64_t ldk,
              int64_t dim, float scale, const int64_t* limit, float* lse);
// The same over packed operands (q.dim == keys.dim): the scores of q and keys rounded to bf16.
void lse_pass(const Bf16Matrix& q, const Bf16Matrix& keys, float scale, const int64_t* limit,
              float* lse);

// --- Normalised-probability reduction (prob_reduce.cc) ---

// out[(i / row_group) * out_cols + j / col_group] += exp(scale * q_i . k_j - lse[i])
// for i < nq, j < limit[i] (all nk when limit is null), out_cols = ceil(nk / col_group).
// Accumulates, so calling it once per query head of a GQA group gives the group sum.
// Rows with lse = -inf contribute nothing.
void prob_reduce(const float* q, int64_t nq, int64_t ldq, const float* lse, const float* keys,
                 int64_t nk, int64_t ldk, int64_t dim, float scale, const int64_t* limit,
                 int64_t row_group, int64_t col_group, float* out);
// The same over packed operands (q.dim == keys.dim): the scores of q and keys rounded to bf16.
void prob_reduce(const Bf16Matrix& q, const float* lse, const Bf16Matrix& keys, float scale,
                 const int64_t* limit, int64_t row_group, int64_t col_group, float* out);

// --- Top-k (topk.cc) ---

// Indices of the k largest scores (k clamped to n), ascending by index. Ties go to the lower
// index; NaN never wins. Deterministic.
std::vector<int32_t> topk_indices(const float* score, int64_t n, int64_t k);

}  // namespace attnkit::cpu
