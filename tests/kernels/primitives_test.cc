// Planner primitives (src/kernels/cpu/primitives.h): every fast path against its scalar reference
// over odd shapes (rows 1 to 200, top-k over 1000; dims 1..130), causal limits and GQA
// accumulation, on every SIMD target (the primitives dispatch at run time like the kernels).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "attnkit/tensor.h"
#include "kernels/cpu/planner_ops.h"
#include "kernels/ref/primitives_ref.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> data(rows * cols);
  for (float& x : data) x = normal(rng);
  return data;
}

// x with every element rounded to bf16: what the packed (bf16) passes must compute with.
std::vector<float> rounded_to_bf16(std::vector<float> x) {
  for (float& v : x) v = cpu::round_to_bf16(v);
  return x;
}

// Relative tolerance of an f32 accumulation of `terms` products next to a double reference.
float tol(int64_t terms) { return 1e-6f * 8.0f * std::sqrt(static_cast<float>(terms) + 1.0f); }

// The parameter is the SIMD target; each test runs inside a TargetScope for it.
class Primitives : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { scope_ = std::make_unique<testing::TargetScope>(GetParam()); }
  void TearDown() override { scope_.reset(); }

 private:
  std::unique_ptr<testing::TargetScope> scope_;
};

TEST_P(Primitives, MeanPoolMatchesReference) {
  for (int64_t n : {1, 7, 63, 65, 200}) {
    for (auto [kernel, stride] : {std::pair<int64_t, int64_t>{32, 16}, {4, 4}, {5, 2}, {1, 1}}) {
      const int64_t dim = 13, ld = 17;
      const auto x = random_matrix(n, ld, 7 + n);
      const int64_t count = cpu::pooled_count(n, kernel, stride);
      std::vector<float> fast(count * dim + 1, -1.0f), slow(count * dim + 1, -1.0f);
      cpu::mean_pool(x.data(), n, dim, ld, kernel, stride, fast.data());
      ref::mean_pool(x.data(), n, dim, ld, kernel, stride, slow.data());
      for (int64_t e = 0; e < count * dim + 1; ++e)
        ASSERT_NEAR(fast[e], slow[e], 1e-5) << "n=" << n << " kernel=" << kernel << " e=" << e;
    }
  }
}

TEST_P(Primitives, PooledVisibleIsTheCausalLimit) {
  // Window m = [16m, 16m + 32) is visible to the query whose last visible key is `last`
  // iff 16m + 31 <= last.
  const int64_t pooled = cpu::pooled_count(1000, 32, 16);
  for (int64_t last : {0, 30, 31, 46, 47, 999}) {
    int64_t expect = 0;
    for (int64_t m = 0; m < pooled; ++m) expect += (16 * m + 31 <= last);
    EXPECT_EQ(cpu::pooled_visible(last, 32, 16, pooled), expect) << "last=" << last;
  }
}

TEST_P(Primitives, ScoreTileMatchesDot) {
  for (int64_t rows : {1, 3, 4, 7, 33}) {
    for (int64_t cols : {1, 15, 16, 17, 64, 65, 257}) {
      for (int64_t dim : {1, 64, 130}) {
        const auto q = random_matrix(rows, dim, 1), k = random_matrix(cols, dim, 2);
        const int64_t ldkt = cols + 3;
        std::vector<float> kt(dim * ldkt), s(rows * (cols + 1), 0.0f);
        cpu::transpose_keys(k.data(), cols, dim, dim, kt.data(), ldkt);
        cpu::score_tile(q.data(), dim, rows, kt.data(), ldkt, cols, dim, 0.5f, s.data(), cols + 1);
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) {
            double dot = 0.0;
            for (int64_t c = 0; c < dim; ++c) dot += double(q[i * dim + c]) * k[j * dim + c];
            ASSERT_NEAR(s[i * (cols + 1) + j], 0.5 * dot, tol(dim) * (1 + std::abs(dot)))
                << "rows=" << rows << " cols=" << cols << " dim=" << dim << " at " << i << "," << j;
          }
        for (int64_t i = 0; i < rows; ++i) ASSERT_EQ(s[i * (cols + 1) + cols], 0.0f) << "overrun";
      }
    }
  }
}

