// Score modifiers (AttentionArgs::row_scale, position_scale, output_gate, head_modes): the tile,
// decode and block-sparse kernels against the reference with the same modifiers over a sweep;
// the rule itself against explicit computations (q scaled by 1 + s ln(i), the prefix mean of V,
// a gated output); ones bit-identical to no modifiers; decode equal to prefill with the position
// rule; the backward against the reference and the reference against finite differences.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/block_mask.h"
#include "attnkit/error.h"
#include "support/attention_check.h"
#include "support/backward_check.h"
#include "support/random_mask.h"

namespace attnkit {
namespace {

using testing::Problem;

// The modifiers of one case, with the tensors they point at.
struct Modifiers {
  Tensor row_scale, gate;
  std::vector<HeadMode> modes;
  float position_scale = 0.0f;
  int64_t first_position = -1;

  // Random temperatures in [0, 1.5] and gates in [-1, 2], some of each exactly 0; heads cycle
  // through normal, uniform and zero when `with_modes`.
  static Modifiers random(const Problem& p, uint64_t seed, bool with_modes) {
    Modifiers m;
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_real_distribution<float> tau(0.0f, 1.5f), gate(-1.0f, 2.0f);
    m.row_scale = Tensor({p.batch, p.heads_q, p.nq}, DType::kF32);
    m.gate = Tensor({p.batch, p.heads_q, p.nq}, DType::kF32);
    for (int64_t x = 0; x < m.row_scale.numel(); ++x) {
      m.row_scale.f32()[x] = x % 7 == 3 ? 0.0f : tau(rng);
      m.gate.f32()[x] = x % 5 == 2 ? 0.0f : gate(rng);
    }
    if (with_modes)
      for (int64_t h = 0; h < p.heads_q; ++h) m.modes.push_back(static_cast<HeadMode>(h % 3));
    m.position_scale = 0.05f;
    return m;
  }
  void apply(AttentionArgs& a) const {
    if (row_scale.numel()) a.row_scale = row_scale.rows_view();
    if (gate.numel()) a.output_gate = gate.rows_view();
    a.head_modes = modes.empty() ? nullptr : modes.data();
    a.position_scale = position_scale;
    a.first_position = first_position;
  }
};

// Shapes for the tile kernel (Nq > 16), the decode kernel (Nq <= 16 with a long cache) and both
// with GQA, every dtype, causal or not.
std::vector<Problem> sweep() {
  std::vector<Problem> out;
  const std::vector<std::array<int64_t, 5>> shapes = {// heads_q, heads_kv, nq, nk, dim
                                                      {1, 1, 1, 1, 64},     {2, 1, 37, 37, 64},
                                                      {4, 2, 130, 200, 80}, {6, 3, 1, 1500, 64},
                                                      {4, 2, 5, 1100, 48},  {3, 1, 16, 16, 32},
                                                      {2, 1, 600, 1400, 64}};  // grouped order
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16})
    for (bool causal : {false, true})
      for (const auto& s : shapes) {
        Problem p;
        p.heads_q = s[0], p.heads_kv = s[1], p.nq = s[2], p.nk = s[3], p.dim = s[4];
        p.dim_v = 48, p.dtype = dtype, p.causal = causal;
        p.threads = p.nq > 512 ? 1 : 0;  // one thread: groups of tiles (make_tile_plan)
        out.push_back(p);
      }
  return testing::on_every_target(out);
}

class ScoreModifiers : public ::testing::TestWithParam<Problem> {};

// attention(args) or attention(args, *mask) with the modifiers `m`, on p.target, against the
// reference with the same modifiers (and the mask's rule).
void expect_modified_matches(const Problem& p, const Modifiers& m, const BlockMask* mask,
                             const std::string& label) {
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = p.causal, a.threads = p.threads;
  m.apply(a);
  {
    const testing::TargetScope on(p.target);
    mask ? attention(a, *mask) : attention(a);
  }
  AttentionArgs r = a;
  r.out = in.ref_out.view(), r.lse = in.ref_lse.rows_view();
  attention_reference(r, mask ? testing::mask_rule(*mask) : ElementPredicate{});
  testing::expect_matches_reference(a, r, label);
}

TEST_P(ScoreModifiers, KernelsMatchTheReference) {
  const Problem& p = GetParam();
  for (bool with_modes : {false, true})
    expect_modified_matches(p, Modifiers::random(p, p.seed + 10, with_modes), nullptr,
                            p.name() + (with_modes ? "_modes" : ""));
}

