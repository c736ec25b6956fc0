// Lightning Attention-2 (include/attnkit/lightning.h): the blocked kernel against the O(N^2)
// double oracle over odd shapes (n not a multiple of the block, n = 1, D != E, every dtype, with
// and without a carried state, every SIMD target); block sizes 16, 32, 64 agree; no decay equals
// plain causal linear attention written out here; D > 128 split and summed equals the whole;
// decoding token by token and a chunked prefill equal one call; the backward against the oracle's
// gradients and those against finite differences; the slope rule; errors naming the argument.
#include "attnkit/lightning.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "eval/inputs.h"
#include "support/attention_check.h"
#include "support/operator_check.h"

namespace attnkit {
namespace {

using testing::absolute;
using testing::expect_close;

struct Case {
  int64_t batch = 1, heads = 2, n = 65, dim = 16, dim_v = 16, block = 64;
  DType dtype = DType::kF32;
  bool with_state = false;
  int64_t target = 0;
  std::string name() const {
    // append(), not operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
    std::string s = "B";
    s.append(std::to_string(batch)).append("_H").append(std::to_string(heads));
    s.append("_N").append(std::to_string(n)).append("_D").append(std::to_string(dim));
    s.append("_E").append(std::to_string(dim_v)).append("_blk").append(std::to_string(block));
    s.append("_").append(dtype_name(dtype));
    if (with_state) s.append("_state");
    if (target != 0) s.append("_").append(hwy::TargetName(target));
    return s;
  }
};

// Inputs as the official test draws them (randn / 10), slopes from the official rule.
struct Inputs {
  Tensor q, k, v, state_in;
  std::vector<float> slopes;

  explicit Inputs(const Case& c, uint64_t seed = 1)
      : q(random_normal({c.batch, c.heads, c.n, c.dim}, c.dtype, seed, 0.1f)),
        k(random_normal({c.batch, c.heads, c.n, c.dim}, c.dtype, seed + 1, 0.1f)),
        v(random_normal({c.batch, c.heads, c.n, c.dim_v}, c.dtype, seed + 2, 0.1f)),
        slopes(lightning_slopes(c.heads)) {
    if (c.with_state)
      state_in = random_normal({c.batch, c.heads, c.dim, c.dim_v}, DType::kF32, seed + 3, 0.3f);
  }

