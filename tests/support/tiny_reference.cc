// The tiny model's double-precision forward pass (tiny_reference.h).
#include "support/tiny_reference.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace attnkit::model {
namespace {

// y[out] = sum_k W[out, k] x[k], W row-major [rows, cols].
std::vector<double> apply(const std::vector<float>& w, const std::vector<double>& x, int64_t rows) {
  const int64_t cols = static_cast<int64_t>(x.size());
  std::vector<double> y(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) y[r] += w[r * cols + k] * x[k];
  return y;
}

std::vector<double> rms_norm(const std::vector<double>& x, const std::vector<float>& weight) {
  double sum = 0.0;
  for (double v : x) sum += v * v;
  const double inv = 1.0 / std::sqrt(sum / x.size() + kEps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * weight[i];
  return y;
}

// Hugging Face rotate-half RoPE on one head: pairs (i, i + hd/2).
void rope_half(double* v, int64_t pos) {
  for (int64_t i = 0; i < kHeadDim / 2; ++i) {
    const double angle = pos * std::pow(kTheta, -2.0 * i / kHeadDim);
    const double a = v[i], b = v[i + kHeadDim / 2];
    v[i] = a * std::cos(angle) - b * std::sin(angle);
    v[i + kHeadDim / 2] = b * std::cos(angle) + a * std::sin(angle);
  }
}

KeyView causal_view(int64_t t) {
  KeyView view;
  for (int64_t j = 0; j <= t; ++j) view.tokens.push_back(j), view.positions.push_back(j);
  view.query_position = t;
  return view;
}

}  // namespace

std::vector<int32_t> random_byte_tokens(int64_t n, uint32_t seed) {
  std::vector<int32_t> tokens(n);
  std::mt19937 rng(seed);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 256);
  return tokens;
}

std::vector<double> reference_logits(const TinyModel& m, const std::vector<int32_t>& tokens,
                                     ReferenceCache* cache) {
  const int64_t T = static_cast<int64_t>(tokens.size()), group = kHeads / kHeadsKv;
  std::vector<std::vector<double>> x(T);
  for (int64_t t = 0; t < T; ++t)
    x[t].assign(m.embedding.begin() + tokens[t] * kDim,
                m.embedding.begin() + (tokens[t] + 1) * kDim);
  for (int64_t l = 0; l < kLayers; ++l) {
    std::vector<std::vector<double>> q(T), k(T), v(T);  // pre-RoPE
    for (int64_t t = 0; t < T; ++t) {
      const auto h = rms_norm(x[t], m.attn_norm[l]);
      q[t] = apply(m.wq[l], h, kHeads * kHeadDim);
      k[t] = apply(m.wk[l], h, kHeadsKv * kHeadDim);
      v[t] = apply(m.wv[l], h, kHeadsKv * kHeadDim);
    }
    std::vector<std::vector<double>> att(T, std::vector<double>(kHeads * kHeadDim, 0.0));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t g = 0; g < kHeadsKv; ++g) {
        const KeyView view = cache ? cache->view(l, g, t) : causal_view(t);
        const int64_t n = static_cast<int64_t>(view.tokens.size());
        std::vector<std::vector<double>> keys(n);
        for (int64_t s = 0; s < n; ++s) {
          keys[s].assign(k[view.tokens[s]].begin() + g * kHeadDim,
                         k[view.tokens[s]].begin() + (g + 1) * kHeadDim);
          rope_half(keys[s].data(), view.positions[s]);
        }
        std::vector<double> probability_sum(n, 0.0);
        for (int64_t hh = g * group; hh < (g + 1) * group; ++hh) {
          std::vector<double> query(q[t].begin() + hh * kHeadDim,
                                    q[t].begin() + (hh + 1) * kHeadDim);
          rope_half(query.data(), view.query_position);
          std::vector<double> scores(n);
          double max = -INFINITY;
          for (int64_t s = 0; s < n; ++s) {
            double dot = 0.0;
            for (int64_t d = 0; d < kHeadDim; ++d) dot += query[d] * keys[s][d];
            scores[s] = dot / std::sqrt(static_cast<double>(kHeadDim));
            max = std::max(max, scores[s]);
          }
          double sum = 0.0;
          for (auto& s : scores) sum += (s = std::exp(s - max));
          for (int64_t s = 0; s < n; ++s) {
            probability_sum[s] += scores[s] / sum;
            for (int64_t d = 0; d < kHeadDim; ++d)
              att[t][hh * kHeadDim + d] += scores[s] / sum * v[view.tokens[s]][g * kHeadDim + d];
          }
        }
        if (cache) cache->observe(l, g, t, view, probability_sum);
      }
    for (int64_t t = 0; t < T; ++t) {
      const auto o = apply(m.wo[l], att[t], kDim);
      for (int64_t i = 0; i < kDim; ++i) x[t][i] += o[i];
      const auto h = rms_norm(x[t], m.ffn_norm[l]);
      auto gate = apply(m.gate[l], h, kFfn);
      const auto up = apply(m.up[l], h, kFfn);
      for (int64_t i = 0; i < kFfn; ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const auto down = apply(m.down[l], gate, kDim);
      for (int64_t i = 0; i < kDim; ++i) x[t][i] += down[i];
    }
  }
  std::vector<double> logits(T * m.vocab);
  for (int64_t t = 0; t < T; ++t) {
    const auto h = rms_norm(x[t], m.output_norm);
    const auto y = apply(m.embedding, h, m.vocab);
    std::copy(y.begin(), y.end(), logits.begin() + t * m.vocab);
  }
  return logits;
}

}  // namespace attnkit::model
