// Structured synthetic inputs with planted important keys; see planted_keys.h.
//
// Logit bookkeeping (scale = 1/sqrt(d)): a component a * sqrt(d)^(1/2) * u in q and
// b * sqrt(d)^(1/2) * u in k (u unit) adds a * b to scale * q . k. Each planted component uses
// a = b = sqrt(logit); the sink uses a small query part and a large key part.
#include "eval/planted_keys.h"

#include <cmath>
#include <random>
#include <vector>

#include "attnkit/error.h"

namespace attnkit {
namespace {

std::vector<float> unit_vector(std::mt19937_64& rng, int64_t dim) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> u(dim);
  double norm = 0.0;
  for (float& x : u) {
    x = normal(rng);
    norm += double(x) * x;
  }
  for (float& x : u) x = static_cast<float>(x / std::sqrt(norm));
  return u;
}

// Removes from x its components along the (orthonormal) rows of basis.
void project_out(const std::vector<std::vector<float>>& basis, std::vector<float>* x) {
  for (const auto& u : basis) {
    double along = 0.0;
    for (size_t c = 0; c < u.size(); ++c) along += double(u[c]) * (*x)[c];
    for (size_t c = 0; c < u.size(); ++c) (*x)[c] -= static_cast<float>(along * u[c]);
  }
}

// Gram-Schmidt, in place (vectors are random, hence independent with probability 1).
void orthonormalise(std::vector<std::vector<float>>* vectors) {
  for (size_t a = 0; a < vectors->size(); ++a) {
    std::vector<std::vector<float>> done(vectors->begin(), vectors->begin() + a);
    auto& x = (*vectors)[a];
    project_out(done, &x);
    double norm = 0.0;
    for (float c : x) norm += double(c) * c;
    for (float& c : x) c = static_cast<float>(c / std::sqrt(norm));
  }
}

}  // namespace

