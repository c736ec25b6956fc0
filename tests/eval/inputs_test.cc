// Random input generator: reproducible, standard normal, rounded like the dtype's conversion.
#include "eval/inputs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

namespace attnkit {
namespace {

TEST(RandomNormal, ReproducibleFromTheSeedAndDistinctAcrossSeeds) {
  const Tensor a = random_normal({3, 5, 7000}, DType::kF32, 42);
  const Tensor b = random_normal({3, 5, 7000}, DType::kF32, 42);
  const Tensor c = random_normal({3, 5, 7000}, DType::kF32, 43);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.bytes()), 0);
  int64_t equal = 0;
  for (int64_t i = 0; i < a.numel(); ++i) equal += a.f32()[i] == c.f32()[i];
  EXPECT_LT(equal, 10);
}

TEST(RandomNormal, HasStandardNormalMoments) {
  const Tensor t = random_normal({1 << 18}, DType::kF32, 7);
  const double n = static_cast<double>(t.numel());
  double sum = 0, sum_sq = 0, beyond_two = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = t.f32()[i];
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum_sq += x * x;
    beyond_two += std::abs(x) > 2;
  }
  // Five standard errors: the mean's is 1/sqrt(n), the variance's sqrt(2/n).
  EXPECT_NEAR(sum / n, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(sum_sq / n, 1.0, 5 * std::sqrt(2 / n));
  // P(|x| > 2) = 0.0455 for a normal; binomial standard error sqrt(p(1-p)/n).
  EXPECT_NEAR(beyond_two / n, 0.0455, 5 * std::sqrt(0.0455 * 0.9545 / n));
}

TEST(RandomNormal, LowPrecisionIsTheRoundedF32Stream) {
  const Tensor f32 = random_normal({2, 3, 65, 7}, DType::kF32, 5, 3.0f);
  const Tensor f16 = random_normal({2, 3, 65, 7}, DType::kF16, 5, 3.0f);
  const Tensor bf16 = random_normal({2, 3, 65, 7}, DType::kBF16, 5, 3.0f);
  const auto* h = static_cast<const uint16_t*>(f16.data());
  const auto* b = static_cast<const uint16_t*>(bf16.data());
  for (int64_t i = 0; i < f32.numel(); ++i) {
    EXPECT_EQ(h[i], f32_to_f16(f32.f32()[i])) << i;
    EXPECT_EQ(b[i], f32_to_bf16(f32.f32()[i])) << i;
  }
}

}  // namespace
}  // namespace attnkit
