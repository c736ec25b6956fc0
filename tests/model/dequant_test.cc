// Dequantizers against their formulas (written out here independently, element by element, from
// the ggml block layouts), fp16 conversion, and the reference quantizers' error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "attnkit/tensor.h"
#include "model/ggml_types.h"

namespace attnkit::model {
namespace {

// Random blocks whose fp16 fields hold finite, moderate values (so the formula is well defined).
std::vector<uint8_t> random_blocks(GgmlType type, int64_t blocks, uint32_t seed) {
  const GgmlTypeInfo& info = *ggml_type_info(static_cast<uint32_t>(type));
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(blocks * info.type_size);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(-0.1f, 0.1f);
  auto put_f16 = [&](size_t at) {
    const uint16_t h = float_to_fp16(scale(rng));
    std::memcpy(&bytes[at], &h, 2);
  };
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t base = b * info.type_size;
    switch (type) {
      case GgmlType::kQ4_0:
      case GgmlType::kQ8_0:
        put_f16(base);
        break;
      case GgmlType::kQ4_1:
      case GgmlType::kQ4_K:
        put_f16(base);
        put_f16(base + 2);
        break;
      case GgmlType::kQ6_K:
        put_f16(base + 208);
        break;
      default:
        break;
    }
  }
  return bytes;
}

float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);  // attnkit's own converter (src/core), independent of ggml_types
}

std::vector<float> dequant(GgmlType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(n);
  dequantize_row(type, bytes.data(), out.data(), n);
  return out;
}

TEST(ModelDequant, Fp16ConversionIsExact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = fp16_to_float(static_cast<uint16_t>(h));
    const float b = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << h;
      continue;
    }
    ASSERT_EQ(a, b) << "half bits " << h;
    ASSERT_EQ(float_to_fp16(a), h) << "round trip of half bits " << h;
  }
  for (float v : {1e-8f, 3.0e-5f, 0.1f, 65504.0f, 65520.0f, 1e6f, -2.5f})
    EXPECT_EQ(float_to_fp16(v), f32_to_f16(v)) << v;
}

TEST(ModelDequant, Q4_0MatchesFormula) {
  const int64_t blocks = 9;
  const auto bytes = random_blocks(GgmlType::kQ4_0, blocks, 1);
  const auto y = dequant(GgmlType::kQ4_0, bytes, blocks * 32);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* p = &bytes[b * 18];
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[b * 32 + j], ((p[2 + j] & 0xF) - 8) * f16(p));
      EXPECT_EQ(y[b * 32 + j + 16], ((p[2 + j] >> 4) - 8) * f16(p));
    }
  }
}

TEST(ModelDequant, Q4_1MatchesFormula) {
  const int64_t blocks = 9;
  const auto bytes = random_blocks(GgmlType::kQ4_1, blocks, 2);
  const auto y = dequant(GgmlType::kQ4_1, bytes, blocks * 32);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* p = &bytes[b * 20];
    for (int j = 0; j < 16; ++j) {
      EXPECT_FLOAT_EQ(y[b * 32 + j], (p[4 + j] & 0xF) * f16(p) + f16(p + 2));
      EXPECT_FLOAT_EQ(y[b * 32 + j + 16], (p[4 + j] >> 4) * f16(p) + f16(p + 2));
    }
  }
}

TEST(ModelDequant, Q8_0MatchesFormula) {
  const int64_t blocks = 7;
  const auto bytes = random_blocks(GgmlType::kQ8_0, blocks, 3);
  const auto y = dequant(GgmlType::kQ8_0, bytes, blocks * 32);
  for (int64_t b = 0; b < blocks; ++b)
    for (int j = 0; j < 32; ++j)
      EXPECT_EQ(y[b * 32 + j], static_cast<int8_t>(bytes[b * 34 + 2 + j]) * f16(&bytes[b * 34]));
}