// A random block mask (FULL and PARTIAL entries) with the modifiers: the block-sparse tile
// kernel, and for one query block of few queries the decode kernel, against the reference.
TEST_P(ScoreModifiers, BlockSparseMatchesTheReference) {
  const Problem& p = GetParam();
  testing::MaskCase c;
  c.problem = p, c.q_block = 16, c.kv_block = 16, c.per_head = true, c.keep = 0.5;
  std::mt19937 rng(5);
  const BlockMask mask = testing::random_mask(c, rng);
  expect_modified_matches(p, Modifiers::random(p, p.seed + 20, true), &mask, p.name());
}

INSTANTIATE_TEST_SUITE_P(Sweep, ScoreModifiers, ::testing::ValuesIn(sweep()),
                         [](const auto& info) { return info.param.name(); });

// Ones everywhere (and normal heads) give the bits of a call without modifiers, on the tile
// kernel, the decode kernel and the backward.
TEST(ScoreModifiers, OnesAreBitIdenticalToNone) {
  for (auto [nq, nk] : {std::pair<int64_t, int64_t>{70, 90}, {3, 1200}}) {
    Problem p;
    p.heads_q = 4, p.heads_kv = 2, p.nq = nq, p.nk = nk, p.causal = true;
    testing::Inputs plain = testing::make_inputs(p), ones = testing::make_inputs(p);
    Tensor one({p.batch, p.heads_q, p.nq}, DType::kF32);
    std::fill(one.f32(), one.f32() + one.numel(), 1.0f);
    std::vector<HeadMode> normal(p.heads_q, HeadMode::kNormal);
    AttentionArgs a = plain.args(), b = ones.args();
    a.causal = b.causal = true;
    b.row_scale = one.rows_view(), b.output_gate = one.rows_view(), b.head_modes = normal.data();
    attention(a);
    attention(b);
    for (int64_t x = 0; x < plain.out.numel(); ++x)
      ASSERT_EQ(plain.out.f32()[x], ones.out.f32()[x]) << x;
    for (int64_t x = 0; x < plain.lse.numel(); ++x)
      ASSERT_EQ(plain.lse.f32()[x], ones.lse.f32()[x]) << x;
    const Tensor dout = random_normal({p.batch, p.heads_q, p.nq, p.dim_v}, DType::kF32, 9);
    testing::Gradients ga = testing::nan_gradients(p), gb = testing::nan_gradients(p);
    BackwardArgs ba, bb;
    ba.forward = a, bb.forward = b;
    ba.dout = bb.dout = dout.view();
    ba.dq = ga.dq.view(), ba.dk = ga.dk.view(), ba.dv = ga.dv.view();
    bb.dq = gb.dq.view(), bb.dk = gb.dk.view(), bb.dv = gb.dv.view();
    attention_backward(ba);
    attention_backward(bb);
    for (int64_t x = 0; x < ga.dq.numel(); ++x) ASSERT_EQ(ga.dq.f32()[x], gb.dq.f32()[x]) << x;
    for (int64_t x = 0; x < ga.dk.numel(); ++x) ASSERT_EQ(ga.dk.f32()[x], gb.dk.f32()[x]) << x;
    for (int64_t x = 0; x < ga.dv.numel(); ++x) ASSERT_EQ(ga.dv.f32()[x], gb.dv.f32()[x]) << x;
  }
}

