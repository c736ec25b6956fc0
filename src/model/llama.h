// Llama-architecture decoder (SmolLM2) over GGUF weights, with attention through attnkit.
//
// Per layer, for hidden states x [T, dim]:
//   h = rmsnorm(x) * attn_norm;  q = h Wq^T [T, Hq*64], k = h Wk^T, v = h Wv^T [T, Hkv*64]
//   RoPE on q and k in GGUF's pairing: each pair (x[2i], x[2i+1]) of a head rotates by
//     pos * theta^(-2i/64)   (the converter permuted Wq/Wk so adjacent pairs are the rotation
//     pairs)
//   k, v are appended to the KV cache; o = attention(q, cache) (causal, GQA); x += o Wo^T
//   h = rmsnorm(x) * ffn_norm;   x += (silu(h Wg^T) * (h Wu^T)) Wd^T
// then logits = (rmsnorm(x) * output_norm) E^T with the tied embedding E (no output.weight).
// rmsnorm(x) = x / sqrt(mean(x^2) + eps).
//
// The KV cache (kv_cache.h) holds, per layer, [kv_head][capacity][64] f32 rows, so the attention
// kernel sees [1, Hkv, slots, 64] through strides alone; its policy (full, streaming, h2o) decides
// which tokens stay and the positions their keys are rotated to. Query rows are rotated by their
// absolute positions n_past()...
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/pattern.h"
#include "model/attention_modifiers.h"
#include "model/gguf.h"
#include "model/kv_cache.h"
#include "model/qmatmul.h"
#include "model/tokenizer.h"

namespace attnkit::model {

struct LlamaConfig {
  int64_t layers = 0;
  int64_t dim = 0;
  int64_t heads = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;
  int64_t ffn = 0;
  int64_t vocab = 0;
  int64_t context_train = 0;
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
};

struct LlamaLayer {
  std::vector<float> attn_norm, ffn_norm;
  QMatrix wq, wk, wv, wo, gate, up, down;
};

class LlamaModel {
 public:
  // Loads (memory-maps) a llama GGUF; throws Error(argument, ...) for anything unexpected.
  static std::shared_ptr<const LlamaModel> load(const std::string& path,
                                                const std::string& argument = "model");
  // From an already parsed file (tests build small models in memory).
  explicit LlamaModel(GgufFile file);

  const GgufFile& file() const { return file_; }
  const LlamaConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::vector<LlamaLayer>& layers() const { return layers_; }
  const QMatrix& embedding() const { return embedding_; }
  const QMatrix& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }

 private:
  GgufFile file_;
  LlamaConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<LlamaLayer> layers_;
  QMatrix embedding_, output_;
  std::vector<float> output_norm_;
};

// Post-RoPE q [T, Hq*64] and the new k, v [T, Hkv*64] of one layer, as the forward pass sees them.
using CaptureHook = std::function<void(int64_t layer, int64_t tokens, const float* q,
                                       const float* k, const float* v)>;

// One sequence: KV cache and scratch buffers. Not thread-safe; the forward pass itself uses
// `threads` OpenMP threads.
class LlamaSession {
 public:
  // `max_context` bounds the full cache; the other policies keep a fixed budget and run for any
  // number of tokens.
  // `kv_dtype` (f32, f16, bf16) is the cache's storage: a decode step reads a 16-bit cache in
  // place with the f32 query; a longer step rounds the query to the cache's dtype too.
  LlamaSession(std::shared_ptr<const LlamaModel> model, int64_t max_context, int threads = 0,
               const CacheSpec& cache = {}, DType kv_dtype = DType::kF32);

  // Runs `count` tokens at positions n_past().. and appends them to the cache, in steps of at most
  // the cache's step limit. With `pattern` (full cache only), every step's attention goes through
  // pattern->run(), decode steps too (planned for one query against the cache, bottom-right
  // aligned, so decode sees what the same row of a prefill sees); otherwise through
  // attnkit::attention. Leaves the final-normed hidden states of all `count` tokens in hidden().
  void forward(const int32_t* tokens, int64_t count, const Pattern* pattern = nullptr);
  // logits[t * vocab + i] for hidden rows [first, first + count).
  void logits(int64_t first, int64_t count, float* out) const;
  std::vector<float> last_logits() const;

  void reset() {
    n_past_ = 0;
    for (auto& layer : act_sinks_) layer.clear();
    cache_.clear();
    for (auto& state : plan_states_) state.reset();
  }
  int64_t n_past() const { return n_past_; }
  int64_t max_context() const { return max_context_; }
  // Whether `count` more tokens fit (always, for a policy with a budget).
  bool can_append(int64_t count) const {
    return cache_.spec().kind != CacheSpec::Kind::kFull || n_past_ + count <= max_context_;
  }
  const KvCache& cache() const { return cache_; }
  const std::vector<float>& hidden() const { return hidden_; }
  const LlamaModel& model() const { return *model_; }
  void set_capture(CaptureHook hook) { capture_ = std::move(hook); }
  // How every later step's attention scores are changed (attention_modifiers.h); validated
  // against the model, errors naming "selective", "temperature", "masked_heads" or "mask_mode".
  void set_modifiers(const AttentionModifiers& modifiers);
  const AttentionModifiers& modifiers() const { return modifiers_; }
  // With ACT on: the sinks each layer calibrated in its last step of several tokens, per query
  // head (empty for layers below act_from).
  const std::vector<std::vector<std::vector<int32_t>>>& act_sinks() const { return act_sinks_; }

 private:
  // One step of count <= cache_.step_limit() tokens; hidden states to hidden_ + first * dim.
  void step(const int32_t* tokens, int64_t count, int64_t first, const Pattern* pattern);

  std::shared_ptr<const LlamaModel> model_;
  int64_t max_context_;
  int threads_;
  int64_t n_past_ = 0;
  KvCache cache_;
  std::vector<std::unique_ptr<PlanState>> plan_states_;  // per layer: what a pattern keeps (decode)
  std::vector<float> x_, h_, q_, k_, raw_k_, v_, att_, gate_, up_, hidden_, rope_, lse_, col_sums_;
  std::vector<float> moh_gates_;  // MoH: [Hq][T] gates of the step
  std::vector<uint16_t> q16_;  // the query rounded to a 16-bit cache's dtype (steps of > 16 tokens)
  CaptureHook capture_;
  AttentionModifiers modifiers_;
  std::vector<std::vector<HeadMode>> head_modes_;  // per layer: empty, or one mode per query head
  std::vector<std::vector<std::vector<int32_t>>> act_sinks_;  // [layer][head]: ACT's sinks
};

}  // namespace attnkit::model