TEST(ModelDequant, Q4_KMatchesFormula) {
  const int64_t blocks = 3;
  const auto bytes = random_blocks(GgmlType::kQ4_K, blocks, 4);
  const auto y = dequant(GgmlType::kQ4_K, bytes, blocks * 256);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* p = &bytes[b * 144];
    const uint8_t* sc = p + 4;
    // Sub-block s (of 32) has a 6-bit scale and min: s < 4 from the low 6 bits of sc[s] and
    // sc[s + 4]; s >= 4 from a nibble of sc[s + 4] plus the top 2 bits of sc[s - 4] / sc[s].
    for (int s = 0; s < 8; ++s) {
      const int scale = s < 4 ? sc[s] & 63 : (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
      const int min = s < 4 ? sc[s + 4] & 63 : (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
      // Sub-blocks 2i and 2i+1 share the 32 bytes qs[32 i ..]: low then high nibbles.
      const uint8_t* q = p + 16 + 32 * (s / 2);
      for (int l = 0; l < 32; ++l) {
        const int nibble = s % 2 == 0 ? q[l] & 15 : q[l] >> 4;
        EXPECT_FLOAT_EQ(y[b * 256 + s * 32 + l], f16(p) * scale * nibble - f16(p + 2) * min)
            << "block " << b << " sub " << s << " l " << l;
      }
    }
  }
}

TEST(ModelDequant, Q6_KMatchesFormula) {
  const int64_t blocks = 3;
  const auto bytes = random_blocks(GgmlType::kQ6_K, blocks, 5);
  const auto y = dequant(GgmlType::kQ6_K, bytes, blocks * 256);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* p = &bytes[b * 210];
    const float d = f16(p + 208);
    for (int i = 0; i < 256; ++i) {
      // Element i: half h = i / 128, then r = i % 128 selects quarter k = r / 32, lane l = r % 32.
      const int h = i / 128, r = i % 128, k = r / 32, l = r % 32;
      const uint8_t lo_byte = p[h * 64 + l + (k % 2) * 32];
      const int low = k < 2 ? lo_byte & 15 : lo_byte >> 4;
      const int high = (p[128 + h * 32 + l] >> (2 * k)) & 3;
      const int scale = static_cast<int8_t>(p[192 + h * 8 + l / 16 + 2 * k]);
      EXPECT_FLOAT_EQ(y[b * 256 + i], d * scale * ((low | (high << 4)) - 32)) << i;
    }
  }
}

TEST(ModelDequant, FloatTypes) {
  const std::vector<float> values = {0.0f, -1.5f, 3.25f, 1e-3f, -65504.0f, 7.0f};
  std::vector<uint8_t> f16_bytes(values.size() * 2), bf16_bytes(values.size() * 2),
      f32_bytes(values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = f32_to_f16(values[i]), bh = f32_to_bf16(values[i]);
    std::memcpy(&f16_bytes[2 * i], &h, 2);
    std::memcpy(&bf16_bytes[2 * i], &bh, 2);
    std::memcpy(&f32_bytes[4 * i], &values[i], 4);
  }
  const int64_t n = static_cast<int64_t>(values.size());
  const auto a = dequant(GgmlType::kF16, f16_bytes, n);
  const auto b = dequant(GgmlType::kBF16, bf16_bytes, n);
  const auto c = dequant(GgmlType::kF32, f32_bytes, n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(a[i], f16_to_f32(f32_to_f16(values[i])));
    EXPECT_EQ(b[i], bf16_to_f32(f32_to_bf16(values[i])));
    EXPECT_EQ(c[i], values[i]);
  }
}

// Quantize-dequantize error bounds (plus fp16 rounding of the scale): half a step for Q8_0 and
// Q4_1; Q4_0 maps the largest magnitude to -8, so the other side clamps at +7 and may lose a
// whole step d = amax / 8.
TEST(ModelDequant, QuantizersStayWithinTheirErrorBounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 32 * 13;
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  struct Case {
    GgmlType type;
    void (*quantize)(const float*, void*, int64_t);
    double error_per_range;  // largest error / (block range)
  };
  for (const Case& c : {Case{GgmlType::kQ8_0, quantize_row_q8_0, 1.0 / 254},
                        Case{GgmlType::kQ4_0, quantize_row_q4_0, 1.0 / 16},
                        Case{GgmlType::kQ4_1, quantize_row_q4_1, 1.0 / 30}}) {
    const GgmlTypeInfo& info = *ggml_type_info(static_cast<uint32_t>(c.type));
    std::vector<uint8_t> q(n / 32 * info.type_size);
    c.quantize(x.data(), q.data(), n);
    const auto y = dequant(c.type, q, n);
    for (int64_t b = 0; b < n / 32; ++b) {
      float lo = x[b * 32], hi = x[b * 32];
      for (int j = 0; j < 32; ++j)
        lo = std::min(lo, x[b * 32 + j]), hi = std::max(hi, x[b * 32 + j]);
      const double range = c.type == GgmlType::kQ4_1 ? hi - lo : 2.0 * std::max(-lo, hi);
      const double bound = range * (c.error_per_range * 1.01 + 1e-3);
      for (int j = 0; j < 32; ++j)
        EXPECT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), bound)
            << info.name << " block " << b << " element " << j;
    }
  }
}

}  // namespace
}  // namespace attnkit::model
