// Tensor, dtype and scalar conversion tests. The f16 checks are exhaustive over all 65536 bit
// patterns; expected values come from the IEEE definitions computed in double, not from the code
// under test.
#include "attnkit/tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "attnkit/error.h"

namespace attnkit {
namespace {

uint32_t bits_of(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}

bool f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

// The value of a finite f16 by its definition: (-1)^s 2^(e-15) (1 + m/1024), or m 2^-24.
double f16_definition(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double magnitude = e == 0 ? std::ldexp(m, -24) : std::ldexp(1.0 + m / 1024.0, e - 15);
  return (h & 0x8000) ? -magnitude : magnitude;
}

TEST(TensorF16, EveryBitPatternDecodesByDefinitionAndRoundTrips) {
  int failures = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float value = f16_to_f32(bits);
    const int exponent = (h >> 10) & 0x1f;
    if (exponent == 31) {
      if (h & 0x3ff) {
        EXPECT_TRUE(std::isnan(value)) << "bits 0x" << std::hex << h;
        EXPECT_TRUE(f16_is_nan(f32_to_f16(value))) << "bits 0x" << std::hex << h;
        EXPECT_EQ(f32_to_f16(value) & 0x8000, h & 0x8000) << "NaN sign, bits 0x" << std::hex << h;
      } else {
        EXPECT_TRUE(std::isinf(value) && std::signbit(value) == bool(h & 0x8000));
        EXPECT_EQ(f32_to_f16(value), bits);
      }
      continue;
    }
    if (static_cast<double>(value) != f16_definition(bits) ||
        std::signbit(value) != bool(h & 0x8000) || f32_to_f16(value) != bits) {
      if (++failures <= 10)
        ADD_FAILURE() << "bits 0x" << std::hex << h << ": decoded " << value << ", expected "
                      << f16_definition(bits) << ", re-encoded 0x" << f32_to_f16(value);
    }
  }
  EXPECT_EQ(failures, 0);
}

// Every midpoint between two adjacent finite f16 values rounds to the even one; a hair above or
// below rounds to the nearer one.
TEST(TensorF16, MidpointsRoundToNearestEven) {
  int failures = 0;
  for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}}) {
    for (uint16_t h = 0; h < 0x7bff; ++h) {
      const uint16_t lo = sign | h, hi = sign | static_cast<uint16_t>(h + 1);
      // Exact in f32: two adjacent halves differ in the 11th significant bit at most.
      const float mid = static_cast<float>((f16_definition(lo) + f16_definition(hi)) / 2);
      const uint16_t even = (lo & 1) ? hi : lo;
      const float toward_hi =
          std::nextafter(mid, f16_definition(hi) > f16_definition(lo) ? 1e9f : -1e9f);
      const float toward_lo =
          std::nextafter(mid, f16_definition(hi) > f16_definition(lo) ? -1e9f : 1e9f);
      if (f32_to_f16(mid) != even || f32_to_f16(toward_hi) != hi || f32_to_f16(toward_lo) != lo) {
        if (++failures <= 10)
          ADD_FAILURE() << "between 0x" << std::hex << lo << " and 0x" << hi << ": mid -> 0x"
                        << f32_to_f16(mid) << ", above -> 0x" << f32_to_f16(toward_hi)
                        << ", below -> 0x" << f32_to_f16(toward_lo);
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(TensorF16, OverflowUnderflowAndSpecials) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // tie between 65504 (odd) and 2^16: to infinity
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(f16_is_nan(f32_to_f16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload lives only in the low f32 bits must not become infinity.
  float low_payload_nan;
  const uint32_t nan_bits = 0x7f800001u;
  std::memcpy(&low_payload_nan, &nan_bits, 4);
  EXPECT_TRUE(f16_is_nan(f32_to_f16(low_payload_nan)));
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 2^-24: to 0
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // tie between 1 and 2 ulps: to 2
  EXPECT_EQ(f32_to_f16(1e-30f), 0x0000);
  EXPECT_EQ(f32_to_f16(-1e-30f), 0x8000);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  // The largest subnormal rounds up into the smallest normal when just below 2^-14.
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -14), 0.0f)), 0x0400);
}

TEST(TensorBF16, EveryBitPatternRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float value = bf16_to_f32(bits);
    EXPECT_EQ(bits_of(value), h << 16);
    if (std::isnan(value))
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(value)))) << std::hex << h;
    else
      EXPECT_EQ(f32_to_bf16(value), bits) << std::hex << h;
  }
}

TEST(TensorBF16, RoundsToNearestEven) {
  // Around 1.0 a bf16 ulp is 2^-7.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie, 1.0 is even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie, 0x3f81 is odd
  EXPECT_EQ(f32_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 0.0f)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-1.0f - std::ldexp(1.0f, -8)), 0xbf80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // beyond the midpoint
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  float low_payload_nan;
  const uint32_t nan_bits = 0x7f800001u;
  std::memcpy(&low_payload_nan, &nan_bits, 4);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(low_payload_nan))));
}

TEST(TensorDType, NamesSizesAndParsing) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    EXPECT_EQ(parse_dtype(dtype_name(dtype), "--dtype"), dtype);
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  try {
    parse_dtype("f64", "--dtype");
    FAIL() << "f64 accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.argument(), "--dtype");
    EXPECT_NE(std::string(error.what()).find("f64"), std::string::npos);
  }
}