TEST(Bf16Rounding, IsNearestEvenAndPairsLowFirst) {
  const float ulp = std::ldexp(1.0f, -7);  // bf16 spacing in [1, 2)
  EXPECT_EQ(cpu::round_to_bf16(1.0f), 1.0f);
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0.5f * ulp), 1.0f);              // tie: to the even 1
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 1.5f * ulp), 1.0f + 2.0f * ulp);  // tie: to the even 1+2u
  EXPECT_EQ(cpu::round_to_bf16(1.0f + 0.5f * ulp + std::ldexp(1.0f, -20)), 1.0f + ulp);
  EXPECT_EQ(cpu::round_to_bf16(-1.0f - 0.4f * ulp), -1.0f);
  EXPECT_EQ(cpu::round_to_bf16(0.0f), 0.0f);
  EXPECT_EQ(cpu::bf16_pair(1.0f, -2.0f), 0xC0003F80u);  // bf16 1 = 0x3F80, -2 = 0xC000
}

TEST_P(Primitives, PackBf16PairsMatchesScalar) {
  for (int64_t n : {1, 15, 16, 17, 100}) {
    for (int64_t dim : {1, 2, 5, 64}) {
      const int64_t ldx = n + 2, ldo = n + 1, pairs = (dim + 1) / 2;
      const auto xt = random_matrix(dim, ldx, 5 + n + dim, 3.0f);
      std::vector<uint32_t> out(pairs * ldo, 7u);
      cpu::pack_bf16_pairs(xt.data(), dim, n, ldx, out.data(), ldo);
      for (int64_t p = 0; p < pairs; ++p) {
        for (int64_t j = 0; j < n; ++j) {
          const float hi = 2 * p + 1 < dim ? xt[(2 * p + 1) * ldx + j] : 0.0f;
          ASSERT_EQ(out[p * ldo + j], cpu::bf16_pair(xt[2 * p * ldx + j], hi))
              << "n=" << n << " dim=" << dim << " pair " << p << " column " << j;
        }
        ASSERT_EQ(out[p * ldo + n], 7u) << "overrun";
      }
    }
  }
}

TEST_P(Primitives, PackBf16ChunksPairsAndZeroPadding) {
  for (int64_t n : {1, 255, 256, 257, 600}) {
    for (int64_t dim : {1, 5, 64}) {
      const int64_t ldx = dim + 2, pairs = (dim + 1) / 2;
      const auto x = random_matrix(n, ldx, 9 + n + dim);
      const cpu::Bf16Matrix m = cpu::pack_bf16(x.data(), n, dim, ldx);
      ASSERT_EQ(m.n, n);
      const int64_t padded = (n + cpu::kBf16Chunk - 1) / cpu::kBf16Chunk * cpu::kBf16Chunk;
      ASSERT_EQ(static_cast<int64_t>(m.data.size()), padded * pairs);
      for (int64_t j = 0; j < padded; ++j)
        for (int64_t p = 0; p < pairs; ++p) {
          const float hi = j < n && 2 * p + 1 < dim ? x[j * ldx + 2 * p + 1] : 0.0f;
          const uint32_t want = j < n ? cpu::bf16_pair(x[j * ldx + 2 * p], hi) : 0u;
          ASSERT_EQ(m.at(j)[p * cpu::kBf16Chunk], want)
              << "n=" << n << " dim=" << dim << " column " << j << " pair " << p;
        }
    }
  }
}

