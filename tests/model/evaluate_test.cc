// src/model/evaluate.cc on the tiny model (always present, so these run in every CI): greedy
// generation against an argmax the test takes itself, temperature sampling's reproducibility,
// perplexity against a log-softmax the test computes in double from the session's logits,
// passkey prompts and scoring, and log_sum_exp against a direct double sum.
#include "model/evaluate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "model/llama.h"
#include "support/tiny_model.h"

namespace attnkit::model {
namespace {

std::vector<int32_t> some_tokens(int64_t n, int32_t salt) {
  std::vector<int32_t> tokens(n);
  for (int64_t t = 0; t < n; ++t) tokens[t] = static_cast<int32_t>((t * 53 + salt) % 250);
  return tokens;
}

TEST(Evaluate, GreedyGenerationIsTheArgmaxAtEveryStep) {
  LlamaSession session(tiny().model, 64, 1);
  const std::vector<int32_t> prompt = some_tokens(12, 3);
  GenerateOptions options;
  options.max_tokens = 10;
  const std::vector<int32_t> generated = generate(session, prompt, options);
  // The test's own loop: prefill, then feed back the argmax of the last logits.
  LlamaSession mine(tiny().model, 64, 1);
  mine.forward(prompt.data(), static_cast<int64_t>(prompt.size()));
  std::vector<int32_t> expected;
  for (int step = 0; step < options.max_tokens; ++step) {
    const std::vector<float> logits = mine.last_logits();
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (next == 258 || next == 256) break;  // eos, <|endoftext|>
    expected.push_back(next);
    mine.forward(&next, 1);
  }
  EXPECT_EQ(generated, expected);
}

TEST(Evaluate, SamplingIsReproducibleBySeedAndDiffersAcrossSeeds) {
  auto sample = [](uint64_t seed) {
    LlamaSession session(tiny().model, 64, 1);
    GenerateOptions options;
    options.max_tokens = 16, options.temperature = 50.0, options.seed = seed;
    return generate(session, some_tokens(8, 1), options);
  };
  EXPECT_EQ(sample(5), sample(5));
  EXPECT_NE(sample(5), sample(6));  // 16 tokens, each nearly uniform over 259 at T = 50
}

TEST(Evaluate, PerplexityIsTheMeanNllOfTheNextTokenPerWindow) {
  const int64_t ctx = 20, windows = 3;
  const std::vector<int32_t> tokens = some_tokens(ctx * windows + 7, 11);  // a partial tail
  LlamaSession session(tiny().model, ctx, 1);
  const PerplexityResult r = perplexity(session, tokens, ctx, 0, nullptr);
  EXPECT_EQ(r.windows, windows);
  EXPECT_EQ(r.tokens, windows * (ctx - 1));
  const int64_t vocab = tiny().vocab;
  double nll = 0.0;
  for (int64_t w = 0; w < windows; ++w) {
    LlamaSession mine(tiny().model, ctx, 1);
    mine.forward(&tokens[w * ctx], ctx);
    std::vector<float> logits(ctx * vocab);
    mine.logits(0, ctx, logits.data());
    for (int64_t t = 0; t + 1 < ctx; ++t) {
      const float* row = &logits[t * vocab];
      double max = row[0], sum = 0.0;
      for (int64_t i = 0; i < vocab; ++i) max = std::max(max, double(row[i]));
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(row[i]) - max);
      nll += max + std::log(sum) - row[tokens[w * ctx + t + 1]];
    }
  }
  nll /= windows * (ctx - 1);
  EXPECT_NEAR(r.nll, nll, 1e-9 * std::max(1.0, nll));
  EXPECT_NEAR(r.ppl, std::exp(nll), 1e-9 * std::exp(nll));
  // max_windows caps the count; a causal pattern gives the same numbers.
  const PerplexityResult capped = perplexity(session, tokens, ctx, 2, nullptr);
  EXPECT_EQ(capped.windows, 2);
  const auto causal = make_pattern("causal");
  const PerplexityResult patterned = perplexity(session, tokens, ctx, 0, causal.get());
  EXPECT_NEAR(patterned.nll, r.nll, 1e-5 * r.nll);
}

// Collapse: identical chunks give cosine 1; otherwise the mean over pairs of the cosine of mean
// hidden states, computed here for two chunks.
TEST(Evaluate, LengthCollapseIsTheMeanPairwiseCosineOfMeanHiddenStates) {
  LlamaSession session(tiny().model, 16, 1);
  const std::vector<int32_t> same = {5, 6, 7, 8, 5, 6, 7, 8};
  EXPECT_NEAR(length_collapse(session, same, {4}, 2)[0].mean_cosine, 1.0, 1e-12);
  const std::vector<int32_t> tokens = {3, 9, 27, 81, 1, 2, 4, 8, 100, 120, 140, 160};
  const std::vector<CollapsePoint> points = length_collapse(session, tokens, {4, 6}, 2);
  ASSERT_EQ(points.size(), 2u);
  const int64_t dim = tiny().model->config().dim;
  std::vector<std::vector<double>> mean(2, std::vector<double>(dim, 0.0));
  for (int c = 0; c < 2; ++c) {
    session.reset();
    session.forward(tokens.data() + c * 6, 6);
    for (int64_t t = 0; t < 6; ++t)
      for (int64_t d = 0; d < dim; ++d) mean[c][d] += session.hidden()[t * dim + d] / 6.0;
  }
  double dot = 0.0, n0 = 0.0, n1 = 0.0;
  for (int64_t d = 0; d < dim; ++d)
    dot += mean[0][d] * mean[1][d], n0 += mean[0][d] * mean[0][d], n1 += mean[1][d] * mean[1][d];
  EXPECT_NEAR(points[1].mean_cosine, dot / std::sqrt(n0 * n1), 1e-9);
  EXPECT_EQ(points[1].length, 6);
  EXPECT_THROW(length_collapse(session, tokens, {7}, 2), Error);   // 14 > 12 tokens
  EXPECT_THROW(length_collapse(session, tokens, {17}, 1), Error);  // one chunk: no pair
}

TEST(Evaluate, LogSumExpMatchesADoubleSumAndSurvivesLargeLogits) {
  std::vector<float> row = {1.0f, -2.0f, 0.5f, 3.0f};
  double direct = 0.0;
  for (float x : row) direct += std::exp(double(x));
  EXPECT_NEAR(log_sum_exp(row.data(), 4), std::log(direct), 1e-12);
  for (float& x : row) x += 1000.0f;  // exp overflows in double without the max shift
  EXPECT_NEAR(log_sum_exp(row.data(), 4), 1000.0 + std::log(direct), 1e-9);
}

TEST(Evaluate, PasskeyScoresTeacherForcedArgmax) {
  const Tokenizer& tok = tiny().model->tokenizer();
  // passkey(seed 4) builds trial t from seed 4 * 1000003 + t.
  const PasskeyPrompt p = passkey_prompt(tok, 700, 4 * 1000003);
  const int64_t n = static_cast<int64_t>(p.prompt.size() + p.answer.size());
  EXPECT_LE(n, 700);
  EXPECT_EQ(tok.decode(p.answer), std::string(" ").append(std::to_string(p.key)));
  // The test's own scoring of that trial: correct iff argmax at every answer position
  // equals the answer token.
  LlamaSession session(tiny().model, 768, 1);
  std::vector<int32_t> all = p.prompt;
  all.insert(all.end(), p.answer.begin(), p.answer.end());
  session.forward(all.data(), static_cast<int64_t>(all.size()));
  const int64_t vocab = tiny().vocab;
  std::vector<float> logits(all.size() * vocab);
  session.logits(0, static_cast<int64_t>(all.size()), logits.data());
  bool correct = true;
  for (size_t a = 0; a < p.answer.size(); ++a) {
    const float* row = &logits[(p.prompt.size() - 1 + a) * vocab];
    correct &= std::max_element(row, row + vocab) - row == p.answer[a];
  }
  LlamaSession other(tiny().model, 768, 1);
  const PasskeyResult r = passkey(other, 700, 1, 4, nullptr);
  EXPECT_EQ(r.trials, 1);
  EXPECT_EQ(r.correct, correct ? 1 : 0);
  EXPECT_EQ(r.mean_tokens, static_cast<double>(p.prompt.size()));
}

}  // namespace
}  // namespace attnkit::model
