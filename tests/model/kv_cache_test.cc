// KV-cache policies on the tiny model (2 query heads sharing 1 kv head: a GQA group of 2), against
// the double reference under the same policy written independently (tiny_reference.h): the
// streaming cache equals pos_shift decode (keys at slot positions) after evictions, H2O equals its
// rule recomputed in double, a cache that holds every token equals the full cache, and decode
// equals prefill until the first eviction.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "model/llama.h"
#include "support/tiny_model.h"
#include "support/tiny_reference.h"

namespace attnkit::model {
namespace {

std::vector<int32_t> sample_tokens(int64_t n) { return random_byte_tokens(n, 7); }

// Logits of every position, decoding one token per step.
std::vector<float> decode_logits(LlamaSession& session, const std::vector<int32_t>& tokens) {
  const int64_t vocab = session.model().config().vocab;
  std::vector<float> out(tokens.size() * vocab);
  session.reset();
  for (size_t t = 0; t < tokens.size(); ++t) {
    session.forward(&tokens[t], 1);
    session.logits(0, 1, &out[t * vocab]);
  }
  return out;
}

double scale_of(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Worst |a - b| over all logits.
template <class A, class B>
double worst(const A& a, const B& b) {
  double w = 0.0;
  for (size_t i = 0; i < a.size(); ++i) w = std::max(w, std::fabs(double(a[i]) - double(b[i])));
  return w;
}

// StreamingLLM decoding one token a step: after appending token t the cache holds the first S and
// the last R tokens; keys sit at their slot positions, the query at the last slot's.
class StreamingReference : public ReferenceCache {
 public:
  StreamingReference(int64_t sinks, int64_t recent) : sinks_(sinks), recent_(recent) {}
  KeyView view(int64_t, int64_t, int64_t t) override {
    KeyView v;
    for (int64_t j = 0; j <= t; ++j)
      if (t + 1 <= sinks_ + recent_ || j < sinks_ || j > t - recent_) v.tokens.push_back(j);
    for (size_t s = 0; s < v.tokens.size(); ++s) v.positions.push_back(static_cast<int64_t>(s));
    v.query_position = static_cast<int64_t>(v.tokens.size()) - 1;
    return v;
  }
  void observe(int64_t, int64_t, int64_t, const KeyView&, const std::vector<double>&) override {}

 private:
  int64_t sinks_, recent_;
};

// H2O's real drop in double: each (layer, kv head) keeps tokens with accumulated probabilities;
// after a step, beyond H + R tokens, the last R and the top-H scores of the rest stay.
class H2oReference : public ReferenceCache {
 public:
  H2oReference(int64_t heavy, int64_t recent, bool cache_positions)
      : heavy_(heavy), recent_(recent), cache_positions_(cache_positions) {}
  KeyView view(int64_t layer, int64_t head, int64_t t) override {
    State& s = state_[{layer, head}];
    KeyView v;
    v.tokens = s.kept;
    v.tokens.push_back(t);
    for (size_t i = 0; i < v.tokens.size(); ++i)
      v.positions.push_back(cache_positions_ ? static_cast<int64_t>(i) : v.tokens[i]);
    v.query_position = v.positions.back();
    return v;
  }
  void observe(int64_t layer, int64_t head, int64_t, const KeyView& view,
               const std::vector<double>& p) override {
    State& s = state_[{layer, head}];
    s.kept = view.tokens;
    s.score.push_back(0.0);
    for (size_t i = 0; i < p.size(); ++i) s.score[i] += p[i];
    const int64_t n = static_cast<int64_t>(s.kept.size());
    if (n <= heavy_ + recent_) return;
    const int64_t old = n - recent_;
    std::vector<int64_t> order(old);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return s.score[a] > s.score[b]; });
    std::vector<char> keep(n, 0);
    for (int64_t i = 0; i < heavy_; ++i) keep[order[i]] = 1;
    for (int64_t i = old; i < n; ++i) keep[i] = 1;
    State next;
    for (int64_t i = 0; i < n; ++i)
      if (keep[i]) next.kept.push_back(s.kept[i]), next.score.push_back(s.score[i]);
    s = next;
  }

