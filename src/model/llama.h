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
// KV cache layout [layer][kv_head][max_ctx][64] (f32): the keys of one (layer, kv head) are
// contiguous rows, so the attention kernel sees [1, Hkv, n_past + T, 64] through strides alone.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/qmatmul.h"
#include "model/tokenizer.h"

namespace attnkit {
class Pattern;
}

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
  LlamaSession(std::shared_ptr<const LlamaModel> model, int64_t max_context, int threads = 0);

  // Runs `count` tokens at positions n_past().. and appends them to the cache. With `pattern`,
  // attention of a multi-token step goes through pattern->run(); otherwise (and for one-token
  // decode steps) through attnkit::attention. Leaves the final-normed hidden states in hidden().
  void forward(const int32_t* tokens, int64_t count, const Pattern* pattern = nullptr);
  // logits[t * vocab + i] for hidden rows [first, first + count).
  void logits(int64_t first, int64_t count, float* out) const;
  std::vector<float> last_logits() const;

  void reset() { n_past_ = 0; }
  int64_t n_past() const { return n_past_; }
  int64_t max_context() const { return max_context_; }
  const std::vector<float>& hidden() const { return hidden_; }
  const LlamaModel& model() const { return *model_; }
  void set_capture(CaptureHook hook) { capture_ = std::move(hook); }

 private:
  std::shared_ptr<const LlamaModel> model_;
  int64_t max_context_;
  int threads_;
  int64_t n_past_ = 0;
  std::vector<float> cache_k_, cache_v_;
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_, hidden_, rope_;
  CaptureHook capture_;
};

}  // namespace attnkit::model
