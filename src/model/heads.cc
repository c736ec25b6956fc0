#include "model/heads.h"

#include <algorithm>
#include <limits>
#include <random>
#include <string>

#include "attnkit/error.h"
#include "model/evaluate.h"

namespace attnkit::model {

std::vector<HeadScore> retrieval_scores(LlamaSession& session, int64_t length, int64_t trials,
                                        uint64_t seed) {
  const LlamaConfig& c = session.model().config();
  check(length >= 8 && 2 * length <= session.max_context(), "length",
        "must be in [8, max_context / 2 = " + std::to_string(session.max_context() / 2) +
            "], got " + std::to_string(length));
  check(trials >= 1 && trials <= 10000, "trials", "must be in [1, 10000]");
  const int64_t n = length, T = 2 * n, hd = c.head_dim, group = c.heads / c.heads_kv;
  const AttentionModifiers kept = session.modifiers();
  session.set_modifiers({});
  std::vector<double> hits(c.layers * c.heads, 0.0);
  // top[(layer * heads + h) * n + t]: the key with the highest score at query n + t.
  std::vector<int32_t> top(c.layers * c.heads * n);
  std::mt19937_64 rng(seed);
  const int64_t first_id = std::min<int64_t>(1000, c.vocab / 4);
  std::uniform_int_distribution<int32_t> id(
      static_cast<int32_t>(first_id), static_cast<int32_t>(std::min<int64_t>(40000, c.vocab) - 1));
  std::vector<float> logits(c.vocab);
  for (int64_t trial = 0; trial < trials; ++trial) {
    std::vector<int32_t> seq(T);
    for (int64_t t = 0; t < n; ++t) seq[t] = seq[n + t] = id(rng);
    session.set_capture(
        [&](int64_t layer, int64_t tokens, const float* q, const float* k, const float*) {
          if (tokens != T) return;
#pragma omp parallel for schedule(dynamic, 1)
          for (int64_t h = 0; h < c.heads; ++h)
            for (int64_t t = 0; t + 1 < n; ++t) {
              const int64_t p = n + t;
              const float* qi = q + p * c.heads * hd + h * hd;
              float best = -std::numeric_limits<float>::infinity();
              int32_t arg = 0;
              for (int64_t j = 0; j <= p; ++j) {
                const float* kj = k + j * c.heads_kv * hd + (h / group) * hd;
                float dot = 0.0f;
                for (int64_t d = 0; d < hd; ++d) dot += qi[d] * kj[d];
                if (dot > best) best = dot, arg = static_cast<int32_t>(j);
              }
              top[(layer * c.heads + h) * n + t] = arg;
            }
        });
    session.reset();
    session.forward(seq.data(), T);
    session.set_capture(nullptr);
    for (int64_t t = 0; t + 1 < n; ++t) {
      session.logits(n + t, 1, logits.data());
      const int32_t want = seq[t + 1];
      if (std::max_element(logits.begin(), logits.end()) - logits.begin() != want) continue;
      for (int64_t lh = 0; lh < c.layers * c.heads; ++lh) {
        const int32_t j = top[lh * n + t];
        if (j < n && seq[j] == want) hits[lh] += 1.0;
      }
    }
  }
  session.set_modifiers(kept);
  std::vector<HeadScore> out;
  for (int64_t lh = 0; lh < c.layers * c.heads; ++lh)
    out.push_back({lh / c.heads, lh % c.heads, hits[lh] / static_cast<double>(trials * (n - 1))});
  std::stable_sort(out.begin(), out.end(),
                   [](const HeadScore& a, const HeadScore& b) { return a.score > b.score; });
  return out;
}

std::vector<DocumentInfluence> document_influence(LlamaSession& session,
                                                  const std::vector<int32_t>& tokens, int64_t ctx,
                                                  int64_t max_windows,
                                                  const std::vector<HeadRef>& heads,
                                                  HeadMode mode) {
  check(ctx >= 2 && ctx <= session.max_context(), "ctx",
        "must be in [2, max_context = " + std::to_string(session.max_context()) + "], got " +
            std::to_string(ctx));
  const int64_t available = static_cast<int64_t>(tokens.size()) / ctx;
  check(available >= 1, "tokens",
        "has " + std::to_string(tokens.size()) + " tokens, fewer than one window of " +
            std::to_string(ctx));
  const int64_t windows = max_windows > 0 ? std::min(available, max_windows) : available;
  AttentionModifiers masked;
  masked.masked_heads = heads;
  masked.mask_mode = mode;
  std::vector<DocumentInfluence> out;
  for (int64_t w = 0; w < windows; ++w) {
    const std::vector<int32_t> doc(tokens.begin() + w * ctx, tokens.begin() + (w + 1) * ctx);
    DocumentInfluence d;
    d.index = w, d.start = w * ctx;
    session.set_modifiers({});
    d.base_nll = perplexity(session, doc, ctx, 1, nullptr).nll;
    session.set_modifiers(masked);
    d.masked_nll = perplexity(session, doc, ctx, 1, nullptr).nll;
    d.score = (d.masked_nll - d.base_nll) / d.base_nll;
    out.push_back(d);
  }
  session.set_modifiers({});
  return out;
}

}  // namespace attnkit::model
