// SOFT (include/attnkit/soft.h): the f32 operator against the double oracle, forward and
// backward, over odd shapes (given landmarks, pooled on a sequence or a grid with remainders,
// Newton or exact inverse, every dtype, every SIMD target); the Newton iteration against its
// closed-form spectral filter, and its distance from the true inverse; landmarks = tokens with
// the exact inverse equal to G(Q', Q') V; the oracle's gradients against finite differences;
// errors naming the argument.
#include "attnkit/soft.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "eval/inputs.h"
#include "operators/soft_common.h"
#include "support/attention_check.h"
#include "support/operator_check.h"

namespace attnkit {
namespace {

struct Case {
  int64_t batch = 1, heads = 2, n = 64, dim = 16, dim_v = 8;
  int64_t given = 0;                     // landmarks given (their count), else pooled
  int64_t grid_h = 0, grid_w = 0, stride = 4;
  SoftInverse inverse = SoftInverse::kNewton;
  DType dtype = DType::kF32;
  float spread = 1.0f;  // stddev of q and of given landmarks: larger separates the points
  int64_t target = 0;
  std::string name() const {
    std::string s = "B";  // append(), not operator+ chains: GCC 12's false -Wrestrict
    s.append(std::to_string(batch)).append("_H").append(std::to_string(heads));
    s.append("_N").append(std::to_string(n)).append("_D").append(std::to_string(dim));
    s.append("_E").append(std::to_string(dim_v)).append("_");
    if (given) {
      s.append("given").append(std::to_string(given));
    } else if (grid_h) {
      s.append("grid").append(std::to_string(grid_h)).append("x").append(std::to_string(grid_w));
      s.append("_sr").append(std::to_string(stride));
    } else {
      s.append("pool").append(std::to_string(stride));
    }
    s.append(inverse == SoftInverse::kExact ? "_exact_" : "_newton_").append(dtype_name(dtype));
    if (target != 0) s.append("_").append(hwy::TargetName(target));
    return s;
  }
};

struct Inputs {
  Tensor q, v, landmarks, dout;
  explicit Inputs(const Case& c)
      : q(random_normal({c.batch, c.heads, c.n, c.dim}, c.dtype, 1, c.spread)),
        v(random_normal({c.batch, c.heads, c.n, c.dim_v}, c.dtype, 2)),
        dout(random_normal({c.batch, c.heads, c.n, c.dim_v}, DType::kF32, 4)) {
    if (c.given)
      landmarks = random_normal({c.batch, c.heads, c.given, c.dim}, DType::kF32, 3,
                                0.5f * c.spread);
  }
  SoftArgs args(const Case& c, Tensor& out) const {
    SoftArgs a;
    a.q = q.view(), a.v = v.view();
    if (landmarks.numel()) a.landmarks = landmarks.view();
    a.grid_height = c.grid_h, a.grid_width = c.grid_w, a.stride = c.given ? 0 : c.stride;
    a.inverse = c.inverse;
    a.out = out.view();
    return a;
  }
};

struct Result {
  Tensor out, dq, dv, dl;
};

Result run(const Case& c, const Inputs& in, bool reference) {
  Result r{testing::nan_filled({c.batch, c.heads, c.n, c.dim_v}),
           testing::nan_filled({c.batch, c.heads, c.n, c.dim}),
           testing::nan_filled({c.batch, c.heads, c.n, c.dim_v}),
           testing::nan_filled({c.batch, c.heads, std::max<int64_t>(c.given, 1), c.dim})};
  SoftBackwardArgs g;
  g.forward = in.args(c, r.out);
  g.dout = in.dout.view();
  g.dq = r.dq.view(), g.dv = r.dv.view();
  if (c.given) g.dlandmarks = r.dl.view();
  if (reference) {
    soft_attention_reference(g.forward);
    soft_attention_backward_reference(g);
  } else {
    const testing::TargetScope on(c.target);
    soft_attention(g.forward);
    soft_attention_backward(g);
  }
  return r;
}

// |got - want| <= tol * max|want| over the whole tensor: Newton's X has entries up to 1/0.01
// and the products cancel, so per-element magnitudes say little; f32 against double keeps
// about three to four digits of the largest entry.
void expect_close_in_norm(const Tensor& got, const Tensor& want, double tol,
                          const std::string& label) {
  double top = 0.0;
  for (int64_t e = 0; e < want.numel(); ++e) top = std::max(top, std::fabs(double(want.f32()[e])));
  const double worst = testing::max_abs_difference(got, want);
  EXPECT_LE(worst, tol * top + 1e-30) << label << ": max |error| " << worst << " against max "
                                      << top;
}

class SoftSweep : public ::testing::TestWithParam<Case> {};

TEST_P(SoftSweep, MatchesTheOracle) {
  const Case c = GetParam();
  const Inputs in(c);
  const Result fast = run(c, in, false), ref = run(c, in, true);
  const double tol = 2e-4;
  expect_close_in_norm(fast.out, ref.out, tol, c.name() + " O");
  expect_close_in_norm(fast.dq, ref.dq, tol, c.name() + " dQ");
  expect_close_in_norm(fast.dv, ref.dv, tol, c.name() + " dV");
  if (c.given) expect_close_in_norm(fast.dl, ref.dl, tol, c.name() + " dL");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  auto add = [&](Case c) { cases.push_back(c); };
  Case c;
  add(c);                                           // 16 pooled landmarks of 4 tokens
  c.n = 7, c.stride = 3, add(c);                    // a remainder token outside every window
  c.n = 1, c.stride = 1, add(c);                    // one token, its own landmark
  c = Case{}, c.n = 100, c.given = 5, c.dim = 33, c.dim_v = 17, add(c);
  c.given = 1, add(c);
  c = Case{}, c.n = 120, c.grid_h = 10, c.grid_w = 12, c.stride = 3, add(c);  // 3 x 4 landmarks
  c = Case{}, c.batch = 2, c.heads = 3, c.n = 64, c.grid_h = 8, c.grid_w = 8, c.stride = 2;
  add(c);
  c = Case{}, c.given = 12, c.spread = 3.0f, c.inverse = SoftInverse::kExact, add(c);
  c = Case{}, c.dtype = DType::kBF16, c.n = 50, c.stride = 5, add(c);
  c = Case{}, c.n = 300, c.grid_h = 15, c.grid_w = 20, c.stride = 5, add(c);  // two row chunks
  c = Case{}, c.n = 600, c.given = 9, c.dim_v = 5, add(c);                     // three
  c = Case{}, c.dtype = DType::kF16, c.n = 48, c.given = 8, add(c);
  std::vector<Case> out;
  for (int64_t target : testing::simd_targets())
    for (Case x : cases) {
      x.target = target;
      out.push_back(x);
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, SoftSweep, ::testing::ValuesIn(sweep()),
                         [](const auto& info) { return info.param.name(); });

// --- Newton against its closed form ---

// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: a = U diag(w) U^T.
void jacobi_eigen(std::vector<double> a, int64_t m, std::vector<double>& w,
                  std::vector<double>& u) {
  u.assign(m * m, 0.0);
  for (int64_t i = 0; i < m; ++i) u[i * m + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0;
    for (int64_t p = 0; p < m; ++p)
      for (int64_t q = p + 1; q < m; ++q) off += a[p * m + q] * a[p * m + q];
    if (off < 1e-30) break;
    for (int64_t p = 0; p < m; ++p)
      for (int64_t q = p + 1; q < m; ++q) {
        if (std::fabs(a[p * m + q]) < 1e-300) continue;
        const double theta = (a[q * m + q] - a[p * m + p]) / (2.0 * a[p * m + q]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double cs = 1.0 / std::sqrt(t * t + 1), sn = t * cs;
        for (int64_t k = 0; k < m; ++k) {  // columns p, q of A, then rows
          const double akp = a[k * m + p], akq = a[k * m + q];
          a[k * m + p] = cs * akp - sn * akq, a[k * m + q] = sn * akp + cs * akq;
        }
        for (int64_t k = 0; k < m; ++k) {
          const double apk = a[p * m + k], aqk = a[q * m + k];
          a[p * m + k] = cs * apk - sn * aqk, a[q * m + k] = sn * apk + cs * aqk;
        }
        for (int64_t k = 0; k < m; ++k) {
          const double ukp = u[k * m + p], ukq = u[k * m + q];
          u[k * m + p] = cs * ukp - sn * ukq, u[k * m + q] = sn * ukp + cs * ukq;
        }
      }
  }
  w.resize(m);
  for (int64_t i = 0; i < m; ++i) w[i] = a[i * m + i];
}

// K2 = G(L, L) for m landmarks N(0, spread^2) in `dim` dimensions.
std::vector<float> landmark_kernel(int64_t m, int64_t dim, float spread, uint64_t seed) {
  const Tensor l = random_normal({m, dim}, DType::kF32, seed, spread);
  std::vector<float> k2(m * m);
  for (int64_t a = 0; a < m; ++a)
    for (int64_t b = 0; b < m; ++b) {
      double d2 = 0.0;
      for (int64_t c = 0; c < dim; ++c) {
        const double diff = double(l.f32()[a * dim + c]) - l.f32()[b * dim + c];
        d2 += diff * diff;
      }
      k2[a * m + b] = static_cast<float>(std::exp(-0.5 * d2));
    }
  return k2;
}

// U f(Lambda) U^T with f(lambda) = (1 - (1 - alpha lambda^2)^(2^k)) / lambda (the Newton output),
// or 1 / lambda (the true inverse of P = K2 + 0.01 I).
std::vector<double> spectral(const std::vector<float>& k2, int64_t m, int iterations, bool exact) {
  std::vector<double> p(k2.begin(), k2.end()), w, u;
  double widest = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < m; ++j) sum += k2[i * m + j];
    widest = std::max(widest, sum);
  }
  const double alpha = 1.8 / (widest * widest);
  for (int64_t i = 0; i < m; ++i) p[i * m + i] += 0.01;
  jacobi_eigen(p, m, w, u);
  std::vector<double> out(m * m, 0.0);
  for (int64_t e = 0; e < m; ++e) {
    const double f = exact ? 1.0 / w[e]
                           : (1.0 - std::pow(1.0 - alpha * w[e] * w[e], std::ldexp(1.0, iterations))) /
                                 w[e];
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) out[i * m + j] += u[i * m + e] * f * u[j * m + e];
  }
  return out;
}

double relative_difference(const std::vector<float>& x, const std::vector<double>& y) {
  double diff = 0.0, norm = 0.0;
  for (size_t e = 0; e < y.size(); ++e) {
    diff += (x[e] - y[e]) * (x[e] - y[e]);
    norm += y[e] * y[e];
  }
  return std::sqrt(diff / norm);
}

TEST(SoftNewton, EqualsItsSpectralFilterNotTheInverse) {
  for (int64_t target : testing::simd_targets()) {
    const testing::TargetScope on(target);
    for (auto [m, spread] : {std::pair<int64_t, float>{24, 0.1f}, {40, 0.2f}, {16, 3.0f}}) {
      const std::vector<float> k2 = landmark_kernel(m, 8, spread, 7 + m);
      for (int iterations : {0, 5, 20}) {
        std::vector<float> x(m * m);
        newton_inverse(k2.data(), m, iterations, x.data());
        const std::vector<double> filter = spectral(k2, m, iterations, false);
        EXPECT_LT(relative_difference(x, filter), 1e-3)
            << "m=" << m << " spread=" << spread << " iterations=" << iterations;
      }
      // 20 steps reach P^-1 only where the spectrum allows: clustered landmarks (small
      // eigenvalues, alpha lambda^2 << 2^-20) stay far from it; well-separated ones reach it.
      std::vector<float> x(m * m);
      newton_inverse(k2.data(), m, 20, x.data());
      const double from_inverse = relative_difference(x, spectral(k2, m, 20, true));
      if (spread < 1.0f) {
        EXPECT_GT(from_inverse, 0.05) << "clustered landmarks, m=" << m;
      } else {
        EXPECT_LT(from_inverse, 1e-4) << "separated landmarks, m=" << m;
      }
    }
  }
}

// With every token its own landmark and the exact inverse, K1 K2^-1 K1^T = S = G(Q', Q'), so
// SOFT is S V, written out here.
TEST(Soft, TokensAsLandmarksWithTheExactInverseIsGaussianAttention) {
  Case c;
  c.n = 40, c.dim = 8, c.dim_v = 6, c.stride = 1, c.spread = 2.5f, c.inverse = SoftInverse::kExact;
  const Inputs in(c);
  Tensor out({c.batch, c.heads, c.n, c.dim_v}, DType::kF32);
  soft_attention(in.args(c, out));
  Tensor want = out;
  const double scale = std::pow(double(c.dim), -0.25);
  double top = 0.0;
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t e = 0; e < c.dim_v; ++e) {
        double o = 0.0;
        for (int64_t j = 0; j < c.n; ++j) {
          double d2 = 0.0;
          for (int64_t d = 0; d < c.dim; ++d) {
            const double diff = scale * (in.q.view().get(0, h, i, d) - in.q.view().get(0, h, j, d));
            d2 += diff * diff;
          }
          o += std::exp(-0.5 * d2) * in.v.view().get(0, h, j, e);
        }
        want.view().set(0, h, i, e, static_cast<float>(o));
        top = std::max(top, std::fabs(o));
      }
  EXPECT_LE(testing::max_abs_difference(out, want), 1e-4 * top);
}

