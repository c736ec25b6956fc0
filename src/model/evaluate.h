// Language-model evaluations on a LlamaSession: greedy/sampled generation, perplexity over
// non-overlapping windows, and passkey retrieval.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"

namespace attnkit {
class Pattern;
}

namespace attnkit::model {

struct GenerateOptions {
  int64_t max_tokens = 32;
  double temperature = 0.0;  // 0: greedy (argmax)
  uint64_t seed = 0;
  const Pattern* pattern = nullptr;  // the prompt's prefill and every decode step
};
// Prompt tokens are prefilled in one step, then one token per decode step until max_tokens or an
// end token (eos or <|endoftext|>). Returns the generated ids (without the prompt).
std::vector<int32_t> generate(LlamaSession& session, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options);

// Perplexity over consecutive, non-overlapping windows of `ctx` tokens: each window starts with an
// empty cache; token t + 1 is scored from logits at t (ctx - 1 scored tokens per window).
struct PerplexityResult {
  int64_t tokens = 0;  // scored tokens
  int64_t windows = 0;
  double nll = 0.0;  // mean negative log-likelihood (nats)
  double ppl = 0.0;  // exp(nll)
  double seconds = 0.0;
};
PerplexityResult perplexity(LlamaSession& session, const std::vector<int32_t>& tokens, int64_t ctx,
                            int64_t max_windows, const Pattern* pattern);

// ACT's hidden sinks per layer (include/attnkit/act.h): over `windows` windows of ctx tokens,
// the columns other than each head's first sink whose mean attention exceeds tau. Detection only
// (the session runs ACT with beta = 1, the identity); the session's modifiers are replaced.
struct LayerSinks {
  double per_head = 0.0;     // hidden sinks per head, averaged over heads and windows
  double heads_with = 0.0;   // heads with at least one, averaged over windows
  std::vector<int64_t> top;  // the most frequent sink columns (up to 5), most frequent first
};
std::vector<LayerSinks> hidden_sinks(LlamaSession& session, const std::vector<int32_t>& tokens,
                                     int64_t ctx, int64_t windows, float tau);

// Length-induced embedding collapse (TempScale, ACL 2025): for each length L, `chunks`
// consecutive non-overlapping chunks of L tokens, each prefilled alone; its embedding is the mean
// of its final-normed hidden states; the point is the mean cosine similarity over all pairs of
// chunks. Collapse: it rises with L. (The paper measures encoders; SmolLM2 is a causal decoder,
// so this is the exploratory check of ../shared/research/seed_more.md section 4.)
struct CollapsePoint {
  int64_t length = 0, chunks = 0;
  double mean_cosine = 0.0;
};
std::vector<CollapsePoint> length_collapse(LlamaSession& session,
                                           const std::vector<int32_t>& tokens,
                                           const std::vector<int64_t>& lengths, int64_t chunks);

// Teacher-forced perplexity token by token: from an empty cache, one decode step per token over
// tokens[0, count), token t + 1 scored from the logits at t (count - 1 scored tokens), so that a
// cache policy with a budget runs past the trained context; `pattern` (full cache) applies to
// every step. Segments group the scored positions
// t in [k * segment, (k + 1) * segment). `progress(done, count)` is called now and then.
struct StreamSegment {
  int64_t start = 0, end = 0;  // scored positions [start, end)
  double ppl = 0.0;
};
struct StreamPerplexityResult {
  int64_t tokens = 0;  // scored tokens
  double nll = 0.0, ppl = 0.0;
  std::vector<StreamSegment> segments;
  double seconds = 0.0;
  double tokens_per_s = 0.0;
  int64_t cache_tokens = 0;  // cache slots in use at the end
};
StreamPerplexityResult stream_perplexity(
    LlamaSession& session, const std::vector<int32_t>& tokens, int64_t count, int64_t segment,
    const Pattern* pattern = nullptr,
    const std::function<void(int64_t done, int64_t count)>& progress = {});

// Passkey retrieval (Landmark Attention / LongLoRA prompt):
//   task, garbage prefix, "The pass key is K. Remember it. K is the pass key.", garbage suffix,
//   "What is the pass key? The pass key is"
// joined by newlines, with the garbage ("The grass is green. ...") sized so that prompt + answer
// is just under `length` tokens, the key uniform in [1, 50000] and its depth uniform. Scored
// teacher-forced: the trial passes when greedy decoding would emit exactly " K" (argmax equals
// every answer token), all in one prefill through `pattern`.
struct PasskeyPrompt {
  std::vector<int32_t> prompt;  // ends with "... The pass key is"
  std::vector<int32_t> answer;  // " K"
  int64_t key = 0;
};
PasskeyPrompt passkey_prompt(const Tokenizer& tokenizer, int64_t length, uint64_t seed);
struct PasskeyResult {
  int64_t trials = 0;
  int64_t correct = 0;
  double mean_tokens = 0.0;
  double accuracy() const { return trials ? static_cast<double>(correct) / trials : 0.0; }
};
PasskeyResult passkey(LlamaSession& session, int64_t length, int64_t trials, uint64_t seed,
                      const Pattern* pattern);

// log-sum-exp of a logit row, in double.
double log_sum_exp(const float* logits, int64_t n);

}  // namespace attnkit::model