// The rules written out: Selective Attention's position temperature equals scaling each query by
// 1 + s ln(position + 1) (1-based absolute position), a gate multiplies the output and keeps the
// LSE, a uniform head is the prefix mean of V, a zero head is 0.
TEST(ScoreModifiers, RulesEqualTheirDefinitions) {
  for (int64_t nq : {int64_t{40}, int64_t{4}}) {  // tile kernel, decode kernel
    Problem p;
    p.heads_q = 3, p.heads_kv = 1, p.nq = nq, p.nk = 1100, p.dim = 32, p.dim_v = 16;
    p.causal = true;
    testing::Inputs in = testing::make_inputs(p);
    const float s = 0.2f;
    const int64_t first = 5000;  // absolute position of row 0 (a cache that dropped tokens)
    Tensor gate({p.batch, p.heads_q, p.nq}, DType::kF32);
    for (int64_t x = 0; x < gate.numel(); ++x) gate.f32()[x] = 0.25f * float(x % 5) - 0.5f;
    const std::vector<HeadMode> modes = {HeadMode::kNormal, HeadMode::kUniform, HeadMode::kZero};
    AttentionArgs a = in.args();
    a.causal = true, a.position_scale = s, a.first_position = first;
    a.output_gate = gate.rows_view(), a.head_modes = modes.data();
    attention(a);
    // Head 0: plain attention over q_i * (1 + s ln(first + i + 1)), times the gate.
    Tensor scaled = in.q.to(DType::kF32);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t d = 0; d < p.dim; ++d) {
        const double tau = 1.0 + double(s) * std::log(double(first + i + 1));
        scaled.view().set(0, 0, i, d, float(tau * in.q.view().get(0, 0, i, d)));
      }
    AttentionArgs plain = in.args();
    plain.q = scaled.view(), plain.causal = true;
    plain.out = in.ref_out.view(), plain.lse = in.ref_lse.rows_view();
    attention_reference(plain);
    for (int64_t i = 0; i < nq; ++i) {
      const float g0 = gate.rows_view().get(0, 0, i, 0);
      for (int64_t d = 0; d < p.dim_v; ++d)
        ASSERT_NEAR(in.out.view().get(0, 0, i, d), g0 * in.ref_out.view().get(0, 0, i, d), 2e-5)
            << "head 0 row " << i;
      ASSERT_NEAR(in.lse.rows_view().get(0, 0, i, 0), in.ref_lse.rows_view().get(0, 0, i, 0), 2e-4);
      // Head 1: the gated mean of V over keys 0 .. i + Nk - Nq; its LSE ln(count).
      const int64_t seen = i + p.nk - p.nq + 1;
      const float g1 = gate.rows_view().get(0, 1, i, 0);
      for (int64_t d = 0; d < p.dim_v; ++d) {
        double mean = 0.0;
        for (int64_t j = 0; j < seen; ++j) mean += in.v.view().get(0, 0, j, d);
        ASSERT_NEAR(in.out.view().get(0, 1, i, d), g1 * mean / double(seen), 2e-5) << "row " << i;
      }
      ASSERT_NEAR(in.lse.rows_view().get(0, 1, i, 0), std::log(double(seen)), 1e-4);
      // Head 2: zero output.
      for (int64_t d = 0; d < p.dim_v; ++d) ASSERT_EQ(in.out.view().get(0, 2, i, d), 0.0f);
    }
  }
}

// Without an LSE to return, rows whose gate is 0 are skipped: O = 0, and their pairs are not
// attended (tile and decode kernels).
TEST(ScoreModifiers, SilencedHeadsAreSkipped) {
  for (int64_t nq : {int64_t{70}, int64_t{2}}) {
    Problem p;
    p.heads_q = 3, p.heads_kv = 3, p.nq = nq, p.nk = 1100, p.causal = true;
    testing::Inputs in = testing::make_inputs(p);
    const std::vector<HeadMode> modes = {HeadMode::kNormal, HeadMode::kZero, HeadMode::kZero};
    AttentionArgs a = in.args();
    a.causal = true, a.lse = {}, a.head_modes = modes.data();
    int64_t pairs = 0;
    a.attended_pairs = &pairs;
    attention(a);
    for (int64_t h = 1; h < 3; ++h)
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t d = 0; d < p.dim_v; ++d) ASSERT_EQ(in.out.view().get(0, h, i, d), 0.0f);
    EXPECT_EQ(pairs, int64_t(dense_pairs(nq, p.nk, true))) << "only head 0 attends";
  }
}