 private:
  struct State {
    std::vector<int64_t> kept;
    std::vector<double> score;
  };
  int64_t heavy_, recent_;
  bool cache_positions_;
  std::map<std::pair<int64_t, int64_t>, State> state_;
};

// float32 against double: as ModelForward.PrefillMatchesDoubleReferenceWithHfRope.
constexpr double kReferenceTolerance = 1e-4;

TEST(KvCache, StreamingEqualsPosShiftDecodeAfterEvictions) {
  const std::vector<int32_t> tokens = sample_tokens(70);
  StreamingReference policy(3, 17);
  const std::vector<double> ref = reference_logits(tiny(), tokens, &policy);
  LlamaSession session(tiny().model, 8, 2, CacheSpec::parse("streaming:sinks=3,recent=17"));
  const std::vector<float> got = decode_logits(session, tokens);
  EXPECT_LE(worst(got, ref), kReferenceTolerance * scale_of(ref));
  EXPECT_EQ(session.cache().size(), 20);
  EXPECT_EQ(session.n_past(), 70);
  // Slots hold tokens 0..2 and 53..69, in order.
  const int64_t* pos = session.cache().positions(1, 0);
  for (int64_t s = 0; s < 20; ++s) EXPECT_EQ(pos[s], s < 3 ? s : 50 + s);
}

// Window only (no sinks) is the same rule with S = 0.
TEST(KvCache, WindowOnlyEqualsItsReference) {
  const std::vector<int32_t> tokens = sample_tokens(50);
  StreamingReference policy(0, 12);
  const std::vector<double> ref = reference_logits(tiny(), tokens, &policy);
  LlamaSession session(tiny().model, 8, 2, CacheSpec::parse("streaming:sinks=0,recent=12"));
  EXPECT_LE(worst(decode_logits(session, tokens), ref), kReferenceTolerance * scale_of(ref));
}

TEST(KvCache, H2oEqualsItsRuleInDouble) {
  const std::vector<int32_t> tokens = sample_tokens(60);
  for (bool cache_positions : {false, true}) {
    H2oReference policy(6, 9, cache_positions);
    const std::vector<double> ref = reference_logits(tiny(), tokens, &policy);
    const std::string spec =
        std::string("h2o:heavy=6,recent=9,pos=") + (cache_positions ? "cache" : "original");
    LlamaSession session(tiny().model, 8, 2, CacheSpec::parse(spec));
    EXPECT_LE(worst(decode_logits(session, tokens), ref), kReferenceTolerance * scale_of(ref))
        << spec;
    EXPECT_EQ(session.cache().size(), 15);
    // The last 9 slots are the last 9 tokens; the heavy ones are older, in position order.
    for (int64_t l = 0; l < kLayers; ++l) {
      const int64_t* pos = session.cache().positions(l, 0);
      for (int64_t s = 6; s < 15; ++s) EXPECT_EQ(pos[s], 45 + s);
      for (int64_t s = 1; s < 6; ++s) EXPECT_LT(pos[s - 1], pos[s]);
      EXPECT_LT(pos[5], 51);
    }
  }
}

// With room for every token, each policy is the full cache (bitwise: no key is re-rotated and
// the same kernels run; H2O adds only the column-sum pass).
TEST(KvCache, ACacheThatHoldsEveryTokenIsTheFullCache) {
  const std::vector<int32_t> tokens = sample_tokens(40);
  LlamaSession full(tiny().model, 40, 2);
  const std::vector<float> want = decode_logits(full, tokens);
  for (const char* spec : {"streaming:sinks=4,recent=36", "streaming:sinks=0,recent=40",
                           "h2o:heavy=20,recent=20", "h2o:heavy=0,recent=40,pos=cache"}) {
    LlamaSession session(tiny().model, 8, 2, CacheSpec::parse(spec));
    EXPECT_EQ(worst(decode_logits(session, tokens), want), 0.0) << spec;
  }
}

// Prefill (in the policy's steps) equals decode until the first eviction.
TEST(KvCache, PrefillEqualsDecodeBeforeEviction) {
  const std::vector<int32_t> tokens = sample_tokens(40);
  const int64_t vocab = tiny().vocab;
  for (const char* spec : {"streaming:sinks=4,recent=50", "h2o:heavy=30,recent=16"}) {
    LlamaSession session(tiny().model, 8, 2, CacheSpec::parse(spec));
    const std::vector<float> decoded = decode_logits(session, tokens);
    session.reset();
    session.forward(tokens.data(), 40);  // h2o: steps of 16, 16, 8
    std::vector<float> prefilled(40 * vocab);
    session.logits(0, 40, prefilled.data());
    double scale = 0.0;
    for (float v : decoded) scale = std::max(scale, double(std::fabs(v)));
    EXPECT_LE(worst(prefilled, decoded), 1e-5 * scale) << spec;
  }
}

// A 16-bit cache rounds each key and value once (relative 2^-11 for f16, 2^-8 for bf16): the logits
// move by about that relative amount of their scale, more than zero (the storage really is
// 16-bit) and far less than a wrong read would. Decode reads the cache in place with the f32
// query; prefill rounds the query too. Streaming over a 16-bit cache re-rotates its sinks in f32.
TEST(KvCache, SixteenBitCacheStaysWithinItsRounding) {
  const std::vector<int32_t> tokens = sample_tokens(48);
  LlamaSession full(tiny().model, 48, 2);
  const std::vector<float> want = decode_logits(full, tokens);
  double scale = 0.0;
  for (float v : want) scale = std::max(scale, double(std::fabs(v)));
  const int64_t vocab = tiny().vocab;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    const double unit = dtype == DType::kF16 ? 1.0 / 2048 : 1.0 / 256;
    for (const char* spec : {"full", "streaming:sinks=2,recent=30"}) {
      LlamaSession session(tiny().model, 48, 2, CacheSpec::parse(spec), dtype);
      const std::vector<float> got = decode_logits(session, tokens);
      LlamaSession f32(tiny().model, 48, 2, CacheSpec::parse(spec));
      const double error = worst(got, decode_logits(f32, tokens));
      EXPECT_GT(error, 0.0) << spec << " " << dtype_name(dtype);
      EXPECT_LE(error, 8.0 * unit * scale) << spec << " " << dtype_name(dtype);
    }
    LlamaSession session(tiny().model, 48, 2, CacheSpec{}, dtype);
    session.forward(tokens.data(), 48);
    std::vector<float> prefilled(48 * vocab);
    session.logits(0, 48, prefilled.data());
    EXPECT_LE(worst(prefilled, want), 8.0 * unit * scale) << dtype_name(dtype);
  }
}

