// The Llama forward pass on a tiny model written by the test (2 layers, dim 128, 2 query heads
// sharing 1 kv head, mixed weight types), against a double-precision reference written the way
// Hugging Face computes it: un-permuted Q/K weights and rotate-half RoPE. Agreement proves the
// GGUF pairing convention end to end. Also: prefill == chunked prefill == token-by-token decode,
// and --pattern causal == dense.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "model/ggml_types.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "support/tiny_model.h"

namespace attnkit::model {
namespace {

using Matrix = std::vector<double>;

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

// Logits [T, vocab] of the whole sequence, causal, in double.
std::vector<double> reference_logits(const TinyModel& m, const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<std::vector<double>> x(T);
  for (int64_t t = 0; t < T; ++t)
    x[t].assign(m.embedding.begin() + tokens[t] * kDim,
                m.embedding.begin() + (tokens[t] + 1) * kDim);
  for (int64_t l = 0; l < kLayers; ++l) {
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      const auto h = rms_norm(x[t], m.attn_norm[l]);
      q[t] = apply(m.wq[l], h, kHeads * kHeadDim);
      k[t] = apply(m.wk[l], h, kHeadsKv * kHeadDim);
      v[t] = apply(m.wv[l], h, kHeadsKv * kHeadDim);
      for (int64_t hh = 0; hh < kHeads; ++hh) rope_half(&q[t][hh * kHeadDim], t);
      for (int64_t g = 0; g < kHeadsKv; ++g) rope_half(&k[t][g * kHeadDim], t);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> att(kHeads * kHeadDim, 0.0);
      for (int64_t hh = 0; hh < kHeads; ++hh) {
        const int64_t g = hh / (kHeads / kHeadsKv);
        std::vector<double> scores(t + 1);
        double max = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          double s = 0.0;
          for (int64_t d = 0; d < kHeadDim; ++d)
            s += q[t][hh * kHeadDim + d] * k[j][g * kHeadDim + d];
          scores[j] = s / std::sqrt(static_cast<double>(kHeadDim));
          max = std::max(max, scores[j]);
        }
        double sum = 0.0;
        for (auto& s : scores) sum += (s = std::exp(s - max));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < kHeadDim; ++d)
            att[hh * kHeadDim + d] += scores[j] / sum * v[j][g * kHeadDim + d];
      }
      const auto o = apply(m.wo[l], att, kDim);
      for (int64_t i = 0; i < kDim; ++i) x[t][i] += o[i];
      const auto h = rms_norm(x[t], m.ffn_norm[l]);
      auto g = apply(m.gate[l], h, kFfn);
      const auto u = apply(m.up[l], h, kFfn);
      for (int64_t i = 0; i < kFfn; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const auto d = apply(m.down[l], g, kDim);
      for (int64_t i = 0; i < kDim; ++i) x[t][i] += d[i];
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

std::vector<int32_t> sample_tokens(int64_t n) {
  std::vector<int32_t> tokens(n);
  std::mt19937 rng(99);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 256);
  return tokens;
}

std::vector<float> prefill_logits(LlamaSession& session, const std::vector<int32_t>& tokens,
                                  const Pattern* pattern = nullptr) {
  session.reset();
  session.forward(tokens.data(), static_cast<int64_t>(tokens.size()), pattern);
  const int64_t vocab = session.model().config().vocab;
  std::vector<float> logits(tokens.size() * vocab);
  session.logits(0, static_cast<int64_t>(tokens.size()), logits.data());
  return logits;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

TEST(ModelForward, LoadsTheTinyModel) {
  const LlamaConfig& c = tiny().model->config();
  EXPECT_EQ(c.layers, kLayers);
  EXPECT_EQ(c.dim, kDim);
  EXPECT_EQ(c.heads, kHeads);
  EXPECT_EQ(c.heads_kv, kHeadsKv);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.vocab, tiny().vocab);
  EXPECT_EQ(tiny().model->tokenizer().bos_id, 257);
}

TEST(ModelForward, PrefillMatchesDoubleReferenceWithHfRope) {
  const std::vector<int32_t> tokens = sample_tokens(40);
  LlamaSession session(tiny().model, 64, 2);
  const std::vector<float> fast = prefill_logits(session, tokens);
  const std::vector<double> ref = reference_logits(tiny(), tokens);
  // float32 throughout vs double: each product of length k <= 192 carries ~sqrt(k) * 6e-8
  // relative error; through 2 layers, softmax and norms that stays well under 1e-4 of the
  // logit scale. A wrong RoPE pairing or a missed permutation gives errors of order 1.
  const double tol = 1e-4 * max_abs(ref);
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(fast[i] - ref[i]));
  EXPECT_LE(worst, tol) << "logit scale " << max_abs(ref);
}

TEST(ModelForward, DecodeAndChunkedPrefillMatchPrefill) {
  const std::vector<int32_t> tokens = sample_tokens(40);
  LlamaSession session(tiny().model, 64, 2);
  const std::vector<float> full = prefill_logits(session, tokens);
  const int64_t vocab = tiny().vocab;
  double scale = 0.0;
  for (float v : full) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  // Mat-muls are bitwise batch-independent (ModelQMatmul.TokenResultsDoNotDependOnBatch); only
  // the attention kernels' summation order differs between prefill and decode: a few float
  // roundings per layer, amplified at most ~10x by the later layers.
  const double tol = 1e-5 * scale;
  session.reset();
  for (int64_t t = 0; t < 40; ++t) {
    session.forward(&tokens[t], 1);
    const std::vector<float> step = session.last_logits();
    for (int64_t i = 0; i < vocab; ++i)
      ASSERT_NEAR(step[i], full[t * vocab + i], tol) << "position " << t << " logit " << i;
  }
  session.reset();
  session.forward(tokens.data(), 25);
  session.forward(tokens.data() + 25, 15);
  std::vector<float> tail(15 * vocab);
  session.logits(0, 15, tail.data());
  for (int64_t i = 0; i < 15 * vocab; ++i) ASSERT_NEAR(tail[i], full[25 * vocab + i], tol) << i;
}

TEST(ModelForward, CausalPatternEqualsDense) {
  const std::vector<int32_t> tokens = sample_tokens(100);
  LlamaSession session(tiny().model, 128, 2);
  const std::vector<float> dense = prefill_logits(session, tokens);
  const auto causal = make_pattern("causal");
  const std::vector<float> patterned = prefill_logits(session, tokens, causal.get());
  double scale = 0.0, worst = 0.0;
  for (size_t i = 0; i < dense.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(dense[i])));
    worst = std::max(worst, static_cast<double>(std::fabs(dense[i] - patterned[i])));
  }
  EXPECT_LE(worst, 1e-5 * scale);
}

TEST(ModelForward, ContextOverflowIsAnError) {
  LlamaSession session(tiny().model, 8, 1);
  const std::vector<int32_t> tokens = sample_tokens(9);
  EXPECT_THROW(session.forward(tokens.data(), 9), Error);
  const int32_t bad = 100000;
  EXPECT_THROW(session.forward(&bad, 1), Error);
}

TEST(ModelForward, MissingOrMisshapenTensorsAreErrors) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 1);
  w.add_u32("llama.embedding_length", 64);
  w.add_u32("llama.feed_forward_length", 64);
  w.add_u32("llama.attention.head_count", 1);
  w.add_u32("llama.context_length", 64);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  EXPECT_THROW(LlamaModel(GgufFile::from_bytes(w.bytes())), Error);  // no token_embd
  w.add_tensor("token_embd.weight", 0, {32, 10}, std::vector<uint8_t>(32 * 10 * 4));
  EXPECT_THROW(LlamaModel(GgufFile::from_bytes(w.bytes())), Error);  // wrong width
  GgufWriter arch;
  arch.add_string("general.architecture", "gpt2");
  EXPECT_THROW(LlamaModel(GgufFile::from_bytes(arch.bytes())), Error);
}

}  // namespace
}  // namespace attnkit::model