// With the position rule and first_position < 0 (bottom-right positions), each decode step
// (one query against the keys so far) equals the same row of the prefill.
TEST(ScoreModifiers, DecodeEqualsPrefillWithThePositionRule) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 60, p.nk = 60, p.dim = 64, p.dim_v = 64, p.causal = true;
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs prefill = in.args();
  prefill.causal = true, prefill.position_scale = 0.3f;
  attention(prefill);
  Tensor step_out({1, p.heads_q, 1, p.dim_v}, DType::kF32);
  for (int64_t t = 0; t < p.nq; ++t) {
    AttentionArgs step = prefill;
    step.q = in.q.view(), step.q.shape[2] = 1;
    step.q.data = in.q.f32() + t * p.dim;  // row t of every head (strides unchanged)
    step.k.shape[2] = step.v.shape[2] = t + 1;
    step.out = step_out.view(), step.lse = {};
    attention_decode(step);
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t d = 0; d < p.dim_v; ++d)
        ASSERT_NEAR(step_out.view().get(0, h, 0, d), in.out.view().get(0, h, t, d), 2e-6)
            << "step " << t << " head " << h;
  }
  // The rule is not a no-op here: without it row 59 differs.
  AttentionArgs plain = prefill;
  plain.position_scale = 0.0f, plain.out = in.ref_out.view(), plain.lse = {};
  attention(plain);
  EXPECT_GT(std::fabs(in.ref_out.view().get(0, 0, 59, 0) - in.out.view().get(0, 0, 59, 0)), 1e-4);
}

// The fast backward with modifiers against the reference, tile path and block-sparse path.
TEST(ScoreModifiers, BackwardMatchesTheReference) {
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (bool causal : {false, true})
      for (auto [nq, nk] : {std::pair<int64_t, int64_t>{70, 90}, {5, 33}}) {
        Problem p;
        p.heads_q = 3, p.heads_kv = 1, p.nq = nq, p.nk = nk, p.dim = 40, p.dim_v = 24;
        p.dtype = dtype, p.causal = causal;
        const Modifiers m = Modifiers::random(p, 31, true);
        testing::BackwardInputs in =
            testing::make_backward_inputs(p, true, [](const AttentionArgs&) {});
        m.apply(in.forward);
        attention(in.forward);
        testing::Gradients fast = testing::nan_gradients(p), exact = testing::nan_gradients(p),
                           naive = testing::nan_gradients(p);
        attention_backward(in.args(fast));
        attention_backward_reference(in.args(exact));
        attention_backward_reference_f32(in.args(naive));
        const double s = testing::max_abs_score_sum(in.forward) * 1.5;
        const std::string label = p.name();
        testing::expect_gradient_close(fast.dq, exact.dq, naive.dq, s, label + " dQ");
        testing::expect_gradient_close(fast.dk, exact.dk, naive.dk, s, label + " dK");
        testing::expect_gradient_close(fast.dv, exact.dv, naive.dv, s, label + " dV");
      }
}

// L = sum W . O + sum w . LSE with O = gate * softmax(tau * scale * q k) V written out here.
double modified_loss(const AttentionArgs& a, const std::vector<double>& tau,
                     const std::vector<double>& gate, const Tensor& w_out, const Tensor& w_lse) {
  const int64_t nq = a.q.shape[2], nk = a.k.shape[2], dim = a.q.shape[3], dim_v = a.v.shape[3];
  const double scale = effective_scale(a);
  double total = 0.0;
  for (int64_t h = 0; h < a.q.shape[1]; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t row = h * nq + i;
      std::vector<double> s;
      for (int64_t j = 0; j <= i + nk - nq; ++j) {
        double dot = 0.0;
        for (int64_t d = 0; d < dim; ++d) dot += double(a.q.get(0, h, i, d)) * a.k.get(0, 0, j, d);
        s.push_back(tau[row] * scale * dot);
      }
      double top = *std::max_element(s.begin(), s.end()), sum = 0.0;
      for (double x : s) sum += std::exp(x - top);
      const double lse = top + std::log(sum);
      total += lse * w_lse.rows_view().get(0, h, i, 0);
      for (int64_t d = 0; d < dim_v; ++d) {
        double o = 0.0;
        for (size_t j = 0; j < s.size(); ++j) o += std::exp(s[j] - lse) * a.v.get(0, 0, j, d);
        total += gate[row] * o * w_out.view().get(0, h, i, d);
      }
    }
  return total;
}

