// The gathered-row primitives (src/kernels/cpu/gather_ops.h) against double loops: counts that
// fill and miss the key groups (1 to 70), head dims with and without a vector tail (1 to 130),
// every dtype, accumulation, and the one-row attention's softmax and LSE, on every SIMD target.
#include "kernels/cpu/gather_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "eval/inputs.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

class GatherOps : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { scope_ = std::make_unique<testing::TargetScope>(GetParam()); }
  void TearDown() override { scope_.reset(); }

 private:
  std::unique_ptr<testing::TargetScope> scope_;
};

struct Rows {
  Tensor data;  // [rows, stride] in `dtype`, the first `dim` columns used
  cpu::RowSource source;
  Rows(int64_t rows, int64_t dim, int64_t stride, DType dtype, uint64_t seed)
      : data(random_normal({rows, stride}, dtype, seed)),
        source{data.data(), dtype, stride, dim} {}
  double at(int64_t r, int64_t c) const { return data.view().get(0, 0, r, c); }
};

std::vector<int32_t> random_index(int64_t count, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> index(count);
  for (int32_t& i : index) i = static_cast<int32_t>(rng() % rows);
  return index;
}

TEST_P(GatherOps, DotsAndWeightedSumsMatchDoubleLoops) {
  const double eps = std::numeric_limits<float>::epsilon();
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (int64_t dim : {1, 7, 16, 64, 65, 130})
      for (int64_t count : {1, 5, 16, 17, 70}) {
        const std::string label = std::string(dtype_name(dtype)) + " dim=" +
                                  std::to_string(dim) + " count=" + std::to_string(count);
        const Rows rows(50, dim, dim + 3, dtype, 7 + dim);
        const std::vector<int32_t> index = random_index(count, 50, 11 + count);
        const Tensor x = random_normal({dim}, DType::kF32, 3);
        const Tensor w = random_normal({count}, DType::kF32, 4);
        std::vector<float> dots(count + 1, -5.0f);
        cpu::gathered_dots(x.f32(), 0.5f, rows.source, index.data(), count, dots.data());
        for (int64_t e = 0; e < count; ++e) {
          double want = 0.0, magnitude = 0.0;
          for (int64_t c = 0; c < dim; ++c) {
            want += 0.5 * x.f32()[c] * rows.at(index[e], c);
            magnitude += std::fabs(0.5 * x.f32()[c] * rows.at(index[e], c));
          }
          ASSERT_NEAR(dots[e], want, 8 * eps * (magnitude + 1e-30) * std::sqrt(double(dim)))
              << label << " e=" << e;
        }
        EXPECT_EQ(dots[count], -5.0f) << label << ": wrote past count";
        for (bool accumulate : {false, true}) {
          std::vector<float> out(dim + 1, 1.0f);
          cpu::gathered_axpy(w.f32(), index.data(), count, rows.source, out.data(), accumulate);
          for (int64_t c = 0; c < dim; ++c) {
            double want = accumulate ? 1.0 : 0.0, magnitude = 1.0;
            for (int64_t e = 0; e < count; ++e) {
              want += w.f32()[e] * rows.at(index[e], c);
              magnitude += std::fabs(w.f32()[e] * rows.at(index[e], c));
            }
            ASSERT_NEAR(out[c], want, 8 * eps * magnitude * std::sqrt(double(count)))
                << label << " c=" << c << " accumulate=" << accumulate;
          }
          EXPECT_EQ(out[dim], 1.0f) << label << ": wrote past dim";
        }
      }
}

TEST_P(GatherOps, OneRowAttentionIsTheSoftmaxOverTheList) {
  const double eps = std::numeric_limits<float>::epsilon();
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (int64_t count : {1, 3, 16, 33, 70}) {
      const int64_t dim = 24, dim_v = 40;
      const Rows keys(90, dim, dim, dtype, 21), values(90, dim_v, dim_v + 1, dtype, 22);
      const std::vector<int32_t> index = random_index(count, 90, 23 + count);
      const Tensor x = random_normal({dim}, DType::kF32, 24, 2.0f);
      const float scale = 0.3f;
      std::vector<float> scores(count), out(dim_v);
      const float lse = cpu::gathered_attention_row(x.f32(), scale * 1.4426950408889634f,
                                                    keys.source, values.source, index.data(),
                                                    count, scores.data(), out.data());
      std::vector<double> s(count);
      double top = -INFINITY, sum = 0.0;
      for (int64_t e = 0; e < count; ++e) {
        s[e] = 0.0;
        for (int64_t c = 0; c < dim; ++c) s[e] += scale * x.f32()[c] * keys.at(index[e], c);
        top = std::max(top, s[e]);
      }
      for (double& v : s) sum += (v = std::exp(v - top));
      const std::string label = std::string(dtype_name(dtype)) + " count=" + std::to_string(count);
      EXPECT_NEAR(lse, top + std::log(sum), 64 * eps * (std::fabs(top) + 1)) << label;
      for (int64_t c = 0; c < dim_v; ++c) {
        double want = 0.0;
        for (int64_t e = 0; e < count; ++e) want += s[e] / sum * values.at(index[e], c);
        EXPECT_NEAR(out[c], want, 1e-5) << label << " c=" << c;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, GatherOps, ::testing::ValuesIn(testing::simd_targets()),
                         [](const auto& info) { return std::string(hwy::TargetName(info.param)); });

}  // namespace
}  // namespace attnkit
