// Shared checks for backward tests: run the forward, then a backward kernel, and compare dQ, dK,
// dV with the double reference. The bound on each gradient comes from the data: 8 x the error of
// the same reference computed in float (a naive low-precision kernel on the same inputs), plus
// 16 eps (S + 8) x the gradient's largest magnitude (at least 1), S the largest |scale q.k| sum of
// the rows (the rounding of the recomputed probabilities).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "attnkit/attention.h"
#include "kernels/ref/backward_ref.h"
#include "support/attention_check.h"

namespace attnkit::testing {

struct Gradients {
  Tensor dq, dk, dv;
};

inline Gradients nan_gradients(const Problem& p) {
  return {nan_filled({p.batch, p.heads_q, p.nq, p.dim}),
          nan_filled({p.batch, p.heads_kv, p.nk, p.dim}),
          nan_filled({p.batch, p.heads_kv, p.nk, p.dim_v})};
}

// Inputs, forward outputs, and the incoming gradients dO (stored in p.dtype) and dLSE.
struct BackwardInputs {
  Inputs in;
  Tensor dout, dlse;
  AttentionArgs forward;
  BackwardArgs args(Gradients& g) const {
    BackwardArgs a;
    a.forward = forward;
    a.dout = dout.view();
    a.dlse = dlse.numel() ? dlse.rows_view() : TensorView{};
    a.dq = g.dq.view(), a.dk = g.dk.view(), a.dv = g.dv.view();
    return a;
  }
};

// `forward` runs the kernel whose backward is tested (it fills O and LSE).
inline BackwardInputs make_backward_inputs(
    const Problem& p, bool with_dlse, const std::function<void(const AttentionArgs&)>& forward) {
  BackwardInputs b;
  b.in = make_inputs(p);
  b.forward = b.in.args();
  b.forward.causal = p.causal;
  b.forward.scale = p.scale;
  b.forward.dropout = p.dropout;
  b.forward.dropout_seed = p.seed + 5;
  forward(b.forward);
  b.dout = random_normal({p.batch, p.heads_q, p.nq, p.dim_v}, p.dtype, p.seed + 3);
  if (with_dlse) b.dlse = random_normal({p.batch, p.heads_q, p.nq}, DType::kF32, p.seed + 4);
  return b;
}

inline double max_abs_score_sum(const AttentionArgs& a) {
  const int64_t group = a.q.shape[1] / a.k.shape[1];
  double worst = 0.0;
  for (int64_t b = 0; b < a.q.shape[0]; ++b)
    for (int64_t h = 0; h < a.q.shape[1]; ++h)
      for (int64_t i = 0; i < a.q.shape[2]; ++i)
        for (int64_t j = 0; j < a.k.shape[2]; ++j) {
          double s = 0.0;
          for (int64_t d = 0; d < a.q.shape[3]; ++d)
            s += std::fabs(double(a.q.get(b, h, i, d)) * a.k.get(b, h / group, j, d));
          worst = std::max(worst, s * effective_scale(a));
        }
  return worst;
}

// Compares one gradient tensor; `naive` is the float reference's result.
inline void expect_gradient_close(const Tensor& got, const Tensor& want, const Tensor& naive,
                                  double score_sum, const std::string& label) {
  const double eps = std::numeric_limits<float>::epsilon();
  double naive_error = 0.0, magnitude = 0.0;
  for (int64_t x = 0; x < want.numel(); ++x) {
    naive_error = std::max(naive_error, std::fabs(double(naive.f32()[x]) - want.f32()[x]));
    magnitude = std::max(magnitude, std::fabs(double(want.f32()[x])));
  }
  // The floor assumes inputs of unit scale (the tests' N(0, 1) data), where gradients that are
  // zero in exact arithmetic (one key: dQ = dK = 0) come out as rounding noise of that scale.
  const double tol = 8.0 * naive_error + 16.0 * eps * (score_sum + 8.0) * std::max(magnitude, 1.0);
  int64_t failures = 0;
  for (int64_t x = 0; x < want.numel(); ++x) {
    const double g = got.f32()[x], w = want.f32()[x];
    if (!(std::fabs(g - w) <= tol) && failures++ < 5)
      ADD_FAILURE() << label << "[" << x << "] = " << g << ", reference " << w << ", tolerance "
                    << tol;
  }
  EXPECT_EQ(failures, 0) << label << ": " << failures << " of " << want.numel()
                         << " elements outside the tolerance " << tol;
}

// Runs the forward and `backward` (on p.target) and compares with the references under `allow`.
inline void check_backward(const Problem& p, bool with_dlse,
                           const std::function<void(const AttentionArgs&)>& forward,
                           const std::function<void(const BackwardArgs&)>& backward,
                           const ElementPredicate& allow = {}) {
  const BackwardInputs in = make_backward_inputs(p, with_dlse, forward);
  Gradients fast = nan_gradients(p), exact = nan_gradients(p), naive = nan_gradients(p);
  {
    const TargetScope on(p.target);
    backward(in.args(fast));
  }
  attention_backward_reference(in.args(exact), allow);
  attention_backward_reference_f32(in.args(naive), allow);
  const double s = max_abs_score_sum(in.forward);
  const std::string label = p.name() + (with_dlse ? "_dlse" : "");
  expect_gradient_close(fast.dq, exact.dq, naive.dq, s, label + " dQ");
  expect_gradient_close(fast.dk, exact.dk, naive.dk, s, label + " dK");
  expect_gradient_close(fast.dv, exact.dv, naive.dv, s, label + " dV");
}

}  // namespace attnkit::testing
