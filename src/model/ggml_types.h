// ggml tensor element types as stored in GGUF files: sizes, block layouts and scalar dequantizers.
//
// Quantized types store blocks of `block_size` elements along ne0 (the contiguous, input dimension)
// in `type_size` bytes. Scales are IEEE fp16. Formulas (ggml-quants.c), j < 16 unless stated:
//   Q4_0 (32, 18 B): f16 d; u8 qs[16]         y[j] = ((qs[j] & 15) - 8) d,  y[j+16] = ((qs[j] >> 4)
//   - 8) d Q4_1 (32, 20 B): f16 d, m; u8 qs[16]      y[j] = (qs[j] & 15) d + m,    y[j+16] = (qs[j]
//   >> 4) d + m Q8_0 (32, 34 B): f16 d; i8 qs[32]         y[j] = qs[j] d                (j < 32)
//   Q4_K (256, 144 B) and Q6_K (256, 210 B): super-blocks with 6-bit / 8-bit sub-block scales.
// Low nibbles hold the first half of a 4-bit block, high nibbles the second: not interleaved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace attnkit::model {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ6_K = 14,
  kBF16 = 30,
};

struct GgmlTypeInfo {
  const char* name;
  int64_t block_size;  // elements per block
  int64_t type_size;   // bytes per block
};

// Info for a supported type, or nullptr for a code this reader does not know.
const GgmlTypeInfo* ggml_type_info(uint32_t code);
std::string ggml_type_name(uint32_t code);  // "Q4_1", or "type 17" when unknown

// Bytes of a row of `n` elements (n must be a multiple of the block size).
inline int64_t ggml_row_bytes(const GgmlTypeInfo& info, int64_t n) {
  return n / info.block_size * info.type_size;
}

// Dequantizes `n` elements (a multiple of the block size) starting at `src`. Scalar reference.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// IEEE binary16 -> float, exact (handles subnormals, inf, nan).
inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000 | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: renormalize
    int shift = 0;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | ((113 - shift) << 23) | ((mantissa & 0x3FF) << 13);
  }
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// float -> binary16, round to nearest even (for writing test files and quantizing).
uint16_t float_to_fp16(float value);

inline float read_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_float(h);
}

// Reference quantizers (used by tests and the GGUF writer): one row of n elements, n % 32 == 0.
void quantize_row_q8_0(const float* src, void* dst, int64_t n);
void quantize_row_q4_0(const float* src, void* dst, int64_t n);
void quantize_row_q4_1(const float* src, void* dst, int64_t n);
// `rows` rows of `cols` floats in F32, F16, Q8_0, Q4_0 or Q4_1 (cols % 32 == 0 for the quants);
// throws Error("type", ...) for the other types.
std::vector<uint8_t> quantize_rows(GgmlType type, const float* src, int64_t rows, int64_t cols);

}  // namespace attnkit::model
