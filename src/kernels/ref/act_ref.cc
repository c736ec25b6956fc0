// ACT's reference: the official procedure on the explicit probability map, in double
// (include/attnkit/act.h). O(Nq * Nk) memory per (batch, head): tests only.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/act.h"
#include "core/attention_args.h"
#include "core/score_modifiers.h"

namespace attnkit {

std::vector<std::vector<int32_t>> attention_act_reference(const AttentionArgs& args,
                                                          const ActOptions& options) {
  validate_f32_query(args);
  const int64_t batch = args.q.shape[0], heads = args.q.shape[1], nq = args.q.shape[2];
  const int64_t nk = args.k.shape[2], dim = args.q.shape[3], dim_v = args.v.shape[3];
  const int64_t group = heads / args.k.shape[1];
  const double scale = effective_scale(args);
  std::vector<std::vector<int32_t>> sinks(batch * heads);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / group;
      // A [nq][nk], 0 where hidden.
      std::vector<double> a(nq * nk, 0.0);
      for (int64_t i = 0; i < nq; ++i) {
        const double tau = row_factors(args, b, h, i).tau;
        double top = -std::numeric_limits<double>::infinity();
        std::vector<double> s(nk, -std::numeric_limits<double>::infinity());
        for (int64_t j = 0; j < nk; ++j) {
          if (args.causal && j > i + nk - nq) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < dim; ++d)
            dot += double(args.q.get(b, h, i, d)) * args.k.get(b, g, j, d);
          s[j] = dot * scale * tau;
          top = std::max(top, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < nk; ++j)
          if (!std::isinf(s[j])) sum += a[i * nk + j] = std::exp(s[j] - top);
        for (int64_t j = 0; j < nk; ++j) a[i * nk + j] /= sum;
      }
      std::vector<int32_t>& sink = sinks[b * heads + h];
      if (!options.sinks.empty()) {
        sink = options.sinks[b * heads + h];
      } else {
        bool first = true;
        for (int64_t j = 0; j < nk; ++j) {
          double col = 0.0;
          int64_t seeing = 0;
          for (int64_t i = 0; i < nq; ++i) {
            if (args.causal && j > i + nk - nq) continue;
            col += a[i * nk + j];
            ++seeing;
          }
          if (seeing == 0 || col / seeing <= options.tau) continue;
          if (!first) sink.push_back(static_cast<int32_t>(j));
          first = false;
        }
      }
      std::vector<char> in_s(nk, 0);
      for (int32_t j : sink) in_s[j] = 1;
      for (int64_t i = 0; i < nq; ++i) {
        double* row = &a[i * nk];
        double mass = 0.0, rest = 0.0;
        for (int64_t j = 0; j < nk; ++j) (in_s[j] ? mass : rest) += row[j];
        if (mass > 0.0 && rest > 0.0) {
          // Sinks scaled by beta; the freed mass spread over the rest in proportion (R).
          const double freed = (1.0 - options.beta) * mass;
          for (int64_t j = 0; j < nk; ++j)
            row[j] = in_s[j] ? options.beta * row[j] : row[j] + freed * row[j] / rest;
        }
        const double gate = row_factors(args, b, h, i).gate;
        for (int64_t d = 0; d < dim_v; ++d) {
          double o = 0.0;
          for (int64_t j = 0; j < nk; ++j) o += row[j] * args.v.get(b, g, j, d);
          args.out.set(b, h, i, d, static_cast<float>(gate * o));
        }
      }
    }
  return sinks;
}

}  // namespace attnkit
