// Exp2 (src/kernels/cpu/simd_math-inl.h), the exponential of every softmax, on each SIMD target
// compiled in: within 3e-7 of std::exp2 over its normal range (whole numbers exact), exactly 0
// below 2^-126 and for -inf and NaN, inf from 128 up. AVX-512 computes it with VSCALEFPS, the
// other targets from the exponent bits: both must keep these edges.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/exp2_test.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/simd_math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::cpu {
namespace HWY_NAMESPACE {

// out[i] = Exp2(in[i]); count a multiple of the lane count.
void Exp2Lanes(const float* in, float* out, size_t count) {
  const hn::ScalableTag<float> d;
  for (size_t i = 0; i < count; i += hn::Lanes(d))
    hn::StoreU(Exp2(d, hn::LoadU(d, in + i)), d, out + i);
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::cpu {
HWY_EXPORT(Exp2Lanes);
namespace {

TEST(Exp2, EveryTargetMatchesTheLibraryAndKeepsItsEdges) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> in;
  for (float x = -130.0f; x <= 130.0f; x += 0.0625f) in.push_back(x);
  for (float x : {-inf, inf, std::numeric_limits<float>::quiet_NaN(), -126.0f, -126.001f,
                  127.999f, 128.0f, 1e30f, -1e30f, -0.0f, 1e-8f, -1e-8f})
    in.push_back(x);
  while (in.size() % 64 != 0) in.push_back(0.5f);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(hwy::TargetName(target));
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> out(in.size());
    HWY_DYNAMIC_DISPATCH(Exp2Lanes)(in.data(), out.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      const float x = in[i];
      SCOPED_TRACE(x);
      if (std::isnan(x) || x < -126.0f) {
        EXPECT_EQ(out[i], 0.0f);
      } else if (x >= 128.0f) {
        EXPECT_EQ(out[i], inf);
      } else if (x == std::floor(x)) {
        EXPECT_EQ(out[i], std::exp2(x));
      } else {
        const double want = std::exp2(static_cast<double>(x));
        EXPECT_LE(std::fabs(out[i] - want), 3e-7 * want);
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace attnkit::cpu
#endif  // HWY_ONCE
