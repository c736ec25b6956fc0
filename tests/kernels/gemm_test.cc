// cpu::gemm and cpu::transpose against the obvious double loops: odd shapes (1 to 300, across the
// register panels' and the depth chunks' edges), both layouts of A, alpha and beta (beta = 0 must
// not read C, which starts as NaN), on every SIMD target.
#include "kernels/cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "support/attention_check.h"

namespace attnkit {
namespace {

std::vector<float> random_values(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> data(count);
  for (float& x : data) x = normal(rng);
  return data;
}

class Gemm : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { scope_ = std::make_unique<testing::TargetScope>(GetParam()); }
  void TearDown() override { scope_.reset(); }

 private:
  std::unique_ptr<testing::TargetScope> scope_;
};

TEST_P(Gemm, MatchesDoubleLoops) {
  const double eps = std::numeric_limits<float>::epsilon();
  int64_t cases = 0;
  for (int64_t m : {1, 7, 9, 33})
    for (int64_t n : {1, 15, 16, 33, 65})
      for (int64_t k : {1, 5, 64, 300})
        for (bool a_transposed : {false, true})
          for (float beta : {0.0f, 1.0f, 0.5f}) {
            const int64_t lda = (a_transposed ? m : k) + 3, ldb = n + 2, ldc = n + 5;
            const auto a = random_values((a_transposed ? k : m) * lda, 1 + cases);
            const auto b = random_values(k * ldb, 2 + cases);
            std::vector<float> c = random_values(m * ldc, 3 + cases);
            const std::vector<float> c0 = c;
            if (beta == 0.0f)
              for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < n; ++j)
                  c[i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
            const float alpha = 0.75f;
            const cpu::MatrixRef ref = a_transposed ? cpu::transposed(a.data(), lda)
                                                    : cpu::row_major(a.data(), lda);
            cpu::gemm(m, n, k, alpha, ref, b.data(), ldb, beta, c.data(), ldc);
            int64_t failures = 0;
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = 0; j < n; ++j) {
                double sum = 0.0, magnitude = 0.0;
                for (int64_t p = 0; p < k; ++p) {
                  const double x = a[i * ref.row + p * ref.col] * double(b[p * ldb + j]);
                  sum += x;
                  magnitude += std::fabs(x);
                }
                const double want = alpha * sum + beta * c0[i * ldc + j];
                const double tol = 4 * eps * (std::sqrt(double(k)) * magnitude + 2.0);
                if (!(std::fabs(c[i * ldc + j] - want) <= tol) && failures++ < 3)
                  ADD_FAILURE() << "m=" << m << " n=" << n << " k=" << k
                                << " transposed=" << a_transposed << " beta=" << beta << ": C["
                                << i << "," << j << "] = " << c[i * ldc + j] << ", want " << want;
              }
              // Padding between rows is never written.
              for (int64_t j = n; j < ldc; ++j)
                EXPECT_EQ(c[i * ldc + j], c0[i * ldc + j]) << "padding of row " << i;
            }
            ++cases;
          }
}

TEST_P(Gemm, EmptyDepthScalesC) {
  std::vector<float> c = {1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN(), 4.0f};
  cpu::gemm(2, 2, 0, 1.0f, cpu::row_major(nullptr, 0), nullptr, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c[0], 0.5f);
  EXPECT_EQ(c[1], 1.0f);
  EXPECT_EQ(c[3], 2.0f);
  cpu::gemm(2, 2, 0, 1.0f, cpu::row_major(nullptr, 0), nullptr, 2, 0.0f, c.data(), 2);
  for (float x : c) EXPECT_EQ(x, 0.0f);
}

TEST_P(Gemm, TransposeMovesEveryElement) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {17, 5}, {64, 130}}) {
    const auto in = random_values(rows * (cols + 1), 9);
    std::vector<float> out(cols * (rows + 2), -7.0f);
    cpu::transpose(in.data(), rows, cols, cols + 1, out.data(), rows + 2);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(out[c * (rows + 2) + r], in[r * (cols + 1) + c]) << r << "," << c;
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(out[c * (rows + 2) + rows], -7.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, Gemm, ::testing::ValuesIn(testing::simd_targets()),
                         [](const auto& info) { return std::string(hwy::TargetName(info.param)); });

}  // namespace
}  // namespace attnkit
