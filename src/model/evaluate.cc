// Generation, perplexity and passkey evaluations (definitions in evaluate.h).
#include "model/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>

#include "attnkit/error.h"

namespace attnkit::model {

namespace {

int32_t argmax(const float* v, int64_t n) {
  return static_cast<int32_t>(std::max_element(v, v + n) - v);
}

const char kTask[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there.";
const char kGarbage[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char kQuestion[] = "What is the pass key? The pass key is";

std::string garbage_text(int64_t chars) {
  std::string text;
  while (static_cast<int64_t>(text.size()) < chars) {
    if (!text.empty()) text += ' ';
    text += kGarbage;
  }
  return text.substr(0, chars);
}

}  // namespace

double log_sum_exp(const float* logits, int64_t n) {
  const float max = *std::max_element(logits, logits + n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return max + std::log(sum);
}

std::vector<int32_t> generate(LlamaSession& session, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options) {
  check(!prompt.empty(), "prompt", "empty prompt");
  const Tokenizer& tokenizer = session.model().tokenizer();
  const int32_t end_of_text = tokenizer.find("<|endoftext|>");
  std::mt19937_64 rng(options.seed);
  session.reset();
  session.forward(prompt.data(), static_cast<int64_t>(prompt.size()), options.pattern);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    std::vector<float> logits = session.last_logits();
    int32_t next;
    if (options.temperature <= 0.0) {
      next = argmax(logits.data(), static_cast<int64_t>(logits.size()));
    } else {
      const float max = *std::max_element(logits.begin(), logits.end());
      std::vector<double> weights(logits.size());
      for (size_t k = 0; k < logits.size(); ++k)
        weights[k] = std::exp((logits[k] - max) / options.temperature);
      std::discrete_distribution<int32_t> pick(weights.begin(), weights.end());
      next = pick(rng);
    }
    if (next == tokenizer.eos_id || next == end_of_text) break;
    out.push_back(next);
    if (i + 1 == options.max_tokens || !session.can_append(1)) break;
    session.forward(&next, 1, options.pattern);
  }
  return out;
}

std::vector<LayerSinks> hidden_sinks(LlamaSession& session, const std::vector<int32_t>& tokens,
                                     int64_t ctx, int64_t windows, float tau) {
  check(ctx >= 2, "ctx", "must be at least 2, got " + std::to_string(ctx));
  check(windows >= 1 && windows * ctx <= static_cast<int64_t>(tokens.size()), "windows",
        std::to_string(windows) + " windows of " + std::to_string(ctx) +
            " tokens need more than the " + std::to_string(tokens.size()) + " given");
  AttentionModifiers detect;
  detect.act = true, detect.act_from = 0;
  detect.act_options.tau = tau, detect.act_options.beta = 1.0f;
  session.set_modifiers(detect);
  const LlamaConfig& c = session.model().config();
  std::vector<LayerSinks> out(c.layers);
  std::vector<std::map<int64_t, int64_t>> counts(c.layers);  // column -> times seen
  for (int64_t w = 0; w < windows; ++w) {
    session.reset();
    session.forward(tokens.data() + w * ctx, ctx);
    for (int64_t l = 0; l < c.layers; ++l)
      for (const std::vector<int32_t>& head : session.act_sinks()[l]) {
        out[l].per_head += static_cast<double>(head.size()) / (c.heads * windows);
        out[l].heads_with += head.empty() ? 0.0 : 1.0 / windows;
        for (int32_t j : head) ++counts[l][j];
      }
  }
  for (int64_t l = 0; l < c.layers; ++l) {
    std::vector<std::pair<int64_t, int64_t>> by_count;  // (-count, column)
    for (const auto& [column, n] : counts[l]) by_count.push_back({-n, column});
    std::sort(by_count.begin(), by_count.end());
    for (size_t x = 0; x < by_count.size() && x < 5; ++x) out[l].top.push_back(by_count[x].second);
  }
  session.set_modifiers({});
  return out;
}

std::vector<CollapsePoint> length_collapse(LlamaSession& session,
                                           const std::vector<int32_t>& tokens,
                                           const std::vector<int64_t>& lengths, int64_t chunks) {
  check(chunks >= 2, "chunks", "must be at least 2 (pairs), got " + std::to_string(chunks));
  const int64_t dim = session.model().config().dim;
  std::vector<CollapsePoint> out;
  for (int64_t length : lengths) {
    check(length >= 1 && length <= session.max_context(), "lengths",
          std::to_string(length) +
              " is outside [1, max_context = " + std::to_string(session.max_context()) + "]");
    check(length * chunks <= static_cast<int64_t>(tokens.size()), "tokens",
          std::to_string(chunks) + " chunks of " + std::to_string(length) + " need more than the " +
              std::to_string(tokens.size()) + " tokens given");
    std::vector<std::vector<double>> unit(chunks, std::vector<double>(dim, 0.0));
    for (int64_t c = 0; c < chunks; ++c) {
      session.reset();
      session.forward(tokens.data() + c * length, length);
      const std::vector<float>& hidden = session.hidden();
      double norm = 0.0;
      for (int64_t d = 0; d < dim; ++d) {
        double sum = 0.0;
        for (int64_t t = 0; t < length; ++t) sum += hidden[t * dim + d];
        unit[c][d] = sum / static_cast<double>(length);
        norm += unit[c][d] * unit[c][d];
      }
      for (double& x : unit[c]) x /= std::sqrt(norm);
    }
    double total = 0.0;
    for (int64_t a = 0; a < chunks; ++a)
      for (int64_t b = a + 1; b < chunks; ++b)
        for (int64_t d = 0; d < dim; ++d) total += unit[a][d] * unit[b][d];
    out.push_back({length, chunks, total / (0.5 * static_cast<double>(chunks * (chunks - 1)))});
  }
  return out;
}

PerplexityResult perplexity(LlamaSession& session, const std::vector<int32_t>& tokens, int64_t ctx,
                            int64_t max_windows, const Pattern* pattern) {
  check(ctx >= 2, "ctx", "must be at least 2, got " + std::to_string(ctx));
  const int64_t available = static_cast<int64_t>(tokens.size()) / ctx;
  check(available >= 1, "tokens",
        "has " + std::to_string(tokens.size()) +
            " tokens, fewer than one window of ctx = " + std::to_string(ctx));
  const int64_t windows = max_windows > 0 ? std::min(available, max_windows) : available;
  const int64_t vocab = session.model().config().vocab;
  constexpr int64_t kLogitRows = 64;  // logits are computed for this many positions at a time
  std::vector<float> logits(kLogitRows * vocab);
  const auto start = std::chrono::steady_clock::now();
  PerplexityResult result;
  double total = 0.0;
  for (int64_t w = 0; w < windows; ++w) {
    const int32_t* window = tokens.data() + w * ctx;
    session.reset();
    session.forward(window, ctx, pattern);
    for (int64_t first = 0; first < ctx - 1; first += kLogitRows) {
      const int64_t rows = std::min(kLogitRows, ctx - 1 - first);
      session.logits(first, rows, logits.data());
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = logits.data() + r * vocab;
        total += log_sum_exp(row, vocab) - row[window[first + r + 1]];
      }
    }
    result.tokens += ctx - 1;
  }
  result.windows = windows;
  result.nll = total / result.tokens;
  result.ppl = std::exp(result.nll);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

StreamPerplexityResult stream_perplexity(
    LlamaSession& session, const std::vector<int32_t>& tokens, int64_t count, int64_t segment,
    const Pattern* pattern, const std::function<void(int64_t done, int64_t count)>& progress) {
  check(count >= 2 && count <= static_cast<int64_t>(tokens.size()), "tokens",
        "must be in [2, " + std::to_string(tokens.size()) + "] (the text's tokens), got " +
            std::to_string(count));
  check(segment >= 1, "segment", "must be positive, got " + std::to_string(segment));
  check(session.can_append(count - 1), "max_context",
        std::to_string(count - 1) + " tokens exceed the session's full cache of " +
            std::to_string(session.max_context()) + " (a cache policy with a budget runs further)");
  const int64_t vocab = session.model().config().vocab;
  std::vector<float> logits(vocab);
  const auto start = std::chrono::steady_clock::now();
  StreamPerplexityResult result;
  session.reset();
  double total = 0.0, in_segment = 0.0;
  int64_t segment_start = 0;
  for (int64_t t = 0; t + 1 < count; ++t) {
    session.forward(&tokens[t], 1, pattern);
    session.logits(0, 1, logits.data());
    const double nll = log_sum_exp(logits.data(), vocab) - logits[tokens[t + 1]];
    total += nll;
    in_segment += nll;
    if (t + 1 == segment_start + segment || t + 2 == count) {
      result.segments.push_back(
          {segment_start, t + 1, std::exp(in_segment / (t + 1 - segment_start))});
      segment_start = t + 1;
      in_segment = 0.0;
    }
    if (progress && (t % 256 == 255 || t + 2 == count)) progress(t + 1, count - 1);
  }
  result.tokens = count - 1;
  result.nll = total / result.tokens;
  result.ppl = std::exp(result.nll);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.tokens_per_s = result.tokens / result.seconds;
  result.cache_tokens = session.cache().size();
  return result;
}

PasskeyPrompt passkey_prompt(const Tokenizer& tokenizer, int64_t length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  PasskeyPrompt p;
  p.key = std::uniform_int_distribution<int64_t>(1, 50000)(rng);
  const std::string key = std::to_string(p.key);
  const std::string info = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  // Token cost of the fixed parts and of one character of garbage, measured, not assumed.
  const int64_t fixed = static_cast<int64_t>(
      tokenizer.encode(std::string(kTask) + "\n\n" + info + "\n\n" + kQuestion, false).size());
  const std::string sample = garbage_text(4000);
  const double per_char =
      static_cast<double>(tokenizer.encode(sample, false).size()) / sample.size();
  p.answer = tokenizer.encode(" " + key, false);
  // Leave room for the answer and the joins (newlines, garbage cut mid-word).
  const int64_t budget = length - fixed - static_cast<int64_t>(p.answer.size()) - 8;
  check(budget > 0, "length",
        "must leave room for the garbage text, got " + std::to_string(length));
  const int64_t garbage = static_cast<int64_t>(budget / per_char);
  const int64_t prefix = std::uniform_int_distribution<int64_t>(0, garbage)(rng);
  const std::string text = std::string(kTask) + "\n" + garbage_text(prefix) + "\n" + info + "\n" +
                           garbage_text(garbage - prefix) + "\n" + kQuestion;
  p.prompt = tokenizer.encode(text, false);
  return p;
}

PasskeyResult passkey(LlamaSession& session, int64_t length, int64_t trials, uint64_t seed,
                      const Pattern* pattern) {
  check(trials >= 1, "trials", "must be at least 1, got " + std::to_string(trials));
  const LlamaModel& model = session.model();
  const int64_t vocab = model.config().vocab;
  PasskeyResult result;
  double tokens = 0.0;
  std::vector<float> logits;
  for (int64_t trial = 0; trial < trials; ++trial) {
    const PasskeyPrompt p = passkey_prompt(model.tokenizer(), length, seed * 1000003 + trial);
    std::vector<int32_t> sequence = p.prompt;
    sequence.insert(sequence.end(), p.answer.begin(), p.answer.end() - 1);
    const int64_t n = static_cast<int64_t>(sequence.size());
    session.reset();
    session.forward(sequence.data(), n, pattern);
    const int64_t first = static_cast<int64_t>(p.prompt.size()) - 1;
    const int64_t rows = static_cast<int64_t>(p.answer.size());
    logits.resize(rows * vocab);
    session.logits(first, rows, logits.data());
    bool ok = true;
    for (int64_t r = 0; r < rows && ok; ++r) ok = argmax(&logits[r * vocab], vocab) == p.answer[r];
    result.correct += ok;
    tokens += static_cast<double>(p.prompt.size());
    ++result.trials;
  }
  result.mean_tokens = tokens / trials;
  return result;
}

}  // namespace attnkit::model
