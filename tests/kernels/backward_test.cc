// The attention backward: the double reference against finite differences, and the fast kernel
// (dense, causal, block-sparse) against the reference over the usual sweep, on every SIMD target.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "core/dropout.h"
#include "support/backward_check.h"
#include "support/random_mask.h"

namespace attnkit {
namespace {

using testing::BackwardInputs;
using testing::Gradients;
using testing::Problem;

// --- The reference, checked by finite differences of a double forward ---

// L = sum W . O + sum w . LSE in double, with O and LSE computed from the stored inputs (and
// a.dropout's mask applied to the probabilities that make O).
double loss(const AttentionArgs& a, const Tensor& w_out, const Tensor& w_lse,
            const ElementPredicate& allow) {
  const int64_t nq = a.q.shape[2], nk = a.k.shape[2], dim = a.q.shape[3], dim_v = a.v.shape[3];
  const int64_t group = a.q.shape[1] / a.k.shape[1];
  const double scale = effective_scale(a);
  double total = 0.0;
  for (int64_t b = 0; b < a.q.shape[0]; ++b)
    for (int64_t h = 0; h < a.q.shape[1]; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < nk; ++j) {
          if ((a.causal && j > i + nk - nq) || (allow && !allow(b, h, i, j))) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < dim; ++d)
            dot += double(a.q.get(b, h, i, d)) * a.k.get(b, h / group, j, d);
          s.push_back(dot * scale);
          keys.push_back(j);
        }
        if (s.empty()) continue;  // O = 0; LSE = -inf is constant
        double top = *std::max_element(s.begin(), s.end()), sum = 0.0;
        for (double x : s) sum += std::exp(x - top);
        const double lse = top + std::log(sum);
        total += lse * w_lse.rows_view().get(b, h, i, 0);
        const uint32_t row_key = dropout_row_key(a.dropout_seed, b, h, i);
        auto kept = [&](size_t x) {
          if (a.dropout == 0.0f) return 1.0;
          return dropout_keeps(row_key, keys[x], dropout_threshold(a.dropout))
                     ? 1.0 / (1.0 - a.dropout)
                     : 0.0;
        };
        for (int64_t d = 0; d < dim_v; ++d) {
          double o = 0.0;
          for (size_t x = 0; x < s.size(); ++x)
            o += std::exp(s[x] - lse) * kept(x) * a.v.get(b, h / group, keys[x], d);
          total += o * w_out.view().get(b, h, i, d);
        }
      }
  return total;
}

// Central differences of loss() with respect to every element of `t` against `grad`.
void expect_finite_differences(Tensor& t, const Tensor& grad, const std::function<double()>& f,
                               const std::string& name) {
  float* x = t.f32();
  for (int64_t e = 0; e < t.numel(); ++e) {
    const float original = x[e];
    const float step = 1e-3f * std::max(1.0f, std::fabs(original));
    x[e] = original + step;
    const float up = x[e];
    const double f_up = f();
    x[e] = original - step;
    const float down = x[e];
    const double f_down = f();
    x[e] = original;
    const double numeric = (f_up - f_down) / (double(up) - double(down));
    // Truncation error of central differences: O(step^2) times the third derivative, here < 1e-5.
    EXPECT_NEAR(grad.f32()[e], numeric, 2e-5 + 1e-4 * std::fabs(numeric))
        << name << "[" << e << "]";
  }
}

struct FdCase {
  bool causal, with_dlse, masked;
  float dropout = 0.0f;
};

class BackwardReference : public ::testing::TestWithParam<FdCase> {};