TEST(ScoreModifiers, ReferenceBackwardEqualsFiniteDifferences) {
  Problem p;
  p.heads_q = 2, p.heads_kv = 1, p.nq = 4, p.nk = 6, p.dim = 3, p.dim_v = 2, p.causal = true;
  Modifiers m;
  m.row_scale = Tensor({1, 2, 4}, DType::kF32);
  m.gate = Tensor({1, 2, 4}, DType::kF32);
  const float taus[8] = {1.0f, 0.5f, 1.7f, 0.0f, 1.2f, 0.9f, 2.0f, 0.3f};
  const float gates[8] = {1.0f, -0.5f, 0.0f, 2.0f, 0.7f, 1.3f, 1.0f, -1.1f};
  std::copy(taus, taus + 8, m.row_scale.f32());
  std::copy(gates, gates + 8, m.gate.f32());
  m.position_scale = 0.4f;
  std::vector<double> tau(8), gate(gates, gates + 8);
  for (int64_t r = 0; r < 8; ++r) tau[r] = taus[r] * (1.0 + 0.4 * std::log(double(r % 4 + 3)));
  testing::BackwardInputs in = testing::make_backward_inputs(p, true, [](const AttentionArgs&) {});
  m.apply(in.forward);
  attention_reference(in.forward);
  testing::Gradients g = testing::nan_gradients(p);
  attention_backward_reference(in.args(g));
  Tensor q = in.in.q, k = in.in.k, v = in.in.v;
  auto f = [&] {
    AttentionArgs a = in.forward;
    a.q = q.view(), a.k = k.view(), a.v = v.view();
    return modified_loss(a, tau, gate, in.dout, in.dlse);
  };
  for (auto [t, grad, name] : {std::tuple<Tensor*, Tensor*, const char*>{&q, &g.dq, "dQ"},
                               {&k, &g.dk, "dK"},
                               {&v, &g.dv, "dV"}}) {
    float* x = t->f32();
    for (int64_t e = 0; e < t->numel(); ++e) {
      const float original = x[e], step = 1e-3f * std::max(1.0f, std::fabs(original));
      x[e] = original + step;
      const double up = x[e], f_up = f();
      x[e] = original - step;
      const double down = x[e], f_down = f();
      x[e] = original;
      const double numeric = (f_up - f_down) / (up - down);
      EXPECT_NEAR(grad->f32()[e], numeric, 2e-5 + 1e-4 * std::fabs(numeric)) << name << e;
    }
  }
}

// Column sums are those of the modified probabilities.
TEST(ScoreModifiers, ColumnSumsUseTheTemperature) {
  Problem p;
  p.heads_q = 4, p.heads_kv = 2, p.nq = 30, p.nk = 50, p.dim = 32, p.causal = true;
  const Modifiers m = Modifiers::random(p, 3, true);
  testing::Inputs in = testing::make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = true;
  m.apply(a);
  attention(a);
  Tensor fast({1, 4, 50, 1}, DType::kF32), exact({1, 4, 50, 1}, DType::kF32);
  attention_column_sums(a, fast.view());
  attention_column_sums_reference(a, exact.view());
  for (int64_t x = 0; x < fast.numel(); ++x)
    ASSERT_NEAR(fast.f32()[x], exact.f32()[x], 1e-4 * (1.0 + std::fabs(exact.f32()[x]))) << x;
}

TEST(ScoreModifiers, BadModifiersAreErrorsNamingThem) {
  Problem p;
  p.heads_q = 2, p.nq = 3, p.nk = 5;
  testing::Inputs in = testing::make_inputs(p);
  auto error_of = [&](const std::function<void(AttentionArgs&)>& edit) {
    AttentionArgs a = in.args();
    edit(a);
    try {
      attention(a);
    } catch (const Error& e) {
      return e.argument();
    }
    return std::string("none");
  };
  Tensor short_scale({1, 2, 2}, DType::kF32), nan_gate({1, 2, 3}, DType::kF32);
  std::fill(short_scale.f32(), short_scale.f32() + short_scale.numel(), 1.0f);
  std::fill(nan_gate.f32(), nan_gate.f32() + nan_gate.numel(), 1.0f);
  nan_gate.f32()[4] = std::nanf("");
  const std::vector<uint8_t> bad_modes = {0, 7};
  EXPECT_EQ(error_of([&](AttentionArgs& a) { a.row_scale = short_scale.rows_view(); }),
            "row_scale");
  EXPECT_EQ(error_of([&](AttentionArgs& a) { a.output_gate = nan_gate.rows_view(); }),
            "output_gate");
  EXPECT_EQ(error_of([&](AttentionArgs& a) { a.position_scale = -0.1f; }), "position_scale");
  EXPECT_EQ(error_of([&](AttentionArgs& a) {
              a.head_modes = reinterpret_cast<const HeadMode*>(bad_modes.data());
            }),
            "head_modes");
  EXPECT_EQ(error_of([](AttentionArgs&) {}), "none");
}

}  // namespace
}  // namespace attnkit
