// Shared checks for kernel tests: compare a kernel's O and LSE with the double-accumulating
// reference on the same stored inputs, with bounds derived from f32 epsilon and the data.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/tensor.h"
#include "core/attention_args.h"
#include "core/score_modifiers.h"
#include "eval/inputs.h"
#include "hwy/targets.h"
#include "kernels/cpu/tile_plan.h"

namespace attnkit::testing {

// Every SIMD target compiled into the library and supported by this CPU, best first. The sweeps
// run on each: the kernels dispatch at run time, so the best target alone would hide a broken
// AVX2 or scalar path.
inline std::vector<int64_t> simd_targets() { return hwy::SupportedAndGeneratedTargets(); }

// For its lifetime, the kernels dispatch to `target` (0: the CPU's best), and the test fails
// unless they really do.
class TargetScope {
 public:
  explicit TargetScope(int64_t target) : active_(target != 0) {
    if (!active_) return;
    hwy::SetSupportedTargetsForTest(target);
    EXPECT_STREQ(cpu::kernel_target_name(), hwy::TargetName(target)) << "dispatch did not switch";
  }
  ~TargetScope() {
    if (active_) hwy::SetSupportedTargetsForTest(0);
  }
  TargetScope(const TargetScope&) = delete;
  TargetScope& operator=(const TargetScope&) = delete;

