// Scalar reference backward ("oracle"): the gradient of attention written out from its definition,
// accumulating in double. Per query row i of head h (kv head g):
//   s_j = scale * q_i . k_j over allowed j,   p_j = exp(s_j - lse_i),   lse_i = log sum_j exp(s_j)
//   dp_j = do_i . v_j,   ds_j = p_j * (dp_j - sum_k p_k dp_k + dlse_i)
//   dq_i = scale * sum_j ds_j k_j,   dk_j += scale * ds_j q_i,   dv_j += p_j do_i
// It recomputes the forward (it does not trust O or LSE), so it checks the kernel's use of them
// too. With dropout (z_j = keep_j / (1 - p), from core/dropout.h): o_i = sum_j p_j z_j v_j, so
// dv_j += p_j z_j do_i and dp_j = z_j (do_i . v_j), the rest unchanged. Score modifiers: scale
// becomes scale * tau_i and do_i becomes gate_i * do_i (the gradient of the ungated output).
// Memory: O(Nk) per row plus accumulators for one kv head's dK and dV. The same code in float is
// the "naive low-precision kernel" whose error bounds the fast kernel's in tests.
#include "kernels/ref/backward_ref.h"

#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "core/attention_args.h"
#include "core/dropout.h"
#include "core/score_modifiers.h"

namespace attnkit {

namespace {

template <typename Real>
void backward_reference(const BackwardArgs& args, const ElementPredicate& allow) {
  validate(args);
  const AttentionArgs& f = args.forward;
  const int64_t batch = f.q.shape[0], heads_q = f.q.shape[1], nq = f.q.shape[2];
  const int64_t heads_kv = f.k.shape[1], nk = f.k.shape[2];
  const int64_t dim = f.q.shape[3], dim_v = f.v.shape[3];
  const int64_t group = heads_q / heads_kv;
  const Real scale = effective_scale(f);
  const int32_t threshold = dropout_threshold(f.dropout);
  const Real keep_scale = Real(1) / (Real(1) - static_cast<Real>(f.dropout));

#pragma omp parallel for schedule(dynamic, 1) num_threads(effective_threads(f.threads))
  for (int64_t bg = 0; bg < batch * heads_kv; ++bg) {
    const int64_t b = bg / heads_kv, g = bg % heads_kv;
    std::vector<Real> dk(nk * dim, Real(0)), dv(nk * dim_v, Real(0));
    std::vector<Real> score(nk), prob(nk), dprob(nk), keep_factor(nk), dq(dim);
    std::vector<char> seen(nk);
    for (int64_t h = g * group; h < (g + 1) * group; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        const RowFactors factors = row_factors(f, b, h, i);
        const Real row_scale = scale * static_cast<Real>(factors.tau);
        const Real gate = factors.gate;
        Real max_score = -std::numeric_limits<Real>::infinity();
        for (int64_t j = 0; j < nk; ++j) {
          seen[j] = !(f.causal && j > i + (nk - nq)) && (!allow || allow(b, h, i, j));
          if (!seen[j]) continue;
          Real dot = 0;
          for (int64_t d = 0; d < dim; ++d)
            dot += static_cast<Real>(f.q.get(b, h, i, d)) * f.k.get(b, g, j, d);
          score[j] = dot * row_scale;
          max_score = std::max(max_score, score[j]);
        }
        std::fill(dq.begin(), dq.end(), Real(0));
        if (max_score != -std::numeric_limits<Real>::infinity()) {
          Real sum = 0;
          for (int64_t j = 0; j < nk; ++j)
            if (seen[j]) sum += std::exp(score[j] - max_score);
          const Real lse = max_score + std::log(sum);
          const Real dlse = args.dlse.empty() ? Real(0) : args.dlse.get(b, h, i, 0);
          const uint32_t row_key = dropout_row_key(f.dropout_seed, b, h, i);
          Real p_dp = 0;  // sum_j p_j dp_j = do_i . o_i
          for (int64_t j = 0; j < nk; ++j) {
            if (!seen[j]) continue;
            prob[j] = std::exp(score[j] - lse);
            keep_factor[j] = f.dropout == 0.0f                      ? Real(1)
                             : dropout_keeps(row_key, j, threshold) ? keep_scale
                                                                    : Real(0);
            Real dot = 0;
            for (int64_t d = 0; d < dim_v; ++d)
              dot += static_cast<Real>(args.dout.get(b, h, i, d)) * f.v.get(b, g, j, d);
            dprob[j] = gate * dot * keep_factor[j];
            p_dp += prob[j] * dprob[j];
          }
          for (int64_t j = 0; j < nk; ++j) {
            if (!seen[j]) continue;
            const Real ds = prob[j] * (dprob[j] - p_dp + dlse) * row_scale;
            for (int64_t d = 0; d < dim; ++d) {
              dq[d] += ds * f.k.get(b, g, j, d);
              dk[j * dim + d] += ds * f.q.get(b, h, i, d);
            }
            for (int64_t d = 0; d < dim_v; ++d)
              dv[j * dim_v + d] += prob[j] * keep_factor[j] * gate * args.dout.get(b, h, i, d);
          }
        }
        for (int64_t d = 0; d < dim; ++d) args.dq.set(b, h, i, d, static_cast<float>(dq[d]));
      }
    for (int64_t j = 0; j < nk; ++j) {
      for (int64_t d = 0; d < dim; ++d)
        args.dk.set(b, g, j, d, static_cast<float>(dk[j * dim + d]));
      for (int64_t d = 0; d < dim_v; ++d)
        args.dv.set(b, g, j, d, static_cast<float>(dv[j * dim_v + d]));
    }
  }
}

}  // namespace

void attention_backward_reference(const BackwardArgs& args, const ElementPredicate& allow) {
  backward_reference<double>(args, allow);
}

void attention_backward_reference_f32(const BackwardArgs& args, const ElementPredicate& allow) {
  backward_reference<float>(args, allow);
}

}  // namespace attnkit
