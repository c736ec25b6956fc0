// Scalar dequantizers and reference quantizers for the ggml block formats (formulas in
// ggml_types.h).
#include "model/ggml_types.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "attnkit/error.h"

namespace attnkit::model {

namespace {
const GgmlTypeInfo kF32Info{"F32", 1, 4};
const GgmlTypeInfo kF16Info{"F16", 1, 2};
const GgmlTypeInfo kBF16Info{"BF16", 1, 2};
const GgmlTypeInfo kQ4_0Info{"Q4_0", 32, 18};
const GgmlTypeInfo kQ4_1Info{"Q4_1", 32, 20};
const GgmlTypeInfo kQ8_0Info{"Q8_0", 32, 34};
const GgmlTypeInfo kQ4_KInfo{"Q4_K", 256, 144};
const GgmlTypeInfo kQ6_KInfo{"Q6_K", 256, 210};

// Q4_K packs 8 six-bit (scale, min) pairs into 12 bytes.
void q4k_scale_min(int j, const uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t code) {
  switch (static_cast<GgmlType>(code)) {
    case GgmlType::kF32:
      return &kF32Info;
    case GgmlType::kF16:
      return &kF16Info;
    case GgmlType::kBF16:
      return &kBF16Info;
    case GgmlType::kQ4_0:
      return &kQ4_0Info;
    case GgmlType::kQ4_1:
      return &kQ4_1Info;
    case GgmlType::kQ8_0:
      return &kQ8_0Info;
    case GgmlType::kQ4_K:
      return &kQ4_KInfo;
    case GgmlType::kQ6_K:
      return &kQ6_KInfo;
  }
  return nullptr;
}

std::string ggml_type_name(uint32_t code) {
  const GgmlTypeInfo* info = ggml_type_info(code);
  return info ? info->name : "type " + std::to_string(code);
}

uint16_t float_to_fp16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7FFFFFFF;
  if (abs >= 0x7F800000) return sign | (abs > 0x7F800000 ? 0x7E00 : 0x7C00);
  if (abs >= 0x477FF000) return sign | 0x7C00;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000) {                       // result is subnormal or zero
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    // Units of 2^-24, rounded to nearest even by the FPU.
    return sign | static_cast<uint16_t>(std::nearbyint(magnitude * 16777216.0f));
  }
  const uint32_t mantissa = abs & 0x7FFFFF;
  uint32_t half = ((abs >> 23) - 112) << 10 | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // carries into the exponent
  return sign | static_cast<uint16_t>(half);
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, p, n * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = read_fp16(p + 2 * i);
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(dst + i, &bits, 4);
      }
      return;
    case GgmlType::kQ4_0:
      for (int64_t b = 0; b < n / 32; ++b, p += 18, dst += 32) {
        const float d = read_fp16(p);
        for (int j = 0; j < 16; ++j) {
          dst[j] = ((p[2 + j] & 0xF) - 8) * d;
          dst[j + 16] = ((p[2 + j] >> 4) - 8) * d;
        }
      }
      return;
    case GgmlType::kQ4_1:
      for (int64_t b = 0; b < n / 32; ++b, p += 20, dst += 32) {
        const float d = read_fp16(p), m = read_fp16(p + 2);
        for (int j = 0; j < 16; ++j) {
          dst[j] = (p[4 + j] & 0xF) * d + m;
          dst[j + 16] = (p[4 + j] >> 4) * d + m;
        }
      }
      return;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < n / 32; ++b, p += 34, dst += 32) {
        const float d = read_fp16(p);
        for (int j = 0; j < 32; ++j) dst[j] = static_cast<int8_t>(p[2 + j]) * d;
      }
      return;
    case GgmlType::kQ4_K:
      for (int64_t b = 0; b < n / 256; ++b, p += 144) {
        const float d = read_fp16(p), dmin = read_fp16(p + 2);
        const uint8_t* scales = p + 4;
        const uint8_t* q = p + 16;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
          int sc, m;
          q4k_scale_min(is, scales, &sc, &m);
          const float d1 = d * sc, m1 = dmin * m;
          q4k_scale_min(is + 1, scales, &sc, &m);
          const float d2 = d * sc, m2 = dmin * m;
          for (int l = 0; l < 32; ++l) *dst++ = d1 * (q[l] & 0xF) - m1;
          for (int l = 0; l < 32; ++l) *dst++ = d2 * (q[l] >> 4) - m2;
        }
      }
      return;
    case GgmlType::kQ6_K:
      for (int64_t b = 0; b < n / 256; ++b, p += 210) {
        const uint8_t* ql = p;
        const uint8_t* qh = p + 128;
        const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192);
        const float d = read_fp16(p + 208);
        for (int half = 0; half < 2; ++half, dst += 128, ql += 64, qh += 32, sc += 8) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            dst[l] = d * sc[is + 0] * q1;
            dst[l + 32] = d * sc[is + 2] * q2;
            dst[l + 64] = d * sc[is + 4] * q3;
            dst[l + 96] = d * sc[is + 6] * q4;
          }
        }
      }
      return;
  }
}

