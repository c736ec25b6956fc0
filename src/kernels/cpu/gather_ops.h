// Row-gathering primitives of index-list attention: dot products of one f32 vector with listed
// rows of a matrix, and weighted sums of listed rows. The rows are read in their storage dtype
// (f32, f16, bf16) and widened in registers. Highway dynamic dispatch; tested against double
// loops in tests/kernels/gather_ops_test.cc.
#pragma once

#include <cstdint>

#include "attnkit/tensor.h"

namespace attnkit::cpu {

// A matrix of `dtype` rows: row r starts at base + r * stride elements; `dim` contiguous columns.
struct RowSource {
  const void* base;
  DType dtype;
  int64_t stride, dim;
};

// out[e] = scale * x . rows[index[e]] for e < count (x: f32 [dim]).
void gathered_dots(const float* x, float scale, const RowSource& rows, const int32_t* index,
                   int64_t count, float* out);
// out[:] (+)= sum_e weight[e] rows[index[e], :] for e < count; `accumulate` adds to out, else
// overwrites it (out: f32 [dim]).
void gathered_axpy(const float* weight, const int32_t* index, int64_t count, const RowSource& rows,
                   float* out, bool accumulate);

// One row of softmax attention over listed keys (keys and values share a dtype), scores in log2
// units: s_e = scale_log2e * x . keys[index[e]], p_e = 2^(s_e - max s), out = sum_e p_e values[index[e]]
// / sum_e p_e. Returns the row's LSE in natural log,
// (max s + log2 sum p) ln 2. `scores` is scratch of `count` floats (it ends holding p); count >= 1.
float gathered_attention_row(const float* x, float scale_log2e, const RowSource& keys,
                             const RowSource& values, const int32_t* index, int64_t count,
                             float* scores, float* out);

}  // namespace attnkit::cpu
