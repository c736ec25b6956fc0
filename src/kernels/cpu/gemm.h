// Small dense f32 matrix products for the operators that are not one attention walk (Lightning's
// block products and states, SOFT's kernel matrices and Newton iteration) and for the planners'
// score tiles. Highway dynamic dispatch (AVX2 / AVX-512 / NEON); tested against a double loop in
// tests/kernels/gemm_test.cc.
#pragma once

#include <cstdint>

namespace attnkit::cpu {

// A matrix operand read through two strides: element (i, p) at data[i * row + p * col]. A
// row-major [m, k] matrix with leading dimension ld is {data, ld, 1}; its transpose is {data, 1,
// ld}, so A^T products need no copy.
struct MatrixRef {
  const float* data;
  int64_t row, col;
};

inline MatrixRef row_major(const float* data, int64_t ld) { return {data, ld, 1}; }
inline MatrixRef transposed(const float* data, int64_t ld) { return {data, 1, ld}; }

// C[m, n] = alpha * A B + beta * C, with A [m, k] (any strides), B [k, n] row-major (leading
// dimension ldb, unit stride along n) and C [m, n] row-major (ldc). beta == 0 overwrites C
// without reading it (C may hold garbage). k == 0 gives beta * C.
void gemm(int64_t m, int64_t n, int64_t k, float alpha, MatrixRef a, const float* b, int64_t ldb,
          float beta, float* c, int64_t ldc);

// out[c * ldo + r] = in[r * ldi + c] for r < rows, c < cols (blocked for cache lines).
void transpose(const float* in, int64_t rows, int64_t cols, int64_t ldi, float* out, int64_t ldo);

}  // namespace attnkit::cpu