  LightningArgs args(const Case& c, Tensor& out, Tensor* state_out) const {
    LightningArgs a;
    a.q = q.view(), a.k = k.view(), a.v = v.view();
    a.slopes = slopes;
    if (state_in.numel()) a.state_in = state_in.view();
    a.out = out.view();
    if (state_out) a.state_out = state_out->view();
    a.block = c.block;
    return a;
  }
};

struct Result {
  Tensor out, state;
};

Result run(const Case& c, const Inputs& in, bool reference, bool want_state = true) {
  Result r{testing::nan_filled({c.batch, c.heads, c.n, c.dim_v}),
           testing::nan_filled({c.batch, c.heads, c.dim, c.dim_v})};
  const LightningArgs a = in.args(c, r.out, want_state ? &r.state : nullptr);
  if (reference) {
    lightning_attention_reference(a);
  } else {
    const testing::TargetScope on(c.target);
    lightning_attention(a);
  }
  return r;
}

// The oracle on |q|, |k|, |v|, |S0|: the magnitude of every sum, the tolerance's scale.
Result magnitude(const Case& c, const Inputs& in) {
  Inputs abs = in;
  abs.q = absolute(in.q), abs.k = absolute(in.k), abs.v = absolute(in.v);
  if (in.state_in.numel()) abs.state_in = absolute(in.state_in);
  Case f32 = c;
  f32.dtype = DType::kF32;
  return run(f32, abs, true);
}

// f32 sums of up to n * D products, rounded in blocks: a multiple of sqrt(depth) epsilons.
double factor(const Case& c) { return 8.0 * std::sqrt(double(c.n + c.dim + c.dim_v)); }

class LightningSweep : public ::testing::TestWithParam<Case> {};

TEST_P(LightningSweep, MatchesTheOracle) {
  const Case c = GetParam();
  const Inputs in(c);
  const Result fast = run(c, in, false), ref = run(c, in, true), mag = magnitude(c, in);
  expect_close(fast.out, ref.out, mag.out, factor(c), c.name() + " O");
  expect_close(fast.state, ref.state, mag.state, factor(c), c.name() + " state");
  // Without state_out the last block's state update is skipped; O is the same, bit for bit.
  const Result no_state = run(c, in, false, false);
  EXPECT_EQ(testing::max_abs_difference(no_state.out, fast.out), 0.0) << c.name();
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (int64_t n : {1, 7, 63, 64, 65, 200})
    for (bool state : {false, true}) {
      Case c;
      c.n = n, c.with_state = state;
      cases.push_back(c);
    }
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Case c;
    c.dtype = dtype, c.n = 100, c.with_state = true;
    cases.push_back(c);
  }
  Case odd;  // D != E, odd sizes, three heads (not a power of two), two batches
  odd.batch = 2, odd.heads = 3, odd.n = 77, odd.dim = 13, odd.dim_v = 33, odd.block = 16;
  cases.push_back(odd);
  odd.with_state = true, odd.block = 5;
  cases.push_back(odd);
  Case wide;  // the official head dims
  wide.heads = 1, wide.n = 130, wide.dim = 128, wide.dim_v = 64;
  cases.push_back(wide);
  std::vector<Case> out;
  for (int64_t target : testing::simd_targets())
    for (Case c : cases) {
      c.target = target;
      out.push_back(c);
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LightningSweep, ::testing::ValuesIn(sweep()),
                         [](const auto& info) { return info.param.name(); });

TEST(Lightning, BlockSizeDoesNotChangeTheResult) {
  Case c;
  c.heads = 4, c.n = 150, c.dim = 32, c.dim_v = 24, c.with_state = true;
  const Inputs in(c);
  const Result mag = magnitude(c, in);
  c.block = 64;
  const Result base = run(c, in, false);
  for (int64_t block : {16, 32, 1, 7, 150, 256}) {
    c.block = block;
    const Result other = run(c, in, false);
    expect_close(other.out, base.out, mag.out, 2 * factor(c), "block " + std::to_string(block));
    expect_close(other.state, base.state, mag.state, 2 * factor(c),
                 "state, block " + std::to_string(block));
  }
}

// lambda = 1: plain causal linear attention, written out here independently of the oracle.
TEST(Lightning, NoDecayIsCausalLinearAttention) {
  Case c;
  c.heads = 2, c.n = 90, c.dim = 8, c.dim_v = 5, c.block = 32;
  Inputs in(c);
  in.slopes = {0.0f, 0.0f};
  const Result fast = run(c, in, false);
  Tensor want({c.batch, c.heads, c.n, c.dim_v}, DType::kF32), mag = want;
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t e = 0; e < c.dim_v; ++e) {
        double o = 0.0, m = 0.0;
        for (int64_t s = 0; s <= t; ++s) {
          double qk = 0.0, qk_abs = 0.0;
          for (int64_t d = 0; d < c.dim; ++d) {
            qk += double(in.q.view().get(0, h, t, d)) * in.k.view().get(0, h, s, d);
            qk_abs += std::fabs(double(in.q.view().get(0, h, t, d)) * in.k.view().get(0, h, s, d));
          }
          o += qk * in.v.view().get(0, h, s, e);
          m += qk_abs * std::fabs(in.v.view().get(0, h, s, e));
        }
        want.view().set(0, h, t, e, static_cast<float>(o));
        mag.view().set(0, h, t, e, static_cast<float>(m));
      }
  expect_close(fast.out, want, mag, factor(c), "no decay");
}

// The official interface splits D > 128 into chunks and sums their outputs: O is linear in the
// split of q . k, so the whole equals the sum.
TEST(Lightning, SplitHeadDimSumsToTheWhole) {
  Case c;
  c.heads = 2, c.n = 100, c.dim = 192, c.dim_v = 32;
  const Inputs in(c);
  const Result whole = run(c, in, false), mag = magnitude(c, in);
  Tensor sum({c.batch, c.heads, c.n, c.dim_v}, DType::kF32);
  for (auto [lo, width] : {std::pair<int64_t, int64_t>{0, 128}, {128, 64}}) {
    Case part = c;
    part.dim = width;
    Inputs p(part);
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t d = 0; d < width; ++d) {
          p.q.view().set(0, h, t, d, in.q.view().get(0, h, t, lo + d));
          p.k.view().set(0, h, t, d, in.k.view().get(0, h, t, lo + d));
        }
    p.v = in.v;
    const Result r = run(part, p, false);
    for (int64_t e = 0; e < sum.numel(); ++e) sum.f32()[e] += r.out.f32()[e];
  }
  expect_close(sum, whole.out, mag.out, factor(c), "split D");
}

