// Numerical edge cases, for every forward kernel: logits near and far beyond the f32 exp range
// (a kernel that never subtracts the running max overflows to inf / NaN here), inputs of 1e4,
// logits so small that softmax is uniform, denormal inputs, f16 inputs near the f16 maximum and
// rows that see no key. Each case is checked against the float64 reference with the harness's
// derived bound (which grows with sum |q k| * scale, the f32 rounding of the scores); outputs
// start as NaN, so a row left unwritten fails.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/pattern.h"
#include "support/attention_check.h"
#include "support/planner_check.h"

namespace attnkit::testing {
namespace {

// One kernel family, run on a problem through its public entry point.
struct Kernel {
  std::string name;
  // Runs the kernel on `in` (outputs in in.out / in.lse) and the reference into in.ref_*.
  std::function<void(Inputs& in, const Problem& p)> run;
};

void reference(Inputs& in, const AttentionArgs& a, const ElementPredicate& allow = {}) {
  AttentionArgs r = a;
  r.out = in.ref_out.view();
  r.lse = in.ref_lse.rows_view();
  attention_reference(r, allow);
}

// Keys [first, first + count) of a K or V view.
TensorView key_range(TensorView view, int64_t first, int64_t count) {
  view.data = static_cast<const char*>(view.data) +
              first * view.stride[2] * static_cast<int64_t>(dtype_size(view.dtype));
  view.shape[2] = count;
  return view;
}

AttentionArgs args_of(Inputs& in, const Problem& p) {
  AttentionArgs a = in.args();
  a.causal = p.causal;
  a.scale = p.scale;
  return a;
}

Kernel pattern_kernel(const std::string& spec) {
  return {spec, [spec](Inputs& in, const Problem& p) {
            const AttentionArgs a = args_of(in, p);
            const auto pattern = make_pattern(spec);
            pattern->run(a);
            reference(in, a, plan_predicate(pattern->plan(PlanInputs::of(a))));
          }};
}

std::vector<Kernel> kernels() {
  return {
      {"tile",
       [](Inputs& in, const Problem& p) {
         const AttentionArgs a = args_of(in, p);
         attention(a);
         reference(in, a);
       }},
      {"decode",
       [](Inputs& in, const Problem& p) {
         const AttentionArgs a = args_of(in, p);
         attention_decode(a);
         reference(in, a);
       }},
      // Split keys merged by LSE: exact merge of two decode partials over disjoint key halves.
      {"merge",
       [](Inputs& in, const Problem& p) {
         const AttentionArgs a = args_of(in, p);
         const int64_t half = p.nk / 2;
         std::vector<Tensor> outs, lses;
         for (int part = 0; part < 2; ++part) {
           const int64_t first = part ? half : 0, count = part ? p.nk - half : half;
           AttentionArgs s = a;
           s.k = key_range(in.k.view(), first, count);
           s.v = key_range(in.v.view(), first, count);
           outs.push_back(nan_filled({p.batch, p.heads_q, p.nq, p.dim_v}));
           lses.push_back(nan_filled({p.batch, p.heads_q, p.nq}));
           s.out = outs.back().view(), s.lse = lses.back().rows_view();
           s.causal = false;
           attention(s);
         }
         merge(outs[0].view(), lses[0].rows_view(), outs[1].view(), lses[1].rows_view(), a.out,
               a.lse);
         AttentionArgs r = a;
         r.causal = false;
         reference(in, r);
       }},
      pattern_kernel("window:size=48"),  // block-sparse, FULL and PARTIAL blocks
      pattern_kernel("streaming:sinks=4,window=32"),
      pattern_kernel(
          "infllm_v2:dense_len=0,block=16,init=1,local=1,topk=4,kernel=16,stride=8,lse_kernel=32,"
          "lse_stride=16"),
      pattern_kernel("hip:k=32,block_q=16,sink=4,window=16"),
      // Routing's own execution path with one cluster (every key), whose result is exact
      // attention; raw logits (q.k * scale), as the reference's (ln normalises q and k first).
      pattern_kernel("routing:clusters=1,window=1000,local_heads=0,logits=raw"),
      pattern_kernel("dhsa:block=16,budget=32,local=16"),
  };
}

struct Edge {
  std::string name;
  Problem problem;
};

std::vector<Edge> edges() {
  std::vector<Edge> list;
  auto add = [&](std::string name, float scale, float magnitude, DType dtype, bool causal) {
    Problem p;
    p.batch = 2, p.heads_q = 2, p.heads_kv = 1, p.nq = 70, p.nk = 130, p.dim = 32, p.dim_v = 24;
    p.scale = scale, p.magnitude = magnitude, p.dtype = dtype, p.causal = causal;
    list.push_back({std::move(name), p});
  };
  add("logits_tens_of_nats", 0.0f, 3.0f, DType::kF32, false);      // |s| ~ 50
  add("logits_hundreds_of_nats", 0.0f, 10.0f, DType::kF32, true);  // |s| ~ 600, past exp's 88
  add("scale_1e3", 1e3f, 1.0f, DType::kF32, false);                // |s| ~ 6000
  add("inputs_1e4", 0.0f, 1e4f, DType::kF32, true);                // |s| ~ 6e8
  add("uniform_scale_1e-30", 1e-30f, 1.0f, DType::kF32, false);    // softmax is uniform
  add("denormal_inputs", 0.0f, 1e-39f, DType::kF32, false);
  add("f16_near_max", 0.0f, 2e4f, DType::kF16, false);  // values up to ~6e4 (f16 max 65504)
  add("bf16_hundreds_of_nats", 0.0f, 10.0f, DType::kBF16, true);
  return list;
}

class NumericalEdges : public ::testing::TestWithParam<std::tuple<size_t, size_t>> {};

TEST_P(NumericalEdges, NoNanWhereTheReferenceHasNoneAndMatches) {
  const Kernel kernel = kernels()[std::get<0>(GetParam())];
  Problem p = edges()[std::get<1>(GetParam())].problem;
  if (kernel.name == "decode") p.nq = 3;  // the decode path serves few queries
  if (kernel.name.rfind("infllm", 0) == 0 || kernel.name.rfind("hip", 0) == 0 ||
      kernel.name.rfind("routing", 0) == 0 || kernel.name.rfind("dhsa", 0) == 0)
    p.nq = p.nk, p.causal = true;  // content planners plan self-attention
  Inputs in = make_inputs(p);
  // f16 near its maximum: the stored values must really be that large (and finite).
  if (p.dtype == DType::kF16) {
    const Tensor q = in.q.to(DType::kF32);
    float largest = 0.0f;
    for (int64_t i = 0; i < q.numel(); ++i) largest = std::max(largest, std::fabs(q.f32()[i]));
    ASSERT_GT(largest, 3e4f);
    ASSERT_TRUE(std::isfinite(largest));
  }
  kernel.run(in, p);
  int64_t nan_in_kernel = 0, nan_in_reference = 0;
  for (int64_t i = 0; i < in.out.numel(); ++i) {
    nan_in_kernel += std::isnan(in.out.f32()[i]);
    nan_in_reference += std::isnan(in.ref_out.f32()[i]);
  }
  ASSERT_EQ(nan_in_reference, 0);
  ASSERT_EQ(nan_in_kernel, 0) << kernel.name;
  AttentionArgs a = in.args(), r = a;
  a.scale = r.scale = p.scale;
  r.out = in.ref_out.view(), r.lse = in.ref_lse.rows_view();
  expect_matches_reference(a, r, kernel.name + " " + p.name());
}

INSTANTIATE_TEST_SUITE_P(Kernels, NumericalEdges,
                         ::testing::Combine(::testing::Range<size_t>(0, kernels().size()),
                                            ::testing::Range<size_t>(0, edges().size())),
                         [](const auto& info) {
                           std::string name = kernels()[std::get<0>(info.param)].name + "_" +
                                              edges()[std::get<1>(info.param)].name;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Rows that see no key (a causal query block before every key, Nq > Nk): O = 0 and LSE = -inf,
// written over NaN sentinels, on the tile, decode and block-sparse paths.
TEST(NumericalEdges, RowsThatSeeNoKeyAreWrittenAsZero) {
  for (const std::string path : {"tile", "decode", "window"}) {
    Problem p;
    p.nq = path == "decode" ? 9 : 90, p.nk = path == "decode" ? 4 : 40, p.causal = true;
    p.dim = 16, p.dim_v = 16;
    Inputs in = make_inputs(p);
    AttentionArgs a = args_of(in, p);
    if (path == "tile") attention(a);
    if (path == "decode") attention_decode(a);
    if (path == "window") make_pattern("window:size=16")->run(a);
    const int64_t empty_rows = p.nq - p.nk;
    for (int64_t i = 0; i < empty_rows; ++i) {
      EXPECT_EQ(*a.lse.row<float>(0, 0, i), -std::numeric_limits<float>::infinity()) << path << i;
      for (int64_t d = 0; d < p.dim_v; ++d) ASSERT_EQ(a.out.get(0, 0, i, d), 0.0f) << path << i;
    }
    for (int64_t i = empty_rows; i < p.nq; ++i)
      ASSERT_TRUE(std::isfinite(*a.lse.row<float>(0, 0, i))) << path << " row " << i;
  }
}

}  // namespace
}  // namespace attnkit::testing
