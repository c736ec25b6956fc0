// The fused dense / causal kernel against the reference over a sweep of odd shapes.
#include "attnkit/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attnkit/block_mask.h"
#include "kernels/cpu/tile_plan.h"
#include "support/attention_check.h"

namespace attnkit {
namespace {

using testing::Problem;

std::vector<Problem> sweep() {
  struct Shape {
    int64_t batch, heads_q, heads_kv, nq, nk, dim, dim_v;
  };
  const std::vector<Shape> shapes = {
      {1, 1, 1, 1, 1, 64, 64},     {1, 2, 2, 7, 7, 80, 80},   {1, 3, 1, 63, 63, 64, 64},
      {2, 3, 3, 64, 64, 128, 128}, {1, 8, 1, 65, 65, 96, 96}, {1, 3, 1, 1000, 1000, 64, 64},
      {1, 2, 2, 7, 65, 256, 256},  {1, 3, 1, 65, 7, 80, 80},  {1, 8, 1, 63, 1000, 64, 32},
      {1, 2, 1, 1000, 63, 33, 48}, {1, 1, 1, 5, 200, 512, 7}, {1, 2, 2, 130, 130, 1, 3},
      // K/V past the L2 budget, on one thread: tiles walk their lists in groups, chunk by chunk
      // (GroupedOrderOnlyWhereKeysOutgrowL2).
      {1, 3, 1, 700, 1201, 80, 72}, {1, 2, 2, 600, 2100, 128, 128},
  };
  std::vector<Problem> problems;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (bool causal : {false, true})
      for (const Shape& s : shapes) {
        Problem p;
        p.batch = s.batch, p.heads_q = s.heads_q, p.heads_kv = s.heads_kv, p.nq = s.nq, p.nk = s.nk,
        p.dim = s.dim, p.dim_v = s.dim_v, p.dtype = dtype, p.causal = causal;
        p.threads = s.nk > 1024 ? 1 : 0;
        problems.push_back(p);
      }
  return problems;
}

class DenseKernel : public ::testing::TestWithParam<Problem> {};

TEST_P(DenseKernel, MatchesReference) {
  testing::check_problem(GetParam(), [](const AttentionArgs& a) { attention(a); });
}

INSTANTIATE_TEST_SUITE_P(Sweep, DenseKernel, ::testing::ValuesIn(testing::on_every_target(sweep())),
                         [](const auto& info) { return info.param.name(); });

// Causal with Nq > Nk: the first Nq - Nk rows see no key and must give O = 0, LSE = -inf.
TEST(DenseKernel, RowsThatSeeNoKey) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 100, p.nk = 30, p.causal = true;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  attention(a);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 100; ++i) {
      const float lse = in.lse.f32()[h * 100 + i];
      if (i < 70) {
        EXPECT_TRUE(std::isinf(lse) && lse < 0) << "row " << i;
        for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(a.out.get(0, h, i, d), 0.0f);
      } else {
        EXPECT_TRUE(std::isfinite(lse)) << "row " << i;
      }
    }
}

// The L2-blocked order: long K/V put the tiles of one head group into groups (sized by the
// budget), short K/V and block masks keep one tile per group; every item is in one group.
TEST(DenseKernel, GroupedOrderOnlyWhereKeysOutgrowL2) {
  auto plan_for = [](const Problem& p) {
    testing::Inputs in = testing::make_inputs(p);
    AttentionArgs a = in.args();
    a.threads = p.threads;
    return cpu::make_tile_plan(a, nullptr);
  };
  Problem p;  // 17 tiles per head
  p.heads_q = 2, p.heads_kv = 2, p.nq = 2100, p.nk = 2100, p.dim = p.dim_v = 128, p.threads = 1;
  const cpu::TilePlan grouped = plan_for(p);
  EXPECT_EQ(grouped.group_tiles, 4);  // 512 KiB / (256 floats x 128 rows x 4 bytes)
  EXPECT_EQ(grouped.group_start,
            (std::vector<int64_t>{0, 4, 8, 12, 16, 17, 21, 25, 29, 33, 34}));
  p.threads = 8;  // 34 tiles: fewer than 4 groups of 2 per thread, so one tile per group
  EXPECT_EQ(plan_for(p).group_tiles, 1);
  p.threads = 1;
  p.nk = 500;  // 500 x 1 KiB of K/V
  const cpu::TilePlan short_keys = plan_for(p);
  EXPECT_EQ(short_keys.group_tiles, 1);
  EXPECT_EQ(short_keys.group_start.size(), short_keys.items.size() + 1);
}