// Decode: one call per token with the state carried equals the prefill's rows and final state;
// so does a prefill in uneven chunks.
TEST(Lightning, DecodeAndChunkedPrefillEqualOneCall) {
  Case c;
  c.heads = 3, c.n = 70, c.dim = 16, c.dim_v = 12, c.block = 16, c.with_state = true;
  const Inputs in(c);
  const Result whole = run(c, in, false), mag = magnitude(c, in);
  for (int64_t chunk : {1, 9, 40}) {
    Tensor out({c.batch, c.heads, c.n, c.dim_v}, DType::kF32);
    Tensor state = in.state_in;
    for (int64_t t0 = 0; t0 < c.n; t0 += chunk) {
      const int64_t len = std::min(chunk, c.n - t0);
      Case part = c;
      part.n = len;
      Inputs p(part);
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t t = 0; t < len; ++t) {
          for (int64_t d = 0; d < c.dim; ++d) {
            p.q.view().set(0, h, t, d, in.q.view().get(0, h, t0 + t, d));
            p.k.view().set(0, h, t, d, in.k.view().get(0, h, t0 + t, d));
          }
          for (int64_t e = 0; e < c.dim_v; ++e)
            p.v.view().set(0, h, t, e, in.v.view().get(0, h, t0 + t, e));
        }
      p.state_in = state;
      const Result r = run(part, p, false);
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t t = 0; t < len; ++t)
          for (int64_t e = 0; e < c.dim_v; ++e)
            out.view().set(0, h, t0 + t, e, r.out.view().get(0, h, t, e));
      state = r.state;
    }
    expect_close(out, whole.out, mag.out, 2 * factor(c), "chunk " + std::to_string(chunk));
    expect_close(state, whole.state, mag.state, 2 * factor(c),
                 "state, chunk " + std::to_string(chunk));
  }
}

