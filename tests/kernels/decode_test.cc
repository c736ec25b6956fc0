// The split-key decode path and the LSE merge against the reference.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

using testing::Problem;

std::vector<Problem> decode_sweep() {
  std::vector<Problem> problems;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (bool causal : {false, true})
      for (auto [batch, nq, nk, hq, hkv, dim] :
           std::vector<std::array<int64_t, 6>>{{1, 1, 1, 1, 1, 64},
                                               {1, 1, 1024, 8, 2, 128},
                                               {1, 4, 4097, 3, 1, 64},
                                               {1, 16, 3000, 2, 2, 80},
                                               {1, 1, 20000, 4, 1, 128},
                                               {1, 7, 700, 3, 3, 33},
                                               {3, 2, 1500, 4, 2, 72},
                                               {2, 9, 4, 2, 1, 40}}) {  // causal: empty rows
        Problem p;
        p.batch = batch, p.nq = nq, p.nk = nk, p.heads_q = hq, p.heads_kv = hkv, p.dim = dim;
        p.dim_v = dim, p.dtype = dtype, p.causal = causal;
        problems.push_back(p);
      }
  return problems;
}

class DecodeKernel : public ::testing::TestWithParam<Problem> {};

TEST_P(DecodeKernel, MatchesReference) {
  testing::check_problem(GetParam(), [](const AttentionArgs& a) { attention_decode(a); });
}

INSTANTIATE_TEST_SUITE_P(Sweep, DecodeKernel,
                         ::testing::ValuesIn(testing::on_every_target(decode_sweep())),
                         [](const auto& info) { return info.param.name(); });

// An f32 query over a 16-bit KV cache (the model's f16 / bf16 cache): attention() sends it to the
// decode kernel, which reads K and V in place (or widens them when D is not a whole number of
// vectors). The query holds the same values as the 16-bit case, so the bound is unchanged.
TEST(DecodeKernel, F32QueryOver16BitCacheMatchesReference) {
  for (DType dtype : {DType::kF16, DType::kBF16})
    for (auto [nq, nk, hq, hkv, dim] : std::vector<std::array<int64_t, 5>>{
             {1, 1027, 9, 3, 64}, {4, 300, 2, 1, 64}, {16, 2000, 4, 2, 80}, {1, 1, 1, 1, 64}}) {
      Problem p;
      p.nq = nq, p.nk = nk, p.heads_q = hq, p.heads_kv = hkv, p.dim = dim, p.dim_v = dim;
      p.dtype = dtype, p.causal = true;
      testing::Inputs in = testing::make_inputs(p);
      in.q = in.q.to(DType::kF32);
      AttentionArgs a = in.args();
      a.causal = true;
      attention(a);
      AttentionArgs r = a;
      r.out = in.ref_out.view();
      r.lse = in.ref_lse.rows_view();
      attention_reference(r);
      testing::expect_matches_reference(a, r, p.name() + "_f32_query");
    }
  // Only decode reads mixed dtypes: a long f32 query over an f16 cache is an error naming k.
  Problem p;
  p.nq = 17, p.nk = 40, p.dtype = DType::kF16;
  testing::Inputs in = testing::make_inputs(p);
  in.q = in.q.to(DType::kF32);
  try {
    attention(in.args());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "k");
  }
}

// Attention over keys [0, s) merged with attention over [s, Nk) equals attention over all keys.
TEST(Merge, SplitKeysRecombineExactly) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 50, p.nk = 301;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs whole = in.args();
  attention(whole);
  const int64_t split = 120;
  auto part = [&](int64_t begin, int64_t end, Tensor& out, Tensor& lse) {
    AttentionArgs a = in.args();
    a.k.data = static_cast<const float*>(a.k.data) + begin * a.k.stride[2];
    a.v.data = static_cast<const float*>(a.v.data) + begin * a.v.stride[2];
    a.k.shape[2] = a.v.shape[2] = end - begin;
    out = Tensor({1, 4, 50, 64}, DType::kF32);
    lse = Tensor({1, 4, 50}, DType::kF32);
    a.out = out.view(), a.lse = lse.rows_view();
    attention(a);
  };
  Tensor out_a, lse_a, out_b, lse_b;
  part(0, split, out_a, lse_a);
  part(split, 301, out_b, lse_b);
  merge(out_a.view(), lse_a.rows_view(), out_b.view(), lse_b.rows_view(), out_a.view(),
        lse_a.rows_view());
  for (int64_t i = 0; i < out_a.numel(); ++i)
    EXPECT_NEAR(out_a.f32()[i], in.out.f32()[i], 1e-5) << "element " << i;
  for (int64_t i = 0; i < lse_a.numel(); ++i)
    EXPECT_NEAR(lse_a.f32()[i], in.lse.f32()[i], 1e-5) << "row " << i;
}

// A side that saw no key (LSE = -inf) contributes nothing; two empty sides stay empty.
TEST(Merge, EmptySides) {
  Tensor a({1, 1, 2, 3}, DType::kF32), b({1, 1, 2, 3}, DType::kF32), out({1, 1, 2, 3}, DType::kF32);
  const float inf = std::numeric_limits<float>::infinity();
  float lse_a[2] = {0.5f, -inf}, lse_b[2] = {-inf, -inf}, lse[2];
  for (int i = 0; i < 6; ++i) a.f32()[i] = float(i + 1), b.f32()[i] = 100.0f;
  const auto row_view = [](float* data) {
    return MutableTensorView::contiguous(data, DType::kF32, {1, 1, 2, 1});
  };
  merge(a.view(), row_view(lse_a), b.view(), row_view(lse_b), out.view(), row_view(lse));
  // An LSE that is not [B, H, N, 1] is refused, naming it.
  EXPECT_THROW(merge(a.view(), a.view(), b.view(), row_view(lse_b), out.view(), row_view(lse)),
               Error);
  EXPECT_FLOAT_EQ(lse[0], 0.5f);
  EXPECT_TRUE(std::isinf(lse[1]) && lse[1] < 0);
  for (int d = 0; d < 3; ++d) {
    EXPECT_FLOAT_EQ(out.f32()[d], float(d + 1));
    EXPECT_EQ(out.f32()[3 + d], 0.0f);
  }
}

}  // namespace
}  // namespace attnkit