// L = <W, O> in double from the stored inputs, exact inverse: the true function whose gradient
// the backward computes (the Newton backward is exact only where the iteration has converged).
double loss(const Case& c, const Inputs& in) {
  Tensor out({c.batch, c.heads, c.n, c.dim_v}, DType::kF32);
  SoftArgs a = in.args(c, out);
  soft_attention_reference(a);  // f32 outputs: the loss below is formed in double from them
  double total = 0.0;
  for (int64_t e = 0; e < out.numel(); ++e) total += double(out.f32()[e]) * in.dout.f32()[e];
  return total;
}

TEST(SoftBackwardOracle, EqualsFiniteDifferences) {
  for (bool given : {false, true}) {
    Case c;
    c.heads = 1, c.n = 8, c.dim = 3, c.dim_v = 2, c.stride = 2, c.spread = 1.5f;
    c.given = given ? 3 : 0, c.inverse = SoftInverse::kExact;
    Inputs in(c);
    const Result g = run(c, in, true);
    for (auto [tensor, grad, name] :
         {std::tuple{&in.q, &g.dq, "dQ"}, {&in.v, &g.dv, "dV"}, {&in.landmarks, &g.dl, "dL"}}) {
      if (tensor->numel() == 0) continue;
      float* x = tensor->f32();
      for (int64_t e = 0; e < tensor->numel(); ++e) {
        const float original = x[e], step = 1e-2f;
        x[e] = original + step;
        const double up = x[e], f_up = loss(c, in);
        x[e] = original - step;
        const double down = x[e], f_down = loss(c, in);
        x[e] = original;
        const double numeric = (f_up - f_down) / (up - down);
        EXPECT_NEAR(grad->f32()[e], numeric, 2e-3 * (1.0 + std::fabs(numeric)))
            << name << e << (given ? " given" : " pooled");
      }
    }
  }
}