TEST(KvCache, SpecsParseAndPrint) {
  EXPECT_EQ(CacheSpec::parse("full").str(), "full");
  EXPECT_EQ(CacheSpec::parse("streaming").str(), "streaming:sinks=4,recent=1020");
  EXPECT_EQ(CacheSpec::parse("streaming:recent=100,sinks=0").str(), "streaming:sinks=0,recent=100");
  EXPECT_EQ(CacheSpec::parse("h2o").str(), "h2o:heavy=512,recent=512,pos=original");
  EXPECT_EQ(CacheSpec::parse("h2o:heavy=8,recent=4,pos=cache").budget(), 12);
  for (const char* bad :
       {"", "lru", "full:x=1", "streaming:", "streaming:sinks", "streaming:sinks=-1",
        "streaming:recent=0", "streaming:heavy=3", "h2o:pos=abs", "h2o:heavy=1,heavy=2",
        "h2o:recent=9999999999", "streaming:sinks=4x"}) {
    try {
      CacheSpec::parse(bad, "--cache");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "--cache") << bad;
    }
  }
}

TEST(KvCache, PatternNeedsTheFullCache) {
  LlamaSession session(tiny().model, 8, 1, CacheSpec::parse("streaming:sinks=1,recent=4"));
  const std::vector<int32_t> tokens = sample_tokens(3);
  const auto pattern = make_pattern("causal");
  try {
    session.forward(tokens.data(), 3, pattern.get());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "pattern");
  }
}

}  // namespace
}  // namespace attnkit::model