void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / 32; ++b, src += 32, p += 34) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(src[j]));
    const uint16_t dh = float_to_fp16(amax / 127.0f);
    std::memcpy(p, &dh, 2);
    const float d = fp16_to_float(dh);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; ++j) {
      const int q = static_cast<int>(std::lround(src[j] * inv));
      p[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(q, -127, 127)));
    }
  }
}

void quantize_row_q4_0(const float* src, void* dst, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / 32; ++b, src += 32, p += 18) {
    float amax = 0.0f, max = 0.0f;  // signed value of largest magnitude maps to -8
    for (int j = 0; j < 32; ++j)
      if (std::fabs(src[j]) > amax) amax = std::fabs(src[j]), max = src[j];
    const uint16_t dh = float_to_fp16(max / -8.0f);
    std::memcpy(p, &dh, 2);
    const float d = fp16_to_float(dh);
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; ++j) {
      const int lo = std::clamp(static_cast<int>(std::lround(src[j] * inv)) + 8, 0, 15);
      const int hi = std::clamp(static_cast<int>(std::lround(src[j + 16] * inv)) + 8, 0, 15);
      p[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void quantize_row_q4_1(const float* src, void* dst, int64_t n) {
  uint8_t* p = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / 32; ++b, src += 32, p += 20) {
    const float lo = *std::min_element(src, src + 32), hi = *std::max_element(src, src + 32);
    const uint16_t dh = float_to_fp16((hi - lo) / 15.0f), mh = float_to_fp16(lo);
    std::memcpy(p, &dh, 2);
    std::memcpy(p + 2, &mh, 2);
    const float d = fp16_to_float(dh), m = fp16_to_float(mh);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; ++j) {
      const int a = std::clamp(static_cast<int>(std::lround((src[j] - m) * inv)), 0, 15);
      const int c = std::clamp(static_cast<int>(std::lround((src[j + 16] - m) * inv)), 0, 15);
      p[4 + j] = static_cast<uint8_t>(a | (c << 4));
    }
  }
}

std::vector<uint8_t> quantize_rows(GgmlType type, const float* src, int64_t rows, int64_t cols) {
  const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
  check(info != nullptr, "type", "unknown ggml type " + std::to_string(static_cast<int>(type)));
  const int64_t row_bytes = ggml_row_bytes(*info, cols);
  std::vector<uint8_t> out(rows * row_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * cols;
    uint8_t* dst = out.data() + r * row_bytes;
    switch (type) {
      case GgmlType::kF32:
        std::memcpy(dst, row, cols * sizeof(float));
        break;
      case GgmlType::kF16:
        for (int64_t k = 0; k < cols; ++k) {
          const uint16_t h = float_to_fp16(row[k]);
          std::memcpy(dst + 2 * k, &h, 2);
        }
        break;
      case GgmlType::kQ8_0:
        quantize_row_q8_0(row, dst, cols);
        break;
      case GgmlType::kQ4_0:
        quantize_row_q4_0(row, dst, cols);
        break;
      case GgmlType::kQ4_1:
        quantize_row_q4_1(row, dst, cols);
        break;
      default:
        throw Error("type", std::string("no quantizer for ") + info->name);
    }
  }
  return out;
}

}  // namespace attnkit::model