// Causal, Nq > Nk with K/V long enough for the grouped order: rows that see no key in a group
// whose other tiles see keys.
TEST(DenseKernel, RowsThatSeeNoKeyInAGroup) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 1300, p.nk = 1100, p.causal = true;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true, a.threads = 1;
  attention(a);
  AttentionArgs r = a;
  r.out = in.ref_out.view(), r.lse = in.ref_lse.rows_view();
  attention_reference(r);
  testing::expect_matches_reference(a, r, "grouped, rows that see no key");
  for (int64_t i = 0; i < 200; ++i) EXPECT_TRUE(std::isinf(in.lse.f32()[i])) << "row " << i;
}

// [batch, seq, heads, dim] storage viewed through strides, without copies; the LSE too, in
// [batch, seq, heads] storage.
TEST(DenseKernel, StridedLayout) {
  const int64_t batch = 2, heads = 4, n = 77, dim = 64;
  Tensor q = random_normal({batch, n, heads, dim}, DType::kF32, 11);
  Tensor k = random_normal({batch, n, heads, dim}, DType::kF32, 12);
  Tensor v = random_normal({batch, n, heads, dim}, DType::kF32, 13);
  auto bshd = [&](Tensor& t) {
    TensorView view = t.view();
    view.shape[1] = heads, view.shape[2] = n;
    view.stride[1] = dim, view.stride[2] = heads * dim;
    return view;
  };
  Tensor out({batch, heads, n, dim}, DType::kF32), ref({batch, heads, n, dim}, DType::kF32);
  Tensor lse({batch, n, heads}, DType::kF32), ref_lse({batch, heads, n}, DType::kF32);
  MutableTensorView lse_bsh = lse.rows_view();  // [batch, n, heads, 1] -> [batch, heads, n, 1]
  std::swap(lse_bsh.shape[1], lse_bsh.shape[2]);
  std::swap(lse_bsh.stride[1], lse_bsh.stride[2]);
  AttentionArgs a;
  a.q = bshd(q), a.k = bshd(k), a.v = bshd(v), a.out = out.view(), a.lse = lse_bsh;
  a.causal = true;
  attention(a);
  AttentionArgs r = a;
  r.out = ref.view(), r.lse = ref_lse.rows_view();
  attention_reference(r);
  testing::expect_matches_reference(a, r, "strided");
}

// Thread counts must not change the result (the schedule is dynamic, each row is owned by one
// item).
TEST(DenseKernel, SameResultForAnyThreadCount) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 300, p.nk = 1500, p.causal = true;  // grouped order
  testing::Inputs one = testing::make_inputs(p), three = testing::make_inputs(p);
  AttentionArgs a = one.args(), b = three.args();
  a.causal = b.causal = true;
  a.threads = 1, b.threads = 3;
  attention(a);
  attention(b);
  for (int64_t i = 0; i < one.out.numel(); ++i) ASSERT_EQ(one.out.f32()[i], three.out.f32()[i]);
}

// Unforced, the kernels dispatch to the best target this CPU supports.
TEST(DenseKernel, DispatchesToTheBestTarget) {
  EXPECT_STREQ(cpu::kernel_target_name(), hwy::TargetName(testing::simd_targets().front()));
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// The kernels count the pairs they attend; both paths (tiles and decode) must agree with the rule.
TEST(AttendedPairs, DenseCausalAndDecode) {
  for (auto [nq, nk, causal] : std::vector<std::tuple<int64_t, int64_t, bool>>{{100, 150, true},
                                                                               {150, 100, true},
                                                                               {77, 77, false},
                                                                               {4, 2000, true},
                                                                               {1, 3000, false}}) {
    testing::Problem p;
    p.batch = 2, p.heads_q = 3, p.heads_kv = 1, p.nq = nq, p.nk = nk;
    testing::Inputs in = testing::make_inputs(p);
    AttentionArgs a = in.args();
    a.causal = causal;
    int64_t pairs = 0;
    a.attended_pairs = &pairs;
    attention(a);
    EXPECT_EQ(pairs, 6 * dense_pairs(nq, nk, causal))
        << "nq=" << nq << " nk=" << nk << " causal=" << causal;
  }
}

}  // namespace
}  // namespace attnkit
