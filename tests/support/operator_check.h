// Checks for the operators of other shapes (Lightning, SOFT, index-list attention): element-wise
// comparison of an f32 result with the double reference, the tolerance derived from the data: a
// multiple of f32 epsilon times the magnitude of the sum each element is (the same reference run
// on absolute values), so the bound scales with the inputs and the depth of the sums.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "attnkit/tensor.h"

namespace attnkit::testing {

// A copy of t as f32 with every element replaced by its absolute value.
inline Tensor absolute(const Tensor& t) {
  Tensor out = t.to(DType::kF32);
  for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] = std::fabs(out.f32()[i]);
  return out;
}

// Expects |got - want| <= factor * eps * magnitude + floor element-wise (all f32, same shape);
// reports the first five failures with their flat index and the count.
inline void expect_close(const Tensor& got, const Tensor& want, const Tensor& magnitude,
                         double factor, const std::string& label, double floor = 1e-30) {
  ASSERT_EQ(got.shape(), want.shape()) << label;
  ASSERT_EQ(got.shape(), magnitude.shape()) << label;
  const double eps = std::numeric_limits<float>::epsilon();
  int64_t failures = 0;
  for (int64_t e = 0; e < got.numel(); ++e) {
    const double g = got.f32()[e], w = want.f32()[e];
    const double tol = factor * eps * magnitude.f32()[e] + floor;
    if (!(std::fabs(g - w) <= tol) && failures++ < 5)
      ADD_FAILURE() << label << "[" << e << "] = " << g << ", reference " << w << ", tolerance "
                    << tol;
  }
  EXPECT_EQ(failures, 0) << label << ": " << failures << " of " << got.numel()
                         << " elements outside the tolerance";
}

// The largest |a - b| over two same-shaped f32 tensors.
inline double max_abs_difference(const Tensor& a, const Tensor& b) {
  double worst = 0.0;
  for (int64_t e = 0; e < a.numel(); ++e)
    worst = std::max(worst, std::fabs(double(a.f32()[e]) - b.f32()[e]));
  return worst;
}

}  // namespace attnkit::testing
