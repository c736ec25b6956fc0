// Scalar references of the planner primitives (src/kernels/cpu/planner_ops.h): the obvious loops,
// accumulating in double, with the same contracts. Only tests call them; nothing here includes
// the fast kernels they judge.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/tensor.h"

namespace attnkit::ref {

void mean_pool(const float* x, int64_t n, int64_t dim, int64_t ldx, int64_t kernel, int64_t stride,
               float* out);
void lse_pass(const float* q, int64_t nq, int64_t ldq, const float* keys, int64_t nk, int64_t ldk,
              int64_t dim, float scale, const int64_t* limit, float* lse);
void prob_reduce(const float* q, int64_t nq, int64_t ldq, const float* lse, const float* keys,
                 int64_t nk, int64_t ldk, int64_t dim, float scale, const int64_t* limit,
                 int64_t row_group, int64_t col_group, float* out);
std::vector<int32_t> topk_indices(const float* score, int64_t n, int64_t k);
void gather_rows(const TensorView& x, int64_t b, int64_t h, const int32_t* index, int64_t count,
                 float* out);
std::vector<int32_t> stable_argsort(const std::vector<uint32_t>& keys);

}  // namespace attnkit::ref