PlantedKeys make_planted_keys(const PlantedKeysOptions& o) {
  check(o.n >= 1 && o.dim >= 1 && o.batch >= 1, "planted", "n, dim and batch must be >= 1");
  check(o.heads_kv >= 1 && o.heads_q % o.heads_kv == 0, "planted",
        "heads_q must be a multiple of heads_kv");
  check(o.topics >= 1 && o.segment >= 1 && o.span >= 1 && o.local_length >= 1, "planted",
        "topics, segment, span and local_length must be >= 1");
  const int64_t n = o.n, dim = o.dim, group = o.heads_q / o.heads_kv;
  const float root_d = std::sqrt(std::sqrt(static_cast<float>(dim)));  // d^(1/4)
  const float needle = std::sqrt(o.needle_logit) * root_d;
  const float local = std::sqrt(o.local_logit) * root_d;
  Tensor q({o.batch, o.heads_q, n, dim}, DType::kF32);
  Tensor k({o.batch, o.heads_kv, n, dim}, DType::kF32);
  Tensor v({o.batch, o.heads_kv, n, dim}, DType::kF32);
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> topic_pick(0, o.topics - 1);
  for (int64_t b = 0; b < o.batch; ++b) {
    for (int64_t g = 0; g < o.heads_kv; ++g) {
      // Sink and topic directions, orthonormal when they fit (so planted matches do not leak
      // into one another); the local walk lives in their orthogonal complement.
      std::vector<std::vector<float>> basis(o.topics + 1);
      for (auto& u : basis) u = unit_vector(rng, dim);
      const bool orthogonal = o.topics + 1 < dim;
      if (orthogonal) orthonormalise(&basis);
      const std::vector<float> sink_dir = basis[0];
      const std::vector<std::vector<float>> topic(basis.begin() + 1, basis.end());
      // Needle spans: topic of each key (-1 = none) and its weight (1, or a phrase profile).
      std::vector<int64_t> key_topic(n, -1);
      std::vector<float> key_weight(n, 1.0f);
      std::uniform_int_distribution<int64_t> where(0, std::max<int64_t>(0, n - o.span));
      std::uniform_real_distribution<float> jitter(0.7f, 1.3f);
      for (int64_t t = 0; t < o.topics; ++t)
        for (int64_t s = 0; s < o.spans; ++s) {
          const int64_t at = where(rng);
          for (int64_t j = at; j < std::min(n, at + o.span); ++j) {
            key_topic[j] = t;
            if (o.phrase)
              key_weight[j] =
                  jitter(rng) *
                  static_cast<float>(std::sin(M_PI * (double(j - at) + 0.5) / double(o.span)));
          }
        }
      // A segment's topic is drawn among the topics with a span that starts before the
      // segment (so its needles are visible to causal queries), when there is one.
      std::vector<int64_t> first_span(o.topics, n);
      for (int64_t j = n - 1; j >= 0; --j)
        if (key_topic[j] >= 0) first_span[key_topic[j]] = j;
      std::vector<int64_t> segment_topic((n + o.segment - 1) / o.segment);
      for (size_t s = 0; s < segment_topic.size(); ++s) {
        std::vector<int64_t> seen;
        for (int64_t t = 0; t < o.topics; ++t)
          if (first_span[t] < static_cast<int64_t>(s) * o.segment) seen.push_back(t);
        segment_topic[s] = seen.empty() ? topic_pick(rng) : seen[rng() % seen.size()];
      }
      // Local component: an exponential moving average of white noise (r_i . r_j decays with
      // |i - j| over ~local_length tokens), or one fresh direction per chunk; renormalised to
      // unit norm per token.
      std::vector<float> walk(n * dim), state(dim, 0.0f);
      const float keep = std::exp(-1.0f / static_cast<float>(o.local_length));
      int64_t chunk_end = 0;
      for (int64_t i = 0; i < n; ++i) {
        double norm = 0.0;
        if (o.local_chunk <= 0) {
          for (int64_t c = 0; c < dim; ++c) state[c] = keep * state[c] + normal(rng);
        } else if (i == chunk_end) {
          for (int64_t c = 0; c < dim; ++c) state[c] = normal(rng);
          chunk_end =
              i + std::max<int64_t>(1, o.local_chunk / 2 + int64_t(rng() % (o.local_chunk + 1)));
        }
        std::vector<float> r = state;
        if (orthogonal) project_out(basis, &r);
        for (int64_t c = 0; c < dim; ++c) norm += double(r[c]) * r[c];
        for (int64_t c = 0; c < dim; ++c)
          walk[i * dim + c] = static_cast<float>(r[c] / std::sqrt(norm + 1e-30));
      }
      for (int64_t j = 0; j < n; ++j) {
        float* kj = k.f32() + ((b * o.heads_kv + g) * n + j) * dim;
        float* vj = v.f32() + ((b * o.heads_kv + g) * n + j) * dim;
        for (int64_t c = 0; c < dim; ++c) {
          float x = o.noise * normal(rng) + local * walk[j * dim + c];
          if (key_topic[j] >= 0) x += needle * key_weight[j] * topic[key_topic[j]][c];
          if (j < o.sink_tokens) x += o.sink_logit * root_d * sink_dir[c];
          kj[c] = x;
          vj[c] = normal(rng);
        }
      }
      for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t h = g * group + hh;
        for (int64_t i = 0; i < n; ++i) {
          float* qi = q.f32() + ((b * o.heads_q + h) * n + i) * dim;
          const auto& u = topic[segment_topic[i / o.segment]];
          for (int64_t c = 0; c < dim; ++c)
            qi[c] = o.noise * normal(rng) + local * walk[i * dim + c] + needle * u[c] +
                    root_d * sink_dir[c];
        }
      }
    }
  }
  PlantedKeys out;
  out.q = o.dtype == DType::kF32 ? std::move(q) : q.to(o.dtype);
  out.k = o.dtype == DType::kF32 ? std::move(k) : k.to(o.dtype);
  out.v = o.dtype == DType::kF32 ? std::move(v) : v.to(o.dtype);
  return out;
}

PlantedKeysOptions phrase_inputs(int64_t n, uint64_t seed) {
  PlantedKeysOptions o;
  o.batch = 1, o.heads_q = 4, o.heads_kv = 1, o.n = n, o.dim = 64, o.seed = seed;
  o.topics = 16, o.spans = 2, o.span = 8, o.phrase = true;
  o.segment = 512, o.local_chunk = 32, o.sink_tokens = 4;
  o.needle_logit = 9.0f, o.local_logit = 6.0f, o.sink_logit = 5.0f, o.noise = 0.2f;
  return o;
}

}  // namespace attnkit