TEST_P(Primitives, ScoreTileBf16MatchesDotOfRoundedInputs) {
  // Which back end runs: vdpbf16ps only while dispatch is on AVX-512 and the CPU has it.
  if (GetParam() != 0 && (GetParam() & (HWY_AVX3 | HWY_AVX3_DL)) == 0) {
    EXPECT_FALSE(cpu::native_bf16_dot()) << "a narrowed target must take the portable path";
  }
  for (int64_t rows : {1, 2, 3, 7, 8, 9, 33}) {
    for (int64_t cols : {1, 15, 16, 17, 31, 32, 33, 65, 257}) {
      for (int64_t dim : {1, 2, 63, 64, 130}) {
        const int64_t pairs = (dim + 1) / 2, ldq = rows + 1, ldk = cols + 3, lds = cols + 1;
        const auto q = random_matrix(rows, dim, 11 + dim), k = random_matrix(cols, dim, 12 + dim);
        std::vector<float> qt(dim * ldq), kt(dim * ldk), s(rows * lds, 0.0f);
        cpu::transpose_keys(q.data(), rows, dim, dim, qt.data(), ldq);
        cpu::transpose_keys(k.data(), cols, dim, dim, kt.data(), ldk);
        std::vector<uint32_t> qp(pairs * ldq), kp(pairs * ldk);
        cpu::pack_bf16_pairs(qt.data(), dim, rows, ldq, qp.data(), ldq);
        cpu::pack_bf16_pairs(kt.data(), dim, cols, ldk, kp.data(), ldk);
        cpu::score_tile_bf16(qp.data(), ldq, rows, kp.data(), ldk, cols, pairs, 0.5f, s.data(),
                             lds);
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < cols; ++j) {
            // Products of bf16 values are exact in f32 and double: only the f32 sum rounds.
            double dot = 0.0, magnitude = 0.0;
            for (int64_t c = 0; c < dim; ++c) {
              const double term = double(cpu::round_to_bf16(q[i * dim + c])) *
                                  cpu::round_to_bf16(k[j * dim + c]);
              dot += term, magnitude += std::abs(term);
            }
            ASSERT_NEAR(s[i * lds + j], 0.5 * dot, tol(dim) * (1 + magnitude))
                << "rows=" << rows << " cols=" << cols << " dim=" << dim << " at " << i << ","
                << j;
          }
          ASSERT_EQ(s[i * lds + cols], 0.0f) << "overrun";
        }
      }
    }
  }
}

TEST_P(Primitives, ExpShiftAddAndSumMatchScalar) {
  for (int64_t n : {1, 7, 15, 16, 17, 63, 65, 1000}) {
    auto s = random_matrix(1, n, 21 + n, 3.0f);
    s[0] = -std::numeric_limits<float>::infinity();
    std::vector<float> dst(n + 1, 0.5f);
    cpu::exp_shift_add(s.data(), n, 1.5f, dst.data());
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const double want = std::exp(double(s[j]) - 1.5);
      sum += want;
      // exp(x) is computed as 2^(x log2 e): rounding x log2 e costs |x| log2(e) ulps of
      // relative error on top of the polynomial's 2 ulps and the final add's 1.
      const double x = std::abs(double(s[j]) - 1.5);
      const double eps = std::numeric_limits<float>::epsilon();
      const double tol = (want > 0.0 ? eps * (2.0 + 1.5 * x) * want : 0.0) + eps * (0.5 + want);
      ASSERT_NEAR(dst[j], 0.5 + want, tol) << "n=" << n << " j=" << j;
    }
    ASSERT_EQ(dst[n], 0.5f) << "overrun";
    EXPECT_NEAR(cpu::exp_shift_sum(s.data(), n, 1.5f, false), sum, 1e-5 * sum);
    EXPECT_EQ(cpu::row_max(s.data(), n), *std::max_element(s.begin(), s.end()));
  }
}

TEST_P(Primitives, LsePassMatchesReference) {
  for (int64_t nq : {1, 7, 63, 65}) {
    for (int64_t nk : {1, 7, 255, 256, 257, 1000}) {
      const int64_t dim = 64;
      const auto q = random_matrix(nq, dim, nq), k = random_matrix(nk, dim, nk + 100, 0.5f);
      std::vector<int64_t> limit(nq);
      for (int64_t i = 0; i < nq; ++i) limit[i] = (i * 37) % (nk + 1);  // includes 0 and nk
      for (bool bf16 : {false, true}) {
        // The packed (bf16) pass must give the exact LSE of the bf16-rounded inputs.
        const auto q_ref = bf16 ? rounded_to_bf16(q) : q, k_ref = bf16 ? rounded_to_bf16(k) : k;
        for (bool causal : {false, true}) {
          std::vector<float> fast(nq), slow(nq);
          const int64_t* lim = causal ? limit.data() : nullptr;
          if (bf16)
            cpu::lse_pass(cpu::pack_bf16(q.data(), nq, dim, dim),
                          cpu::pack_bf16(k.data(), nk, dim, dim), 0.125f, lim, fast.data());
          else
            cpu::lse_pass(q.data(), nq, dim, k.data(), nk, dim, dim, 0.125f, lim, fast.data());
          ref::lse_pass(q_ref.data(), nq, dim, k_ref.data(), nk, dim, dim, 0.125f, lim,
                        slow.data());
          for (int64_t i = 0; i < nq; ++i) {
            if (std::isinf(slow[i])) {
              ASSERT_TRUE(std::isinf(fast[i]) && fast[i] < 0) << "row " << i;
              continue;
            }
            ASSERT_NEAR(fast[i], slow[i], 1e-4f * (1 + std::abs(slow[i])))
                << "nq=" << nq << " nk=" << nk << " causal=" << causal << " bf16=" << bf16
                << " row " << i;
          }
        }
      }
    }
  }
}

