// Lightning attention's oracle: the definitions of include/attnkit/lightning.h as direct sums in
// double, O(N^2 D) per head. Written for clarity; only tests and small runs call it.
#include <cmath>
#include <vector>

#include "attnkit/lightning.h"
#include "operators/lightning_checks.h"

namespace attnkit {
namespace {

// lambda^p in double for p >= 0.
double decay_power(double slope, int64_t p) { return std::exp(-slope * double(p)); }

double dot(const TensorView& x, int64_t b, int64_t h, int64_t i, const TensorView& y, int64_t j) {
  double sum = 0.0;
  for (int64_t d = 0; d < x.shape[3]; ++d) sum += double(x.get(b, h, i, d)) * y.get(b, h, j, d);
  return sum;
}

double state_at(const TensorView& s, int64_t b, int64_t h, int64_t d, int64_t e) {
  return s.empty() ? 0.0 : double(s.get(b, h, d, e));
}

std::vector<float> slopes_of(const LightningArgs& a, int64_t heads) {
  return a.slopes.empty() ? lightning_slopes(heads) : a.slopes;
}

}  // namespace

void lightning_attention_reference(const LightningArgs& a) {
  const LightningShape s = validate_lightning(a);
  const std::vector<float> slopes = slopes_of(a, s.heads);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const double slope = slopes[h];
      for (int64_t t = 0; t < s.n; ++t) {
        std::vector<double> o(s.dim_v, 0.0);
        for (int64_t j = 0; j <= t; ++j) {
          const double w = decay_power(slope, t - j) * dot(a.q, b, h, t, a.k, j);
          for (int64_t e = 0; e < s.dim_v; ++e) o[e] += w * a.v.get(b, h, j, e);
        }
        if (!a.state_in.empty()) {
          const double w = decay_power(slope, t + 1);
          for (int64_t e = 0; e < s.dim_v; ++e)
            for (int64_t d = 0; d < s.dim; ++d)
              o[e] += w * a.q.get(b, h, t, d) * state_at(a.state_in, b, h, d, e);
        }
        for (int64_t e = 0; e < s.dim_v; ++e) a.out.set(b, h, t, e, static_cast<float>(o[e]));
      }
      if (a.state_out.empty()) continue;
      for (int64_t d = 0; d < s.dim; ++d)
        for (int64_t e = 0; e < s.dim_v; ++e) {
          double x = decay_power(slope, s.n) * state_at(a.state_in, b, h, d, e);
          for (int64_t j = 0; j < s.n; ++j)
            x += decay_power(slope, s.n - 1 - j) * a.k.get(b, h, j, d) * a.v.get(b, h, j, e);
          a.state_out.set(b, h, d, e, static_cast<float>(x));
        }
    }
}

void lightning_attention_backward_reference(const LightningBackwardArgs& g) {
  const LightningArgs& a = g.forward;
  const LightningShape s = validate_lightning(g);
  const std::vector<float> slopes = slopes_of(a, s.heads);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const double slope = slopes[h];
      // dQ[t] = sum_{j <= t} lambda^(t-j) (dO[t] . V[j]) K[j] + lambda^(t+1) dO[t] S0^T
      for (int64_t t = 0; t < s.n; ++t) {
        std::vector<double> x(s.dim, 0.0);
        for (int64_t j = 0; j <= t; ++j) {
          const double w = decay_power(slope, t - j) * dot(g.dout, b, h, t, a.v, j);
          for (int64_t d = 0; d < s.dim; ++d) x[d] += w * a.k.get(b, h, j, d);
        }
        for (int64_t d = 0; d < s.dim; ++d) {
          for (int64_t e = 0; e < s.dim_v; ++e)
            x[d] += decay_power(slope, t + 1) * g.dout.get(b, h, t, e) *
                    state_at(a.state_in, b, h, d, e);
          g.dq.set(b, h, t, d, static_cast<float>(x[d]));
        }
      }
      // dK[j] = sum_{t >= j} lambda^(t-j) (dO[t] . V[j]) Q[t] + lambda^(N-1-j) G V[j]
      // dV[j] = sum_{t >= j} lambda^(t-j) (Q[t] . K[j]) dO[t] + lambda^(N-1-j) G^T K[j]
      for (int64_t j = 0; j < s.n; ++j) {
        const double tail = decay_power(slope, s.n - 1 - j);
        std::vector<double> dk(s.dim, 0.0), dv(s.dim_v, 0.0);
        for (int64_t t = j; t < s.n; ++t) {
          const double wk = decay_power(slope, t - j) * dot(g.dout, b, h, t, a.v, j);
          const double wv = decay_power(slope, t - j) * dot(a.q, b, h, t, a.k, j);
          for (int64_t d = 0; d < s.dim; ++d) dk[d] += wk * a.q.get(b, h, t, d);
          for (int64_t e = 0; e < s.dim_v; ++e) dv[e] += wv * g.dout.get(b, h, t, e);
        }
        for (int64_t d = 0; d < s.dim; ++d)
          for (int64_t e = 0; e < s.dim_v; ++e) {
            const double gde = state_at(g.dstate_out, b, h, d, e);
            dk[d] += tail * gde * a.v.get(b, h, j, e);
            dv[e] += tail * gde * a.k.get(b, h, j, d);
          }
        for (int64_t d = 0; d < s.dim; ++d) g.dk.set(b, h, j, d, static_cast<float>(dk[d]));
        for (int64_t e = 0; e < s.dim_v; ++e) g.dv.set(b, h, j, e, static_cast<float>(dv[e]));
      }
      // dS0 = sum_t lambda^(t+1) Q[t]^T dO[t] + lambda^N G
      if (g.dstate_in.empty()) continue;
      for (int64_t d = 0; d < s.dim; ++d)
        for (int64_t e = 0; e < s.dim_v; ++e) {
          double x = decay_power(slope, s.n) * state_at(g.dstate_out, b, h, d, e);
          for (int64_t t = 0; t < s.n; ++t)
            x += decay_power(slope, t + 1) * a.q.get(b, h, t, d) * g.dout.get(b, h, t, e);
          g.dstate_in.set(b, h, d, e, static_cast<float>(x));
        }
    }
}

}  // namespace attnkit
