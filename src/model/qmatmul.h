// Products of a quantized weight matrix with a batch of float activations, never dequantizing
// more than one block (fast types) or one row (other types) at a time.
//
//   y[t * ldy + r] = sum_k W[r, k] * x[t * ldx + k]     for t < tokens, r < rows
//
// W is a GGUF tensor of `rows` rows of `cols` elements (ne0 = cols, contiguous, blocks along it).
// Fast paths (Highway, dynamic dispatch): Q4_1, Q8_0, Q4_0, F32. Other types (F16, BF16, Q4_K,
// Q6_K) dequantize one row at a time into a per-thread buffer and take the F32 path.
// Each (r, t) dot product is accumulated in the same order whatever `tokens` is, so a batched
// prefill and a one-token decode give bitwise identical products.
#pragma once

#include <cstdint>

#include "model/ggml_types.h"

namespace attnkit::model {

struct QMatrix {
  GgmlType type = GgmlType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_bytes = 0;

  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
};

// threads <= 0: every core (OpenMP default).
void matmul(const QMatrix& w, const float* x, int64_t tokens, int64_t ldx, float* y, int64_t ldy,
            int threads);

// Scalar oracle: dequantize_row() then a double-precision dot product.
void matmul_reference(const QMatrix& w, const float* x, int64_t tokens, int64_t ldx, float* y,
                      int64_t ldy);

}  // namespace attnkit::model
