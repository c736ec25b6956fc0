// Scalar reference attention ("oracle"): written for clarity, accumulating in double.
// Memory is O(Nk) per row (one score row); rows run in parallel.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "core/attention_args.h"
#include "core/dropout.h"
#include "core/score_modifiers.h"

namespace attnkit {

namespace {

// Scores in double of row (b, h, i) against the keys it may see, times the row's temperature
// factor: score[j], seen[j]; returns the row's maximum (-inf when it sees nothing).
double row_scores(const AttentionArgs& args, const ElementPredicate& allow, int64_t b, int64_t h,
                  int64_t i, std::vector<double>& score, std::vector<char>& seen) {
  const int64_t nq = args.q.shape[2], nk = args.k.shape[2], dim = args.q.shape[3];
  const int64_t g = h / (args.q.shape[1] / args.k.shape[1]);
  const double scale = static_cast<double>(effective_scale(args)) * row_factors(args, b, h, i).tau;
  score.assign(nk, 0.0);
  seen.assign(nk, 0);
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
  return max_score;
}

}  // namespace

void attention_reference(const AttentionArgs& args, const ElementPredicate& allow) {
  validate_f32_query(args);
  const int64_t batch = args.q.shape[0], heads_q = args.q.shape[1], nq = args.q.shape[2];
  const int64_t heads_kv = args.k.shape[1], nk = args.k.shape[2];
  const int64_t dim_v = args.v.shape[3];
  const int64_t group = heads_q / heads_kv;
  const int64_t rows = batch * heads_q * nq;

#pragma omp parallel for schedule(dynamic, 16) num_threads(effective_threads(args.threads))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / (heads_q * nq), h = row / nq % heads_q, i = row % nq;
    const int64_t g = h / group;
    std::vector<double> score;
    std::vector<char> seen;
    const double max_score = row_scores(args, allow, b, h, i, score, seen);
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
    const double gate = row_factors(args, b, h, i).gate;
    for (int64_t d = 0; d < dim_v; ++d)
      args.out.set(b, h, i, d, sum > 0.0 ? static_cast<float>(gate * acc[d] / sum) : 0.0f);
    if (!args.lse.empty())
      *args.lse.row<float>(b, h, i) = sum > 0.0 ? static_cast<float>(max_score + std::log(sum))
                                                : -std::numeric_limits<float>::infinity();
  }
}

void attention_column_sums_reference(const AttentionArgs& args, const MutableTensorView& col_sums,
                                     const ElementPredicate& allow) {
  validate_column_sums(args, col_sums);
  const int64_t batch = args.q.shape[0], heads_q = args.q.shape[1], nq = args.q.shape[2];
  const int64_t heads_kv = args.k.shape[1], nk = args.k.shape[2];
  const int64_t group = heads_q / heads_kv, out_heads = col_sums.shape[1];
  std::vector<double> sums(batch * out_heads * nk, 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads_q; ++h) {
      const int64_t g = h / group, o = out_heads == heads_q ? h : g;
      for (int64_t i = 0; i < nq; ++i) {
        std::vector<double> p;
        std::vector<char> seen;
        const double max_score = row_scores(args, allow, b, h, i, p, seen);
        double sum = 0.0;
        for (int64_t j = 0; j < nk; ++j)
          if (seen[j]) sum += p[j] = std::exp(p[j] - max_score);
        for (int64_t j = 0; j < nk; ++j)
          if (seen[j]) sums[(b * out_heads + o) * nk + j] += p[j] / sum;
      }
    }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t o = 0; o < out_heads; ++o)
      for (int64_t j = 0; j < nk; ++j)
        *col_sums.row<float>(b, o, j) = static_cast<float>(sums[(b * out_heads + o) * nk + j]);
}

}  // namespace attnkit