 private:
  bool active_;
};

struct Problem {
  int64_t batch = 1, heads_q = 1, heads_kv = 1, nq = 1, nk = 1, dim = 64, dim_v = 64;
  DType dtype = DType::kF32;
  bool causal = false;
  uint64_t seed = 1;
  float scale = 0.0f;      // AttentionArgs::scale (0: 1/sqrt(D))
  float magnitude = 1.0f;  // q and k are N(0, magnitude^2): large values give large logits
  int64_t target = 0;      // SIMD target the kernel runs on (0: the CPU's best)
  float dropout = 0.0f;    // AttentionArgs::dropout, with dropout_seed = seed + 5
  int threads = 0;         // AttentionArgs::threads (0: every core)
  std::string name() const {
    // append(), not operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
    std::string text = "B";
    text.append(std::to_string(batch)).append("_H").append(std::to_string(heads_q));
    text.append("x").append(std::to_string(heads_kv)).append("_Nq").append(std::to_string(nq));
    text.append("_Nk").append(std::to_string(nk)).append("_D").append(std::to_string(dim));
    text.append("_Dv").append(std::to_string(dim_v)).append("_").append(dtype_name(dtype));
    if (scale != 0.0f) text.append("_scale").append(std::to_string(scale));
    if (magnitude != 1.0f) text.append("_mag").append(std::to_string(magnitude));
    if (target != 0) text.append("_").append(hwy::TargetName(target));
    if (causal) text.append("_causal");
    if (dropout != 0.0f) text.append("_dropout").append(std::to_string(dropout));
    if (threads != 0) text.append("_threads").append(std::to_string(threads));
    std::replace(text.begin(), text.end(), '.', 'p');  // test names allow [A-Za-z0-9_] only
    return text;
  }
};

struct Inputs {
  Tensor q, k, v, out, lse, ref_out, ref_lse;
  AttentionArgs args() {
    AttentionArgs a;
    a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view();
    a.lse = lse.rows_view();
    return a;
  }
};

// N(0, magnitude^2) values stored in `dtype`; for f16, clamped to +-65000 (inside its finite
// range, whose maximum is 65504).
inline Tensor scaled_normal(const std::vector<int64_t>& shape, DType dtype, uint64_t seed,
                            float magnitude) {
  if (magnitude == 1.0f) return random_normal(shape, dtype, seed);
  Tensor t = random_normal(shape, DType::kF32, seed);
  const float limit = dtype == DType::kF16 ? 65000.0f : std::numeric_limits<float>::max();
  for (int64_t i = 0; i < t.numel(); ++i)
    t.f32()[i] = std::clamp(t.f32()[i] * magnitude, -limit, limit);
  return t.to(dtype);
}

// An output tensor filled with NaN, so that a row a kernel never writes fails every check.
inline Tensor nan_filled(const std::vector<int64_t>& shape) {
  Tensor t(shape, DType::kF32);
  std::fill(t.f32(), t.f32() + t.numel(), std::numeric_limits<float>::quiet_NaN());
  return t;
}

inline Inputs make_inputs(const Problem& p) {
  Inputs in;
  in.q = scaled_normal({p.batch, p.heads_q, p.nq, p.dim}, p.dtype, p.seed, p.magnitude);
  in.k = scaled_normal({p.batch, p.heads_kv, p.nk, p.dim}, p.dtype, p.seed + 1, p.magnitude);
  in.v = random_normal({p.batch, p.heads_kv, p.nk, p.dim_v}, p.dtype, p.seed + 2);
  in.out = nan_filled({p.batch, p.heads_q, p.nq, p.dim_v});
  in.lse = nan_filled({p.batch, p.heads_q, p.nq});
  in.ref_out = Tensor({p.batch, p.heads_q, p.nq, p.dim_v}, DType::kF32);
  in.ref_lse = Tensor({p.batch, p.heads_q, p.nq}, DType::kF32);
  return in;
}

// Bound on |kernel - reference| for one row: f32 rounding of the scores (about eps * sum|q k|
// * scale, plus exp2's 1e-7) moves the probabilities by that relative amount, which moves O by at
// most that times max|V|. The factor 16 covers accumulation order.
inline void expect_matches_reference(const AttentionArgs& kernel, const AttentionArgs& reference,
                                     const std::string& label) {
  const TensorView q = kernel.q, k = kernel.k, v = kernel.v;
  const int64_t batch = q.shape[0], heads_q = q.shape[1], nq = q.shape[2], nk = k.shape[2];
  const int64_t group = heads_q / k.shape[1], dim = q.shape[3], dim_v = v.shape[3];
  const double eps = std::numeric_limits<float>::epsilon();
  const double scale = effective_scale(kernel);
  double max_v = 0.0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < k.shape[1]; ++g)
      for (int64_t j = 0; j < nk; ++j)
        for (int64_t d = 0; d < dim_v; ++d)
          max_v = std::max(max_v, std::fabs(double(v.get(b, g, j, d))));
  max_v /= 1.0 - kernel.dropout;  // kept probabilities are scaled up by 1 / (1 - p)
  int64_t failures = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads_q; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        double score_abs = 0.0;
        for (int64_t j = 0; j < nk; ++j) {
          double s = 0.0;
          for (int64_t d = 0; d < dim; ++d)
            s += std::fabs(double(q.get(b, h, i, d)) * k.get(b, h / group, j, d));
          score_abs = std::max(score_abs, s * scale);
        }
        score_abs *= std::max(1.0, std::fabs(double(row_factors(kernel, b, h, i).tau)));
        const double tol_o = 16.0 * eps * (score_abs + 8.0) * max_v;
        const double tol_lse = 16.0 * eps * (score_abs + 8.0 + std::log(double(nk)));
        for (int64_t d = 0; d < dim_v; ++d) {
          const double got = kernel.out.get(b, h, i, d), want = reference.out.get(b, h, i, d);
          if (!(std::fabs(got - want) <= tol_o) && failures++ < 5)
            ADD_FAILURE() << label << ": O[" << b << "," << h << "," << i << "," << d
                          << "] = " << got << ", reference " << want << ", tolerance " << tol_o;
        }
        if (!kernel.lse.empty() && !reference.lse.empty()) {
          const double got = *kernel.lse.row<float>(b, h, i);
          const double want = *reference.lse.row<float>(b, h, i);
          const bool both_empty = std::isinf(want) && want < 0 && got == want;
          if (!both_empty && !(std::fabs(got - want) <= tol_lse) && failures++ < 5)
            ADD_FAILURE() << label << ": LSE[" << b << "," << h << "," << i << "] = " << got
                          << ", reference " << want << ", tolerance " << tol_lse;
        }
      }
  EXPECT_EQ(failures, 0) << label << ": " << failures << " mismatching elements";
}

// Each problem once per SIMD target.
inline std::vector<Problem> on_every_target(const std::vector<Problem>& problems) {
  std::vector<Problem> out;
  for (int64_t target : simd_targets())
    for (Problem p : problems) {
      p.target = target;
      out.push_back(p);
    }
  return out;
}

// Runs `kernel` (on p.target) and the reference on the same stored inputs and compares.
inline void check_problem(const Problem& p, const std::function<void(const AttentionArgs&)>& kernel,
                          const ElementPredicate& allow = {}) {
  Inputs in = make_inputs(p);
  AttentionArgs a = in.args();
  a.causal = p.causal;
  a.scale = p.scale;
  a.dropout = p.dropout;
  a.dropout_seed = p.seed + 5;
  a.threads = p.threads;
  {
    const TargetScope on(p.target);
    kernel(a);
  }
  AttentionArgs r = a;
  r.out = in.ref_out.view();
  r.lse = in.ref_lse.rows_view();
  attention_reference(r, allow);
  expect_matches_reference(a, r, p.name());
}

}  // namespace attnkit::testing
