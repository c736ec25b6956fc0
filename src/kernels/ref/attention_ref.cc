// Scalar reference attention ("oracle"): written for clarity, accumulating in double.
// Memory is O(Nk) per row (one score row); rows run in parallel.
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "core/attention_args.h"
#include "core/dropout.h"

namespace attnkit {

void attention_reference(const AttentionArgs& args, const ElementPredicate& allow) {
  validate(args);
  const int64_t batch = args.q.shape[0], heads_q = args.q.shape[1], nq = args.q.shape[2];
  const int64_t heads_kv = args.k.shape[1], nk = args.k.shape[2];
  const int64_t dim = args.q.shape[3], dim_v = args.v.shape[3];
  const int64_t group = heads_q / heads_kv;
  const double scale = effective_scale(args);
  const int64_t rows = batch * heads_q * nq;

#pragma omp parallel for schedule(dynamic, 16) num_threads(effective_threads(args.threads))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / (heads_q * nq), h = row / nq % heads_q, i = row % nq;
    const int64_t g = h / group;
    std::vector<double> score(nk);
    std::vector<char> seen(nk, 0);
    double max_score = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < nk; ++j) {
      if (args.causal && j > i + (nk - nq)) continue;
      if (allow && !allow(b, h, i, j)) continue;
      double dot = 0.0;
      for (int64_t d = 0; d < dim; ++d)
        dot += static_cast<double>(args.q.get(b, h, i, d)) * args.k.get(b, g, j, d);
      score[j] = dot * scale;
      seen[j] = 1;
      max_score = std::max(max_score, score[j]);
    }
    // Dropout: the sum is over the undropped probabilities; kept ones are scaled by 1 / (1 - p).
    const uint32_t row_key = dropout_row_key(args.dropout_seed, b, h, i);
    const int32_t threshold = dropout_threshold(args.dropout);
    const double keep_scale = 1.0 / (1.0 - static_cast<double>(args.dropout));
    std::vector<double> acc(dim_v, 0.0);
    double sum = 0.0;
    for (int64_t j = 0; j < nk; ++j) {
      if (!seen[j]) continue;
      const double p = std::exp(score[j] - max_score);
      sum += p;
      if (args.dropout > 0.0f && !dropout_keeps(row_key, j, threshold)) continue;
      const double used = args.dropout > 0.0f ? p * keep_scale : p;
      for (int64_t d = 0; d < dim_v; ++d) acc[d] += used * args.v.get(b, g, j, d);
    }
    for (int64_t d = 0; d < dim_v; ++d)
      args.out.set(b, h, i, d, sum > 0.0 ? static_cast<float>(acc[d] / sum) : 0.0f);
    if (!args.lse.empty())
      *args.lse.row<float>(b, h, i) = sum > 0.0 ? static_cast<float>(max_score + std::log(sum))
                                                : -std::numeric_limits<float>::infinity();
  }
}

}  // namespace attnkit