TEST(Lightning, OfficialSlopeRule) {
  // Powers of two: 2^(-8 (h + 1) / H).
  const std::vector<float> eight = lightning_slopes(8);
  for (int h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(eight[h], std::exp2(-(h + 1.0f)));
  // 12 heads: the 8 slopes above, then slopes 0, 2, 4, 6 of the 16-head rule.
  const std::vector<float> twelve = lightning_slopes(12);
  ASSERT_EQ(twelve.size(), 12u);
  for (int h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(twelve[h], eight[h]);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(twelve[8 + i], std::exp2(-0.5f * (2 * i + 1)));
  EXPECT_FLOAT_EQ(lightning_slopes(1)[0], 1.0f / 256.0f);
  EXPECT_EQ(lightning_slopes(20).size(), 20u);
}

// --- Backward ---

struct Grads {
  Tensor dq, dk, dv, dstate;
};

struct BackwardCase {
  Case shape;
  bool with_dstate_out = false;
};

Grads run_backward(const Case& c, const Inputs& in, const Tensor& dout, const Tensor& dstate_out,
                   bool reference, bool want_dstate = true) {
  Grads g{testing::nan_filled({c.batch, c.heads, c.n, c.dim}),
          testing::nan_filled({c.batch, c.heads, c.n, c.dim}),
          testing::nan_filled({c.batch, c.heads, c.n, c.dim_v}),
          testing::nan_filled({c.batch, c.heads, c.dim, c.dim_v})};
  Tensor unused_out({c.batch, c.heads, c.n, c.dim_v}, DType::kF32);
  LightningBackwardArgs a;
  a.forward = in.args(c, unused_out, nullptr);
  a.dout = dout.view();
  if (dstate_out.numel()) a.dstate_out = dstate_out.view();
  a.dq = g.dq.view(), a.dk = g.dk.view(), a.dv = g.dv.view();
  if (want_dstate) a.dstate_in = g.dstate.view();
  if (reference) {
    lightning_attention_backward_reference(a);
  } else {
    const testing::TargetScope on(c.target);
    lightning_attention_backward(a);
  }
  return g;
}

class LightningBackward : public ::testing::TestWithParam<BackwardCase> {};

TEST_P(LightningBackward, MatchesTheOracle) {
  const BackwardCase bc = GetParam();
  const Case& c = bc.shape;
  const Inputs in(c);
  const Tensor dout = random_normal({c.batch, c.heads, c.n, c.dim_v}, c.dtype, 11);
  const Tensor dstate =
      bc.with_dstate_out ? random_normal({c.batch, c.heads, c.dim, c.dim_v}, DType::kF32, 12)
                         : Tensor();
  const Grads fast = run_backward(c, in, dout, dstate, false);
  const Grads ref = run_backward(c, in, dout, dstate, true);
  Inputs abs = in;
  abs.q = absolute(in.q), abs.k = absolute(in.k), abs.v = absolute(in.v);
  if (in.state_in.numel()) abs.state_in = absolute(in.state_in);
  Case f32 = c;
  f32.dtype = DType::kF32;
  const Grads mag = run_backward(f32, abs, absolute(dout),
                                 dstate.numel() ? absolute(dstate) : Tensor(), true);
  const std::string name = c.name() + (bc.with_dstate_out ? "_dstate" : "");
  expect_close(fast.dq, ref.dq, mag.dq, factor(c), name + " dQ");
  expect_close(fast.dk, ref.dk, mag.dk, factor(c), name + " dK");
  expect_close(fast.dv, ref.dv, mag.dv, factor(c), name + " dV");
  expect_close(fast.dstate, ref.dstate, mag.dstate, factor(c), name + " dS0");
  // Without dstate_in the first block's G update is skipped; the rest is the same.
  const Grads no_dstate = run_backward(c, in, dout, dstate, false, false);
  EXPECT_EQ(testing::max_abs_difference(no_dstate.dq, fast.dq), 0.0) << name;
  EXPECT_EQ(testing::max_abs_difference(no_dstate.dk, fast.dk), 0.0) << name;
  EXPECT_EQ(testing::max_abs_difference(no_dstate.dv, fast.dv), 0.0) << name;
}

std::vector<BackwardCase> backward_sweep() {
  std::vector<BackwardCase> cases;
  for (int64_t target : testing::simd_targets())
    for (int64_t n : {1, 33, 64, 129})
      for (bool state : {false, true}) {
        BackwardCase b;
        b.shape.n = n, b.shape.with_state = state, b.shape.target = target;
        b.shape.dim = 12, b.shape.dim_v = 20, b.shape.block = 32;
        b.with_dstate_out = state;
        cases.push_back(b);
      }
  BackwardCase half;
  half.shape.dtype = DType::kBF16, half.shape.n = 90, half.shape.heads = 3;
  half.with_dstate_out = true;
  cases.push_back(half);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LightningBackward, ::testing::ValuesIn(backward_sweep()),
                         [](const auto& info) {
                           return info.param.shape.name() +
                                  (info.param.with_dstate_out ? "_dstate" : "");
                         });

// The oracle's gradients against central differences of L = <W, O> + <G, S>, both computed in
// double from the stored inputs.
double loss(const Case& c, const Inputs& in, const Tensor& w_out, const Tensor& w_state) {
  const TensorView q = in.q.view(), k = in.k.view(), v = in.v.view(), s0 = in.state_in.view();
  double total = 0.0;
  for (int64_t h = 0; h < c.heads; ++h) {
    const double lambda = std::exp(-double(in.slopes[h]));
    std::vector<double> state(c.dim * c.dim_v);
    for (int64_t x = 0; x < c.dim * c.dim_v; ++x) state[x] = s0.get(0, h, x / c.dim_v, x % c.dim_v);
    for (int64_t t = 0; t < c.n; ++t) {  // the recurrence
      for (int64_t d = 0; d < c.dim; ++d)
        for (int64_t e = 0; e < c.dim_v; ++e)
          state[d * c.dim_v + e] =
              lambda * state[d * c.dim_v + e] + double(k.get(0, h, t, d)) * v.get(0, h, t, e);
      for (int64_t e = 0; e < c.dim_v; ++e) {
        double o = 0.0;
        for (int64_t d = 0; d < c.dim; ++d) o += double(q.get(0, h, t, d)) * state[d * c.dim_v + e];
        total += o * w_out.view().get(0, h, t, e);
      }
    }
    for (int64_t x = 0; x < c.dim * c.dim_v; ++x)
      total += state[x] * w_state.view().get(0, h, x / c.dim_v, x % c.dim_v);
  }
  return total;
}

TEST(LightningBackwardOracle, EqualsFiniteDifferences) {
  Case c;
  c.heads = 2, c.n = 6, c.dim = 3, c.dim_v = 2, c.with_state = true;
  Inputs in(c);
  in.slopes = {0.3f, 0.05f};
  const Tensor dout = random_normal({1, c.heads, c.n, c.dim_v}, DType::kF32, 21);
  const Tensor dstate = random_normal({1, c.heads, c.dim, c.dim_v}, DType::kF32, 22);
  const Grads g = run_backward(c, in, dout, dstate, true);
  for (auto [tensor, grad, name] :
       {std::tuple{&in.q, &g.dq, "dQ"}, {&in.k, &g.dk, "dK"}, {&in.v, &g.dv, "dV"},
        {&in.state_in, &g.dstate, "dS0"}}) {
    float* x = tensor->f32();
    for (int64_t e = 0; e < tensor->numel(); ++e) {
      const float original = x[e], step = 1e-2f;
      x[e] = original + step;
      const double up = x[e], f_up = loss(c, in, dout, dstate);
      x[e] = original - step;
      const double down = x[e], f_down = loss(c, in, dout, dstate);
      x[e] = original;
      const double numeric = (f_up - f_down) / (up - down);  // exact: L is bilinear in each input
      EXPECT_NEAR(grad->f32()[e], numeric, 1e-5 + 1e-5 * std::fabs(numeric)) << name << e;
    }
  }
}

// --- Errors ---

TEST(Lightning, ErrorsNameTheArgument) {
  Case c;
  c.n = 10;
  const Inputs in(c);
  Tensor out({1, c.heads, c.n, c.dim_v}, DType::kF32);
  auto expect_error = [&](LightningArgs a, const std::string& argument) {
    try {
      lightning_attention(a);
      ADD_FAILURE() << "no error for " << argument;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
    }
  };
  LightningArgs a = in.args(c, out, nullptr);
  LightningArgs bad = a;
  bad.slopes = {0.1f};
  expect_error(bad, "slopes");
  bad.slopes = {0.1f, -0.5f};
  expect_error(bad, "slopes");
  bad.slopes = {0.1f, NAN};
  expect_error(bad, "slopes");
  bad = a;
  bad.block = 0;
  expect_error(bad, "block");
  bad = a;
  const Tensor short_k = random_normal({1, c.heads, c.n - 1, c.dim}, DType::kF32, 3);
  bad.k = short_k.view();
  expect_error(bad, "k");
  bad = a;
  const Tensor wrong_state = random_normal({1, c.heads, c.dim, c.dim_v + 1}, DType::kF32, 3);
  bad.state_in = wrong_state.view();
  expect_error(bad, "state_in");
  bad = a;
  const Tensor half_v = in.v.to(DType::kF16);
  bad.v = half_v.view();
  expect_error(bad, "k");
  bad = a;
  bad.out = MutableTensorView{};
  expect_error(bad, "out");
}

}  // namespace
}  // namespace attnkit