TEST_P(Primitives, ProbReduceMatchesReferenceAndSumsToOne) {
  const int64_t dim = 32;
  for (int64_t nq : {1, 7, 65, 130}) {
    for (int64_t nk : {1, 63, 257, 600}) {
      for (auto [row_group, col_group, bf16] :
           {std::tuple{1, 1, false}, {64, 1, false}, {64, 64, false}, {7, 5, false},
            {1, 1, true}, {64, 1, true}}) {
        // The packed (bf16) reduction must give the probabilities of the bf16-rounded inputs
        // (given the same LSE).
        const auto k = random_matrix(nk, dim, 3), k_ref = bf16 ? rounded_to_bf16(k) : k;
        std::vector<int64_t> limit(nq);
        for (int64_t i = 0; i < nq; ++i) limit[i] = (i * 13) % (nk + 1);
        const int64_t out_rows = (nq + row_group - 1) / row_group;
        const int64_t out_cols = (nk + col_group - 1) / col_group;
        std::vector<float> fast(out_rows * out_cols, 0.0f), slow(out_rows * out_cols, 0.0f);
        std::vector<float> row_mass(nq, 0.0f);
        // Two heads accumulate into the same output, as a GQA group does.
        for (uint32_t head = 0; head < 2; ++head) {
          const auto q = random_matrix(nq, dim, 50 + head), q_ref = bf16 ? rounded_to_bf16(q) : q;
          std::vector<float> lse(nq);
          ref::lse_pass(q_ref.data(), nq, dim, k_ref.data(), nk, dim, dim, 0.2f, limit.data(),
                        lse.data());
          if (bf16)
            cpu::prob_reduce(cpu::pack_bf16(q.data(), nq, dim, dim), lse.data(),
                             cpu::pack_bf16(k.data(), nk, dim, dim), 0.2f, limit.data(),
                             row_group, col_group, fast.data());
          else
            cpu::prob_reduce(q.data(), nq, dim, lse.data(), k.data(), nk, dim, dim, 0.2f,
                             limit.data(), row_group, col_group, fast.data());
          ref::prob_reduce(q_ref.data(), nq, dim, lse.data(), k_ref.data(), nk, dim, dim, 0.2f,
                           limit.data(), row_group, col_group, slow.data());
        }
        for (int64_t e = 0; e < out_rows * out_cols; ++e)
          ASSERT_NEAR(fast[e], slow[e], 1e-4f * (1 + slow[e]))
              << "nq=" << nq << " nk=" << nk << " groups " << row_group << "x" << col_group
              << " bf16=" << bf16 << " entry " << e;
        // Each row with a visible key contributes mass 1 per head.
        double total = 0.0, expect = 0.0;
        for (float x : fast) total += x;
        for (int64_t i = 0; i < nq; ++i) expect += limit[i] > 0 ? 2.0 : 0.0;
        ASSERT_NEAR(total, expect, 1e-3 * (1 + expect));
      }
    }
  }
}

TEST_P(Primitives, TopkMatchesReferenceWithTies) {
  std::mt19937 rng(5);
  for (int64_t n : {0, 1, 7, 63, 65, 1000}) {
    std::vector<float> score(n);
    for (float& x : score) x = static_cast<float>(rng() % 17);  // many ties
    if (n > 3) score[2] = std::numeric_limits<float>::quiet_NaN();
    for (int64_t k : {0, 1, 5, 64, 2000}) {
      EXPECT_EQ(cpu::topk_indices(score.data(), n, k), ref::topk_indices(score.data(), n, k))
          << "n=" << n << " k=" << k;
    }
  }
}

