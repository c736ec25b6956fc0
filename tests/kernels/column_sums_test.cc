// attention_column_sums (the second pass from the LSE) against the double reference: per query
// head and summed per kv group, causal and not, every dtype, odd shapes, rows that see nothing.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

using testing::Problem;

struct ColumnCase {
  Problem problem;
  bool per_group = false;  // output [B, Hkv, Nk, 1]
};

std::vector<ColumnCase> column_sweep() {
  std::vector<ColumnCase> cases;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (bool causal : {false, true})
      for (bool per_group : {false, true})
        for (auto [batch, nq, nk, hq, hkv, dim] :
             std::vector<std::array<int64_t, 6>>{{1, 1, 1, 1, 1, 64},
                                                 {1, 1, 1027, 9, 3, 64},
                                                 {2, 37, 300, 4, 2, 33},
                                                 {1, 70, 70, 3, 1, 80},
                                                 {1, 9, 4, 2, 1, 40},  // causal: empty rows
                                                 {1, 300, 513, 2, 2, 128}}) {
          ColumnCase c;
          Problem& p = c.problem;
          p.batch = batch, p.nq = nq, p.nk = nk, p.heads_q = hq, p.heads_kv = hkv, p.dim = dim;
          p.dim_v = dim, p.dtype = dtype, p.causal = causal, p.magnitude = 1.5f;
          c.per_group = per_group;
          cases.push_back(c);
        }
  return cases;
}

class ColumnSums : public ::testing::TestWithParam<ColumnCase> {};

TEST_P(ColumnSums, MatchReferenceAndSumToTheRows) {
  const ColumnCase& c = GetParam();
  const Problem& p = c.problem;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs args = in.args();
  args.causal = p.causal;
  attention(args);
  const int64_t heads = c.per_group ? p.heads_kv : p.heads_q;
  Tensor got({p.batch, heads, p.nk}, DType::kF32), want({p.batch, heads, p.nk}, DType::kF32);
  attention_column_sums(args, got.rows_view());
  attention_column_sums_reference(args, want.rows_view());
  // Each probability carries the relative error of its score and of the LSE (as in
  // expect_matches_reference), the sum over Nq rows one f32 rounding per term.
  const double eps = std::numeric_limits<float>::epsilon();
  const double score_abs = 4.0 * p.magnitude * p.magnitude * std::sqrt(double(p.dim));
  const double rel = 16.0 * eps * (score_abs + 8.0 + std::log(double(p.nk))) + 2.0 * p.nq * eps;
  int failures = 0;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      double total = 0.0;
      for (int64_t j = 0; j < p.nk; ++j) {
        const double g = *got.rows_view().row<float>(b, h, j);
        const double w = *want.rows_view().row<float>(b, h, j);
        total += g;
        if (!(std::fabs(g - w) <= rel * w + 1e-7) && failures++ < 5)
          ADD_FAILURE() << "b " << b << " h " << h << " j " << j << ": " << g << " vs " << w;
      }
      // Probabilities of a row sum to 1: the columns sum to the rows that see a key.
      const int64_t group = c.per_group ? p.heads_q / p.heads_kv : 1;
      int64_t rows = 0;
      for (int64_t i = 0; i < p.nq; ++i) rows += !p.causal || i + p.nk - p.nq >= 0;
      EXPECT_NEAR(total, double(rows * group), 1e-4 * rows * group + 1e-6);
    }
}

INSTANTIATE_TEST_SUITE_P(Sweep, ColumnSums, ::testing::ValuesIn(column_sweep()),
                         [](const auto& info) {
                           return info.param.problem.name() +
                                  (info.param.per_group ? "_group" : "_head");
                         });

// The group output is the in-order sum of the per-head outputs, bitwise, whatever the thread count.
TEST(ColumnSumsGroups, DeterministicAcrossThreads) {
  Problem p;
  p.heads_q = 9, p.heads_kv = 3, p.nq = 33, p.nk = 2000, p.causal = true;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs args = in.args();
  args.causal = true;
  attention(args);
  Tensor heads({1, 9, p.nk}, DType::kF32), one({1, 3, p.nk}, DType::kF32),
      two({1, 3, p.nk}, DType::kF32);
  args.threads = 1;
  attention_column_sums(args, heads.rows_view());
  attention_column_sums(args, one.rows_view());
  args.threads = 2;
  attention_column_sums(args, two.rows_view());
  EXPECT_EQ(std::memcmp(one.data(), two.data(), 3 * p.nk * sizeof(float)), 0);
  for (int64_t g = 0; g < 3; ++g)
    for (int64_t j = 0; j < p.nk; ++j) {
      float sum = 0.0f;
      for (int64_t r = 0; r < 3; ++r) sum += heads.f32()[(g * 3 + r) * p.nk + j];
      ASSERT_EQ(sum, one.f32()[g * p.nk + j]) << "g " << g << " j " << j;
    }
}

TEST(ColumnSumsErrors, NameTheArgument) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 5, p.nk = 7;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs args = in.args();
  attention(args);
  Tensor wrong({1, 3, p.nk}, DType::kF32), right({1, 4, p.nk}, DType::kF32);
  try {
    attention_column_sums(args, wrong.rows_view());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "col_sums");
  }
  args.lse = MutableTensorView{};
  try {
    attention_column_sums(args, right.rows_view());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "lse");
  }
}

}  // namespace
}  // namespace attnkit
