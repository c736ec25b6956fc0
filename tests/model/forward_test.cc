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
#include "support/tiny_reference.h"

namespace attnkit::model {
namespace {

std::vector<int32_t> sample_tokens(int64_t n) { return random_byte_tokens(n, 99); }

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

// Prefills tokens[0, first), then decodes the rest one token at a time (with `pattern`): the
// largest deviation of the decode steps' logits from `prefilled` and from `other`, and the
// largest |prefilled| logit (the scale of both).
struct DecodeGap {
  double worst = 0.0, from_other = 0.0, scale = 0.0;
};
DecodeGap decode_gap(LlamaSession& session, const std::vector<int32_t>& tokens, int64_t first,
                     const std::vector<float>& prefilled, const std::vector<float>& other,
                     const Pattern* pattern = nullptr) {
  const int64_t vocab = session.model().config().vocab;
  session.reset();
  session.forward(tokens.data(), first, pattern);
  DecodeGap gap;
  for (int64_t t = first; t < static_cast<int64_t>(tokens.size()); ++t) {
    session.forward(&tokens[t], 1, pattern);
    const std::vector<float> step = session.last_logits();
    for (int64_t i = 0; i < vocab; ++i) {
      const double want = prefilled[t * vocab + i];
      gap.scale = std::max(gap.scale, std::fabs(want));
      gap.worst = std::max(gap.worst, std::fabs(step[i] - want));
      gap.from_other = std::max(gap.from_other, std::fabs(step[i] - double(other[t * vocab + i])));
    }
  }
  return gap;
}

// Decode steps go through the pattern too, planned for one query bottom-right aligned: each sees
// what the same row of the pattern's prefill sees, so the logits agree; and they differ from dense
// decode (the pattern is really applied).
TEST(ModelForward, DecodeWithAPatternEqualsItsPrefill) {
  const std::vector<int32_t> tokens = sample_tokens(90);
  LlamaSession session(tiny().model, 96, 2);
  const std::vector<float> dense = prefill_logits(session, tokens);
  for (const char* spec : {"window:size=20", "streaming:sinks=3,window=17"}) {
    const auto pattern = make_pattern(spec);
    const std::vector<float> prefilled = prefill_logits(session, tokens, pattern.get());
    const DecodeGap gap = decode_gap(session, tokens, 30, prefilled, dense, pattern.get());
    EXPECT_LE(gap.worst, 1e-5 * gap.scale) << spec;
    EXPECT_GT(gap.from_other, 1e-3 * gap.scale) << spec;
  }
}

// Score modifiers on the model: every decode step equals its prefill row (Selective Attention's
// temperature at the absolute position, a temperature, uniform and zero head masks); switched
// off (s = 0, T = 1, no heads) the logits are the plain ones bit for bit.
TEST(ModelForward, ModifiedDecodeEqualsItsPrefill) {
  const std::vector<int32_t> tokens = sample_tokens(70);
  LlamaSession session(tiny().model, 96, 2);
  const std::vector<float> plain = prefill_logits(session, tokens);
  AttentionModifiers off;
  off.selective = {0.0f};
  session.set_modifiers(off);
  EXPECT_EQ(prefill_logits(session, tokens), plain);
  AttentionModifiers on;
  on.selective = {0.3f};
  on.temperature = 0.8f;
  on.masked_heads = {{0, 1}, {1, 0}};
  for (HeadMode mode : {HeadMode::kUniform, HeadMode::kZero}) {
    on.mask_mode = mode;
    session.set_modifiers(on);
    const std::vector<float> prefilled = prefill_logits(session, tokens);
    const DecodeGap gap = decode_gap(session, tokens, 20, prefilled, plain);
    EXPECT_LE(gap.worst, 1e-5 * gap.scale);
    EXPECT_GT(gap.from_other, 1e-3 * gap.scale);
  }
  // MoH: one of the two heads per token; every head kept (binary gates) is plain bit for bit.
  AttentionModifiers moh;
  moh.moh_top = 1;
  session.set_modifiers(moh);
  const std::vector<float> routed = prefill_logits(session, tokens);
  const DecodeGap gap = decode_gap(session, tokens, 20, routed, plain);
  EXPECT_LE(gap.worst, 1e-5 * gap.scale);
  EXPECT_GT(gap.from_other, 1e-3 * gap.scale);
  moh.moh_top = 2;
  session.set_modifiers(moh);
  EXPECT_EQ(prefill_logits(session, tokens), plain);
  AttentionModifiers bad;
  bad.masked_heads = {{0, tiny().model->config().heads}};
  EXPECT_THROW(session.set_modifiers(bad), Error);
  bad = {}, bad.moh_top = 3;  // more than the 2 heads
  EXPECT_THROW(session.set_modifiers(bad), Error);
}

// MoH's parameter-free router: per token the shared heads and the top k routed heads by
// ||q|| / std are kept; binary gates are 1, weighted gates follow the softmax and sum to k.
TEST(ModelForward, MohRouterKeepsTheTopHeadsByQueryNorm) {
  const int64_t heads = 5, hd = 4, tokens = 3;
  std::vector<float> q(tokens * heads * hd);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < hd; ++d) q[(t * heads + h) * hd + d] = float((h * 7 + t * 3) % 5 + 1);
  AttentionModifiers m;
  m.moh_top = 2, m.moh_shared = 1;
  std::vector<float> gates(heads * tokens);
  for (bool weighted : {false, true}) {
    m.moh_weighted = weighted;
    m.moh_gates(q.data(), tokens, heads, hd, gates.data());
    for (int64_t t = 0; t < tokens; ++t) {
      // ||q_h|| = 2 * value: routed heads 1..4 ranked by (h * 7 + t * 3) % 5.
      std::vector<int64_t> routed = {1, 2, 3, 4};
      std::stable_sort(routed.begin(), routed.end(), [&](int64_t a, int64_t b) {
        return (a * 7 + t * 3) % 5 > (b * 7 + t * 3) % 5;
      });
      EXPECT_EQ(gates[0 * tokens + t], 1.0f) << "shared head";
      double kept = 0.0;
      for (int64_t x = 0; x < 4; ++x) {
        const float g = gates[routed[x] * tokens + t];
        if (x >= 2) {
          EXPECT_EQ(g, 0.0f) << t << " " << routed[x];
        } else if (!weighted) {
          EXPECT_EQ(g, 1.0f);
        }
        kept += g;
      }
      EXPECT_NEAR(kept, 2.0, 1e-6);
      if (weighted) {
        EXPECT_GT(gates[routed[0] * tokens + t], gates[routed[1] * tokens + t]);
      }
    }
  }
}

// ACT on the model: beta = 1 detects without changing anything; beta = 0.4 changes the logits,
// and decode steps calibrate the sinks of the last prefill; it needs the full cache and no
// pattern.
TEST(ModelForward, ActCalibratesOnlyWithBetaBelowOne) {
  const std::vector<int32_t> tokens = sample_tokens(60);
  LlamaSession session(tiny().model, 64, 2);
  const std::vector<float> plain = prefill_logits(session, tokens);
  AttentionModifiers act;
  act.act = true, act.act_from = 0, act.act_options.beta = 1.0f;
  session.set_modifiers(act);
  EXPECT_EQ(prefill_logits(session, tokens), plain);
  size_t found = 0;
  for (const auto& layer : session.act_sinks())
    for (const auto& head : layer) found += head.size();
  EXPECT_GT(found, 0u) << "the tiny model has hidden sinks to calibrate";
  act.act_options.beta = 0.4f;
  session.set_modifiers(act);
  const std::vector<float> calibrated = prefill_logits(session, tokens);
  EXPECT_NE(calibrated, plain);
  const std::vector<std::vector<std::vector<int32_t>>> kept = session.act_sinks();
  session.forward(&tokens[0], 1);  // a decode step reuses them
  EXPECT_EQ(session.act_sinks(), kept);
  EXPECT_THROW(session.forward(&tokens[1], 1, make_pattern("window:size=8").get()), Error);
  LlamaSession streaming(tiny().model, 64, 2, CacheSpec::parse("streaming:sinks=2,recent=30"));
  EXPECT_THROW(streaming.set_modifiers(act), Error);
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