TEST_P(Primitives, GatherScatterAndArgsort) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t n = 65, dim = 7;
    Tensor x32({2, 3, n, dim}, DType::kF32);
    const auto values = random_matrix(1, x32.numel(), 9);
    std::copy(values.begin(), values.end(), x32.f32());
    const Tensor x = x32.to(dtype);
    std::vector<int32_t> index = {64, 0, 3, 3, 17, 1};
    std::vector<float> fast(index.size() * dim), slow(index.size() * dim);
    cpu::gather_rows(x.view(), 1, 2, index.data(), index.size(), fast.data());
    ref::gather_rows(x.view(), 1, 2, index.data(), index.size(), slow.data());
    EXPECT_EQ(fast, slow) << dtype_name(dtype);
  }
  std::mt19937 rng(11);
  for (int64_t n : {1, 7, 1000}) {
    std::vector<uint32_t> keys(n);
    for (auto& key : keys) key = rng() % 128;
    const auto perm = cpu::stable_argsort(keys, 7);
    EXPECT_EQ(perm, ref::stable_argsort(keys));
    // gather_rows reads rows in the permutation's order.
    Tensor src({1, 1, n, 3}, DType::kF32);
    for (int64_t e = 0; e < src.numel(); ++e) src.f32()[e] = static_cast<float>(e);
    std::vector<float> rows(n * 3);
    cpu::gather_rows(src.view(), 0, 0, perm.data(), n, rows.data());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < 3; ++c) ASSERT_EQ(rows[r * 3 + c], src.f32()[perm[r] * 3 + c]);
  }
}

// A plan's token order: permute_tokens puts rows into kernel order (padding rows zero, any
// dtype, strided sources), unpermute_tokens puts results back and drops padding.
TEST_P(Primitives, PermuteTokensRoundTrip) {
  const int64_t batch = 2, heads = 3, n = 11, dim = 5;
  const std::vector<int32_t> order = {4, -1, 0, 10, 9, -1, 1, 2, 3, 5, 6, 7, 8, -1};
  Tensor permuted;  // one buffer for both dtypes: its padding rows must be written, not inherited
  for (DType dtype : {DType::kF32, DType::kF16}) {
    Tensor storage({batch, n, heads, dim}, DType::kF32);  // [b, s, h, d] viewed as [b, h, s, d]
    for (int64_t e = 0; e < storage.numel(); ++e) storage.f32()[e] = static_cast<float>(e % 97);
    const Tensor stored = storage.to(dtype);
    TensorView x = stored.view();
    std::swap(x.shape[1], x.shape[2]);
    std::swap(x.stride[1], x.stride[2]);
    cpu::permute_tokens(x, order, 2, &permuted);
    ASSERT_EQ(permuted.shape(), (std::vector<int64_t>{batch, heads, int64_t(order.size()), dim}));
    const TensorView p = permuted.view();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (size_t s = 0; s < order.size(); ++s)
          for (int64_t d = 0; d < dim; ++d)
            ASSERT_EQ(p.get(b, h, s, d), order[s] < 0 ? 0.0f : x.get(b, h, order[s], d));
    if (dtype != DType::kF32) continue;
    // Back: O and the per-row LSE land on their tokens.
    Tensor lse({batch, heads, int64_t(order.size())}, DType::kF32);
    for (int64_t e = 0; e < lse.numel(); ++e) lse.f32()[e] = static_cast<float>(e);
    Tensor out({batch, heads, n, dim}, DType::kF32), out_lse({batch, heads, n}, DType::kF32);
    cpu::unpermute_tokens(permuted.view(), lse.rows_view(), order, out.view(), out_lse.rows_view(),
                          1);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (size_t s = 0; s < order.size(); ++s) {
          if (order[s] < 0) continue;
          EXPECT_EQ(out_lse.view().get(0, b, h, order[s]), lse.view().get(0, b, h, s));
          for (int64_t d = 0; d < dim; ++d)
            ASSERT_EQ(out.view().get(b, h, order[s], d), x.get(b, h, order[s], d));
        }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, Primitives, ::testing::ValuesIn(testing::simd_targets()),
                         [](const auto& info) { return std::string(hwy::TargetName(info.param)); });

}  // namespace
}  // namespace attnkit