TEST(Soft, ErrorsNameTheArgument) {
  Case c;
  c.n = 10;
  const Inputs in(c);
  Tensor out({1, c.heads, c.n, c.dim_v}, DType::kF32);
  auto expect_error = [&](const SoftArgs& a, const std::string& argument) {
    try {
      soft_attention(a);
      ADD_FAILURE() << "no error for " << argument;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
    }
  };
  SoftArgs a = in.args(c, out);
  SoftArgs bad = a;
  bad.stride = 0;
  expect_error(bad, "stride");
  bad.stride = 11;
  expect_error(bad, "stride");
  bad = a;
  bad.grid_height = 3, bad.grid_width = 4;
  expect_error(bad, "grid_height");
  bad.grid_width = 0;
  expect_error(bad, "grid_width");
  bad = a;
  bad.newton_iterations = -1;
  expect_error(bad, "newton_iterations");
  bad = a;
  const Tensor wrong = random_normal({1, c.heads, 3, c.dim + 1}, DType::kF32, 5);
  bad.landmarks = wrong.view();
  expect_error(bad, "landmarks");
  bad = a;  // the exact inverse of a K2 with two equal landmarks
  Tensor twins = random_normal({1, c.heads, 2, c.dim}, DType::kF32, 6);
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t d = 0; d < c.dim; ++d) twins.view().set(0, h, 1, d, twins.view().get(0, h, 0, d));
  bad.landmarks = twins.view(), bad.stride = 0, bad.inverse = SoftInverse::kExact;
  expect_error(bad, "landmarks");
}

}  // namespace
}  // namespace attnkit