TEST_P(BackwardReference, EqualsFiniteDifferences) {
  const FdCase c = GetParam();
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 4, p.nk = 6, p.dim = 3, p.dim_v = 2, p.causal = c.causal;
  p.scale = 0.7f, p.dropout = c.dropout;
  // A rule that hides every key from query 1 (a row that sees nothing) and some others.
  const ElementPredicate allow = [&](int64_t, int64_t h, int64_t i, int64_t j) {
    return !c.masked || (i != 1 && (i + j + h) % 3 != 0);
  };
  const BackwardInputs in = testing::make_backward_inputs(
      p, c.with_dlse, [&](const AttentionArgs& a) { attention_reference(a, allow); });
  Tensor w_lse = in.dlse.numel() ? in.dlse : Tensor({p.batch, p.heads_q, p.nq}, DType::kF32);
  Gradients g = testing::nan_gradients(p);
  attention_backward_reference(in.args(g), allow);
  Tensor q = in.in.q, k = in.in.k, v = in.in.v;
  auto f = [&] {
    AttentionArgs a = in.forward;
    a.q = q.view(), a.k = k.view(), a.v = v.view();
    return loss(a, in.dout, w_lse, allow);
  };
  expect_finite_differences(q, g.dq, f, "dQ");
  expect_finite_differences(k, g.dk, f, "dK");
  expect_finite_differences(v, g.dv, f, "dV");
  if (c.masked) {
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t d = 0; d < p.dim; ++d) EXPECT_EQ(g.dq.view().get(0, h, 1, d), 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, BackwardReference,
                         ::testing::Values(FdCase{false, false, false}, FdCase{false, true, false},
                                           FdCase{true, false, false}, FdCase{true, true, false},
                                           FdCase{false, true, true}, FdCase{true, true, true},
                                           FdCase{false, true, false, 0.4f},
                                           FdCase{true, true, true, 0.4f}),
                         [](const auto& info) {
                           const FdCase& c = info.param;
                           return std::string(c.causal ? "causal" : "full") +
                                  (c.with_dlse ? "_dlse" : "") + (c.masked ? "_masked" : "") +
                                  (c.dropout != 0.0f ? "_dropout" : "");
                         });

// --- The fast kernel, dense and causal ---

struct DenseCase {
  Problem problem;
  bool with_dlse;
};

std::vector<DenseCase> dense_sweep() {
  std::vector<Problem> shapes;
  auto add = [&](int64_t hq, int64_t hkv, int64_t nq, int64_t nk, int64_t d, int64_t dv) {
    Problem p;
    p.heads_q = hq, p.heads_kv = hkv, p.nq = nq, p.nk = nk, p.dim = d, p.dim_v = dv;
    shapes.push_back(p);
  };
  for (int64_t n : {1, 7, 63, 64, 65}) add(1, 1, n, n, 64, 64);
  add(2, 2, 1000, 1000, 64, 64);
  add(1, 1, 7, 300, 64, 64);   // Nq < Nk
  add(1, 1, 300, 7, 64, 64);   // Nq > Nk: causal rows that see no key
  add(3, 1, 65, 130, 64, 64);  // GQA 3
  add(8, 1, 65, 65, 64, 64);   // MQA 8
  add(6, 2, 33, 70, 80, 48);   // GQA 3, d = 80, Dv != D
  add(2, 1, 65, 65, 256, 256);
  add(2, 2, 40, 50, 7, 5);  // head dims that are not whole vectors
  std::vector<DenseCase> out;
  for (const Problem& s : shapes)
    for (bool causal : {false, true}) {
      Problem p = s;
      p.causal = causal;
      out.push_back({p, causal});
    }
  for (DType dtype : {DType::kF16, DType::kBF16})
    for (bool causal : {false, true}) {
      Problem p = shapes[9];  // GQA 3, d = 80
      p.dtype = dtype, p.causal = causal;
      out.push_back({p, true});
    }
  Problem batched = shapes[4];
  batched.batch = 2, batched.heads_q = 4, batched.heads_kv = 2, batched.causal = true;
  out.push_back({batched, false});
  Problem scaled = shapes[3];
  scaled.scale = 0.3f, scaled.magnitude = 3.0f;  // large logits
  out.push_back({scaled, true});
  std::vector<DenseCase> every;
  for (int64_t target : testing::simd_targets())
    for (DenseCase c : out) {
      c.problem.target = target;
      every.push_back(c);
    }
  return every;
}

class DenseBackward : public ::testing::TestWithParam<DenseCase> {};

TEST_P(DenseBackward, MatchesReference) {
  const DenseCase& c = GetParam();
  testing::check_backward(
      c.problem, c.with_dlse, [](const AttentionArgs& a) { attention(a); },
      [](const BackwardArgs& a) { attention_backward(a); });
}

INSTANTIATE_TEST_SUITE_P(Sweep, DenseBackward, ::testing::ValuesIn(dense_sweep()),
                         [](const auto& info) {
                           return info.param.problem.name() + (info.param.with_dlse ? "_dlse" : "");
                         });

// --- The fast kernel over random block masks ---

std::vector<testing::MaskCase> mask_cases() {
  const std::vector<std::array<int64_t, 7>> shapes = {
      // batch, heads_q, heads_kv, nq, nk, q_block, kv_block
      {1, 2, 1, 65, 65, 64, 64},   {1, 3, 1, 200, 130, 32, 16},  {1, 4, 2, 63, 300, 16, 64},
      {2, 4, 2, 150, 170, 32, 16}, {1, 2, 1, 300, 300, 256, 48}, {1, 8, 8, 100, 100, 16, 16},
  };
  return testing::mask_sweep(shapes, {DType::kF32, DType::kBF16});
}

class BlockSparseBackward : public ::testing::TestWithParam<testing::MaskCase> {};

TEST_P(BlockSparseBackward, MatchesReferenceWithTheMaskRule) {
  const testing::MaskCase& c = GetParam();
  std::mt19937 rng(11);
  const BlockMask mask = testing::random_mask(c, rng);
  testing::check_backward(
      c.problem, true, [&](const AttentionArgs& a) { attention(a, mask); },
      [&](const BackwardArgs& a) { attention_backward(a, mask); }, testing::mask_rule(mask));
}

INSTANTIATE_TEST_SUITE_P(Sweep, BlockSparseBackward, ::testing::ValuesIn(mask_cases()),
                         [](const auto& info) {
                           const testing::MaskCase& c = info.param;
                           return c.problem.name() + "_qb" + std::to_string(c.q_block) + "_kb" +
                                  std::to_string(c.kv_block) + (c.per_head ? "_perhead" : "") +
                                  (c.per_batch ? "_perbatch" : "");
                         });

// --- Properties ---

// Same inputs, same thread count: the same bits, whichever thread ran which unit. Covers both
// schedules: one dQ plane (8 kv heads) and several (1 kv head, so key ranges are split).
TEST(Backward, BitwiseReproducible) {
  for (int64_t heads_kv : {1, 8}) {
    Problem p;
    p.heads_q = 8, p.heads_kv = heads_kv, p.nq = 700, p.nk = 700, p.causal = true;
    const BackwardInputs in =
        testing::make_backward_inputs(p, true, [](const AttentionArgs& a) { attention(a); });
    Gradients first = testing::nan_gradients(p);
    BackwardArgs a = in.args(first);
    a.forward.threads = 2;
    attention_backward(a);
    for (int run = 0; run < 3; ++run) {
      Gradients again = testing::nan_gradients(p);
      BackwardArgs b = in.args(again);
      b.forward.threads = 2;
      attention_backward(b);
      EXPECT_EQ(std::memcmp(first.dq.data(), again.dq.data(), first.dq.bytes()), 0) << heads_kv;
      EXPECT_EQ(std::memcmp(first.dk.data(), again.dk.data(), first.dk.bytes()), 0) << heads_kv;
      EXPECT_EQ(std::memcmp(first.dv.data(), again.dv.data(), first.dv.bytes()), 0) << heads_kv;
    }
  }
}

// A mask that lists nothing: every row sees no key, every gradient is exactly zero.
TEST(Backward, RowsThatSeeNoKeyGetZeroGradients) {
  Problem p;
  p.heads_q = 2, p.nq = 70, p.nk = 90;
  BlockMask empty;
  empty.nq = p.nq, empty.nk = p.nk;
  empty.row_start.assign(empty.q_blocks() + 1, 0);
  const BackwardInputs in =
      testing::make_backward_inputs(p, true, [&](const AttentionArgs& a) { attention(a, empty); });
  Gradients g = testing::nan_gradients(p);
  attention_backward(in.args(g), empty);
  for (const Tensor* t : {&g.dq, &g.dk, &g.dv})
    for (int64_t x = 0; x < t->numel(); ++x) ASSERT_EQ(t->f32()[x], 0.0f) << x;
}

// Attention over all keys equals merge(attention over the first keys, attention over the rest);
// so its gradients equal merge_backward followed by the two parts' backward with their dLSE.
TEST(Backward, MergeBackwardChainsIntoThePartsWithTheirLseGradients) {
  Problem p;
  p.heads_q = 3, p.heads_kv = 1, p.nq = 50, p.nk = 170;
  const BackwardInputs whole =
      testing::make_backward_inputs(p, true, [](const AttentionArgs& a) { attention(a); });
  Gradients want = testing::nan_gradients(p);
  attention_backward(whole.args(want));

  const int64_t split = 100;
  auto part_keys = [&](const Tensor& t, int64_t begin, int64_t count) {
    TensorView view = t.view();
    view.data = static_cast<const float*>(view.data) + begin * view.stride[2];
    view.shape[2] = count;
    return view;
  };
  struct Part {
    Tensor out, lse, dout, dlse, dq, dk, dv;
    AttentionArgs args;
  } parts[2];
  for (int x = 0; x < 2; ++x) {
    Part& part = parts[x];
    const int64_t begin = x == 0 ? 0 : split, count = x == 0 ? split : p.nk - split;
    part.out = Tensor({1, p.heads_q, p.nq, p.dim_v}, DType::kF32);
    part.lse = Tensor({1, p.heads_q, p.nq}, DType::kF32);
    part.dout = Tensor({1, p.heads_q, p.nq, p.dim_v}, DType::kF32);
    part.dlse = Tensor({1, p.heads_q, p.nq}, DType::kF32);
    part.dq = Tensor({1, p.heads_q, p.nq, p.dim}, DType::kF32);
    part.dk = Tensor({1, 1, count, p.dim}, DType::kF32);
    part.dv = Tensor({1, 1, count, p.dim_v}, DType::kF32);
    part.args.q = whole.in.q.view();
    part.args.k = part_keys(whole.in.k, begin, count);
    part.args.v = part_keys(whole.in.v, begin, count);
    part.args.out = part.out.view();
    part.args.lse = part.lse.rows_view();
    attention(part.args);
  }
  Tensor out({1, p.heads_q, p.nq, p.dim_v}, DType::kF32), lse({1, p.heads_q, p.nq}, DType::kF32);
  merge(parts[0].out.view(), parts[0].lse.rows_view(), parts[1].out.view(),
        parts[1].lse.rows_view(), out.view(), lse.rows_view());
  merge_backward(parts[0].out.view(), parts[0].lse.rows_view(), parts[1].out.view(),
                 parts[1].lse.rows_view(), out.view(), lse.rows_view(), whole.dout.view(),
                 whole.dlse.rows_view(),
                 {parts[0].dout.view(), parts[0].dlse.rows_view(), parts[1].dout.view(),
                  parts[1].dlse.rows_view()});
  for (Part& part : parts) {
    BackwardArgs b;
    b.forward = part.args;
    b.dout = part.dout.view();
    b.dlse = part.dlse.rows_view();
    b.dq = part.dq.view(), b.dk = part.dk.view(), b.dv = part.dv.view();
    attention_backward(b);
  }
  const float tol = 1e-5f;
  for (int64_t x = 0; x < want.dq.numel(); ++x)
    ASSERT_NEAR(parts[0].dq.f32()[x] + parts[1].dq.f32()[x], want.dq.f32()[x], tol) << x;
  for (int64_t x = 0; x < want.dk.numel(); ++x) {
    const int64_t row = x / p.dim;
    const float got = row < split ? parts[0].dk.f32()[x] : parts[1].dk.f32()[x - split * p.dim];
    ASSERT_NEAR(got, want.dk.f32()[x], tol) << x;
  }
  for (int64_t x = 0; x < want.dv.numel(); ++x) {
    const int64_t row = x / p.dim_v;
    const float got = row < split ? parts[0].dv.f32()[x] : parts[1].dv.f32()[x - split * p.dim_v];
    ASSERT_NEAR(got, want.dv.f32()[x], tol) << x;
  }
}

TEST(Backward, BadInputNamesTheArgument) {
  Problem p;
  p.nq = 10, p.nk = 10;
  const BackwardInputs in =
      testing::make_backward_inputs(p, false, [](const AttentionArgs& a) { attention(a); });
  Gradients g = testing::nan_gradients(p);
  auto expect_error = [](const BackwardArgs& a, const char* argument) {
    try {
      attention_backward(a);
      ADD_FAILURE() << "no error for " << argument;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
    }
  };
  BackwardArgs a = in.args(g);
  a.forward.lse = {};
  expect_error(a, "lse");
  a = in.args(g);
  a.dout = in.in.q.view();
  a.dout.shape[2] = 9;
  expect_error(a, "dout");
  a = in.args(g);
  a.dq.dtype = DType::kF16;
  expect_error(a, "dq");
  a = in.args(g);
  a.dk.shape[2] = 11;
  expect_error(a, "dk");
  a = in.args(g);
  a.dv = {};
  expect_error(a, "dv");
  a = in.args(g);
  Tensor dlse({1, 1, 9}, DType::kF32);
  a.dlse = dlse.rows_view();
  expect_error(a, "dlse");
}

}  // namespace
}  // namespace attnkit