TEST(TensorOwning, ZeroFilledWithCOrderViewsForEveryRank) {
  const std::vector<std::vector<int64_t>> shapes = {{7}, {3, 5}, {2, 3, 4}, {2, 3, 5, 7}};
  for (const auto& shape : shapes) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      const Tensor tensor(shape, dtype);
      int64_t expected = 1;
      for (int64_t d : shape) expected *= d;
      EXPECT_EQ(tensor.numel(), expected);
      EXPECT_EQ(tensor.bytes(), expected * dtype_size(dtype));
      const TensorView view = tensor.view();
      EXPECT_EQ(view.numel(), expected);
      const size_t pad = 4 - shape.size();
      int64_t stride = 1;
      for (int axis = 3; axis >= 0; --axis) {
        EXPECT_EQ(view.shape[axis], axis < static_cast<int>(pad) ? 1 : shape[axis - pad]);
        EXPECT_EQ(view.stride[axis], stride) << shape_string(shape) << " axis " << axis;
        stride *= view.shape[axis];
      }
      for (int64_t i = 0; i < expected; ++i)
        EXPECT_EQ(view.get(0, 0, 0, i), 0.0f);  // flat walk through the last axis' stride 1
    }
  }
  EXPECT_EQ(shape_string({1, 8, 4096, 128}), "[1,8,4096,128]");
  EXPECT_EQ(Tensor({2, 8, 16, 4}, DType::kBF16).view().describe(), "[2,8,16,4] bf16");
}

TEST(TensorOwning, RejectsBadShapes) {
  EXPECT_THROW(Tensor({}, DType::kF32), Error);
  EXPECT_THROW(Tensor({1, 2, 3, 4, 5}, DType::kF32), Error);
  EXPECT_THROW(Tensor({2, -1}, DType::kF32), Error);
  EXPECT_THROW(Tensor({int64_t{1} << 40, int64_t{1} << 40}, DType::kF32), Error);
  EXPECT_EQ(Tensor({3, 0, 2}, DType::kF16).numel(), 0);
}

TEST(TensorView, GetSetThroughPermutedStrides) {
  // A [batch, seq, heads, dim] buffer viewed as [batch, heads, seq, dim] without a copy.
  const int64_t batch = 2, seq = 5, heads = 3, dim = 7;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    Tensor storage({batch, seq, heads, dim}, dtype);
    MutableTensorView view = storage.view();
    std::swap(view.shape[1], view.shape[2]);
    std::swap(view.stride[1], view.stride[2]);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t s = 0; s < seq; ++s)
          for (int64_t d = 0; d < dim; ++d)
            view.set(b, h, s, d, float(((b * 3 + h) * 5 + s) * 7 + d));
    // Small integers are exact in every dtype (bf16 up to 256).
    const TensorView flat = static_cast<const Tensor&>(storage).view();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t s = 0; s < seq; ++s)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t d = 0; d < dim; ++d)
            EXPECT_EQ(flat.get(b, s, h, d), float(((b * 3 + h) * 5 + s) * 7 + d))
                << dtype_name(dtype);
    // Row (b=1, h=2, s=3) starts at 1 * seq*heads*dim + 2 * dim + 3 * heads*dim elements, and a
    // read-only copy of the view reads the same elements.
    const int64_t row_offset = seq * heads * dim + 2 * dim + 3 * heads * dim;
    const TensorView read_only = view;
    EXPECT_EQ(read_only.get(1, 2, 3, 4), view.get(1, 2, 3, 4));
    if (dtype == DType::kF32)
      EXPECT_EQ(view.row<float>(1, 2, 3) - static_cast<float*>(view.data), row_offset);
    else
      EXPECT_EQ(view.row<uint16_t>(1, 2, 3) - static_cast<uint16_t*>(view.data), row_offset);
  }
}

TEST(TensorOwning, ConvertsBetweenDtypesElementwise) {
  const int64_t count = 1000;
  Tensor source({count}, DType::kF32);
  for (int64_t i = 0; i < count; ++i)
    source.f32()[i] = std::ldexp(std::sin(0.37f * i), static_cast<int>(i % 41) - 20);
  const Tensor half = source.to(DType::kF16);
  const Tensor brain = source.to(DType::kBF16);
  const Tensor back = half.to(DType::kF32);
  const Tensor half_to_brain = half.to(DType::kBF16);
  ASSERT_EQ(half.shape(), source.shape());
  ASSERT_EQ(half.dtype(), DType::kF16);
  const auto* h = static_cast<const uint16_t*>(half.data());
  const auto* bf = static_cast<const uint16_t*>(brain.data());
  const auto* hb = static_cast<const uint16_t*>(half_to_brain.data());
  for (int64_t i = 0; i < count; ++i) {
    EXPECT_EQ(h[i], f32_to_f16(source.f32()[i])) << i;
    EXPECT_EQ(bf[i], f32_to_bf16(source.f32()[i])) << i;
    EXPECT_EQ(back.f32()[i], f16_to_f32(h[i])) << i;
    EXPECT_EQ(hb[i], f32_to_bf16(f16_to_f32(h[i]))) << i;
  }
  const Tensor copy = source.to(DType::kF32);
  EXPECT_EQ(std::memcmp(copy.data(), source.data(), source.bytes()), 0);
}

}  // namespace
}  // namespace attnkit
