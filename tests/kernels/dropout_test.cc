// Attention dropout: the keep mask's statistics, and the fused forward and backward (dense,
// causal, block-sparse; every dtype and SIMD target) against the double reference drawing the
// same mask. The reference itself is checked against finite differences in backward_test.cc.
#include "core/dropout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "support/backward_check.h"
#include "support/random_mask.h"

namespace attnkit {
namespace {

using testing::Problem;

// --- The mask ---

// Over 2^20 pairs the drop rate is p within 5 standard deviations, and so is the rate at which
// neighbouring keys, and the same key in neighbouring rows, are both dropped (p^2): no
// correlation along either axis.
TEST(DropoutMask, RatesMatchTheProbabilityWithoutCorrelation) {
  for (float p : {0.1f, 0.5f, 0.9f}) {
    const int32_t threshold = dropout_threshold(p);
    const int64_t rows = 1024, keys = 1024;
    int64_t dropped = 0, both_keys = 0, both_rows = 0;
    std::vector<char> above(keys, 0);
    for (int64_t i = 0; i < rows; ++i) {
      const uint32_t key = dropout_row_key(42, 1, 3, i);
      std::vector<char> row(keys);
      for (int64_t j = 0; j < keys; ++j) row[j] = !dropout_keeps(key, j, threshold);
      for (int64_t j = 0; j < keys; ++j) {
        dropped += row[j];
        if (j > 0) both_keys += row[j] && row[j - 1];
        if (i > 0) both_rows += row[j] && above[j];
      }
      above = row;
    }
    auto expect_rate = [](int64_t count, int64_t n, double rate, const char* what) {
      const double sigma = std::sqrt(n * rate * (1.0 - rate));
      EXPECT_NEAR(double(count), n * rate, 5.0 * sigma) << what << " at rate " << rate;
    };
    expect_rate(dropped, rows * keys, p, "dropped");
    expect_rate(both_keys, rows * (keys - 1), double(p) * p, "neighbouring keys");
    expect_rate(both_rows, (rows - 1) * keys, double(p) * p, "neighbouring rows");
  }
}

TEST(DropoutMask, DependsOnEverySeedAndIndex) {
  const int32_t threshold = dropout_threshold(0.5f);
  auto pattern = [&](uint64_t seed, int64_t b, int64_t h, int64_t i) {
    std::vector<char> row(256);
    const uint32_t key = dropout_row_key(seed, b, h, i);
    for (int64_t j = 0; j < 256; ++j) row[j] = dropout_keeps(key, j, threshold);
    return row;
  };
  const auto base = pattern(1, 0, 0, 0);
  EXPECT_NE(base, pattern(2, 0, 0, 0));
  EXPECT_NE(base, pattern(1, 1, 0, 0));
  EXPECT_NE(base, pattern(1, 0, 1, 0));
  EXPECT_NE(base, pattern(1, 0, 0, 1));
  EXPECT_EQ(base, pattern(1, 0, 0, 0));
}

// --- The fused kernels against the reference ---

std::vector<Problem> dropout_problems() {
  std::vector<Problem> shapes;
  auto add = [&](int64_t hq, int64_t hkv, int64_t nq, int64_t nk, int64_t d, int64_t dv,
                 float dropout) {
    Problem p;
    p.heads_q = hq, p.heads_kv = hkv, p.nq = nq, p.nk = nk, p.dim = d, p.dim_v = dv;
    p.dropout = dropout;
    shapes.push_back(p);
  };
  add(1, 1, 65, 65, 64, 64, 0.1f);
  add(2, 2, 300, 300, 64, 64, 0.5f);
  add(1, 1, 7, 300, 64, 64, 0.3f);   // Nq < Nk
  add(1, 1, 300, 7, 64, 64, 0.3f);   // Nq > Nk: causal rows that see no key
  add(3, 1, 65, 130, 64, 64, 0.5f);  // GQA 3
  add(6, 2, 33, 70, 80, 48, 0.9f);   // d = 80, Dv != D, most probabilities dropped
  add(2, 2, 40, 50, 7, 5, 0.5f);     // head dims that are not whole vectors
  add(1, 1, 4, 2048, 64, 64, 0.2f);  // a decode shape: runs the tile kernel under dropout
  add(2, 1, 600, 1100, 64, 64, 0.3f);  // K/V past L2, one thread: the grouped order
  shapes.back().threads = 1;
  std::vector<Problem> out;
  for (const Problem& s : shapes)
    for (bool causal : {false, true}) {
      Problem p = s;
      p.causal = causal;
      out.push_back(p);
    }
  Problem batched = shapes[1];
  batched.batch = 2, batched.heads_q = 4, batched.heads_kv = 2, batched.causal = true;
  out.push_back(batched);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Problem p = shapes[5];
    p.dtype = dtype, p.causal = true;
    out.push_back(p);
  }
  return testing::on_every_target(out);
}

class DropoutKernel : public ::testing::TestWithParam<Problem> {};

TEST_P(DropoutKernel, ForwardMatchesReference) {
  testing::check_problem(GetParam(), [](const AttentionArgs& a) { attention(a); });
}

TEST_P(DropoutKernel, BackwardMatchesReference) {
  testing::check_backward(
      GetParam(), true, [](const AttentionArgs& a) { attention(a); },
      [](const BackwardArgs& a) { attention_backward(a); });
}

INSTANTIATE_TEST_SUITE_P(Sweep, DropoutKernel, ::testing::ValuesIn(dropout_problems()),
                         [](const auto& info) { return info.param.name(); });

std::vector<testing::MaskCase> dropout_mask_cases() {
  std::vector<testing::MaskCase> out = testing::mask_sweep(
      {{1, 3, 1, 200, 130, 32, 16}, {2, 4, 2, 150, 170, 32, 16}}, {DType::kF32, DType::kBF16});
  for (testing::MaskCase& c : out) c.problem.dropout = 0.4f;
  return out;
}

class DropoutBlockSparse : public ::testing::TestWithParam<testing::MaskCase> {};

TEST_P(DropoutBlockSparse, ForwardAndBackwardMatchReference) {
  const testing::MaskCase& c = GetParam();
  std::mt19937 rng(5);
  const BlockMask mask = testing::random_mask(c, rng);
  testing::check_problem(
      c.problem, [&](const AttentionArgs& a) { attention(a, mask); }, testing::mask_rule(mask));
  testing::check_backward(
      c.problem, true, [&](const AttentionArgs& a) { attention(a, mask); },
      [&](const BackwardArgs& a) { attention_backward(a, mask); }, testing::mask_rule(mask));
}

INSTANTIATE_TEST_SUITE_P(Sweep, DropoutBlockSparse, ::testing::ValuesIn(dropout_mask_cases()),
                         [](const auto& info) {
                           const testing::MaskCase& c = info.param;
                           return c.problem.name() + "_qb" + std::to_string(c.q_block) +
                                  (c.per_head ? "_perhead" : "");
                         });

// --- Properties ---

struct Outputs {
  Tensor out, lse;
};

Outputs run_forward(const testing::Inputs& in, float dropout, uint64_t seed, int threads) {
  Outputs o{Tensor(in.out.shape(), DType::kF32), Tensor(in.lse.shape(), DType::kF32)};
  AttentionArgs a;
  a.q = in.q.view(), a.k = in.k.view(), a.v = in.v.view();
  a.out = o.out.view(), a.lse = o.lse.rows_view();
  a.causal = true, a.dropout = dropout, a.dropout_seed = seed, a.threads = threads;
  attention(a);
  return o;
}

bool same_bits(const Tensor& x, const Tensor& y) {
  return std::memcmp(x.data(), y.data(), x.bytes()) == 0;
}

// The mask is a function of the seed and the indices only: thread counts do not change a bit,
// the seed does, and the LSE is the undropped softmax's whatever the seed.
TEST(Dropout, SeededNotScheduled) {
  Problem p;
  p.heads_q = 4, p.nq = 300, p.nk = 300;
  const testing::Inputs in = testing::make_inputs(p);
  const Outputs one = run_forward(in, 0.5f, 7, 1), two = run_forward(in, 0.5f, 7, 2);
  EXPECT_TRUE(same_bits(one.out, two.out));
  const Outputs other = run_forward(in, 0.5f, 8, 2), none = run_forward(in, 0.0f, 7, 2);
  EXPECT_FALSE(same_bits(one.out, other.out));
  EXPECT_TRUE(same_bits(one.lse, none.lse));
  EXPECT_TRUE(same_bits(other.lse, none.lse));
}

// Averaged over seeds, the dropped output tends to the undropped one (E[Z] = 1).
TEST(Dropout, UnbiasedOverSeeds) {
  Problem p;
  p.nq = 20, p.nk = 40, p.dim = 16, p.dim_v = 16;
  const testing::Inputs in = testing::make_inputs(p);
  const Outputs exact = run_forward(in, 0.0f, 0, 1);
  const int64_t seeds = 4000;
  std::vector<double> sum(exact.out.numel(), 0.0), sum_sq(exact.out.numel(), 0.0);
  for (int64_t s = 0; s < seeds; ++s) {
    const Outputs o = run_forward(in, 0.5f, uint64_t(s), 1);
    for (int64_t x = 0; x < o.out.numel(); ++x) {
      sum[x] += o.out.f32()[x];
      sum_sq[x] += double(o.out.f32()[x]) * o.out.f32()[x];
    }
  }
  // The mean of the draws is within 6 standard errors (estimated from the same draws).
  for (int64_t x = 0; x < exact.out.numel(); ++x) {
    const double mean = sum[x] / seeds, var = sum_sq[x] / seeds - mean * mean;
    ASSERT_NEAR(mean, exact.out.f32()[x], 6.0 * std::sqrt(std::max(var, 0.0) / seeds) + 1e-6) << x;
  }
}

TEST(Dropout, BadValuesNameTheArgument) {
  Problem p;
  p.nq = 10, p.nk = 10;
  testing::Inputs in = testing::make_inputs(p);
  for (float bad : {-0.1f, 1.0f, 1.5f, std::nanf("")}) {
    AttentionArgs a = in.args();
    a.dropout = bad;
    try {
      attention(a);
      ADD_FAILURE() << "no error for dropout " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "dropout") << e.what();
    }
  }
  // The decode path has no dropout: asked for explicitly, it says so.
  Problem d;
  d.nq = 1, d.nk = 2048;
  testing::Inputs decode = testing::make_inputs(d);
  AttentionArgs a = decode.args();
  a.dropout = 0.1f;
  EXPECT_THROW(
      {
        try {
          attention_decode(a);
        } catch (const Error& e) {
          EXPECT_EQ(e.argument(), "dropout") << e.what();
          throw;
        }
      },
      Error);
}

}  // namespace
}  // namespace attnkit
