// Llama forward pass (formulas and cache layout in llama.h).
#include "model/llama.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "model/ggml_types.h"
#include "model/rope.h"

namespace attnkit::model {

namespace {

// A tensor of the file as a matrix [dims[1] rows, dims[0] cols], checked against the expected
// shape.
QMatrix matrix(const GgufFile& file, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensor& t = file.tensor(name);
  if (t.dims.size() != 2 || t.dims[0] != cols || t.dims[1] != rows)
    throw Error(file.argument(), file.path() + ": tensor '" + name + "' has shape " +
                                     t.shape_string() + ", expected [" + std::to_string(cols) +
                                     ", " + std::to_string(rows) + "]");
  if (cols % 32 != 0)
    throw Error(file.argument(), file.path() + ": tensor '" + name + "' row length " +
                                     std::to_string(cols) + " is not a multiple of 32");
  QMatrix m;
  m.type = static_cast<GgmlType>(t.type);
  m.data = t.data;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = ggml_row_bytes(*ggml_type_info(t.type), cols);
  return m;
}

std::vector<float> vector_of(const GgufFile& file, const std::string& name, int64_t n) {
  const GgufTensor& t = file.tensor(name);
  if (t.elements != n || t.row_length() != n)
    throw Error(file.argument(), file.path() + ": tensor '" + name + "' has shape " +
                                     t.shape_string() + ", expected [" + std::to_string(n) + "]");
  std::vector<float> out(n);
  dequantize_row(static_cast<GgmlType>(t.type), t.data, out.data(), n);
  return out;
}

void rmsnorm(const float* x, const float* weight, float* out, int64_t n, double eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(sum / n + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * weight[i];
}

int64_t checked_context(int64_t max_context) {
  check(max_context > 0 && max_context <= (int64_t{1} << 22), "max_context",
        "context must be in [1, 4194304], got " + std::to_string(max_context));
  return max_context;
}

}  // namespace

std::shared_ptr<const LlamaModel> LlamaModel::load(const std::string& path,
                                                   const std::string& argument) {
  return std::make_shared<const LlamaModel>(GgufFile::open(path, argument));
}

LlamaModel::LlamaModel(GgufFile file) : file_(std::move(file)) {
  const GgufFile& f = file_;
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama")
    throw Error(f.argument(), f.path() + ": architecture '" + arch + "' is not supported (llama)");
  LlamaConfig& c = config_;
  c.layers = f.get_int("llama.block_count");
  c.dim = f.get_int("llama.embedding_length");
  c.heads = f.get_int("llama.attention.head_count");
  c.heads_kv = f.get_int("llama.attention.head_count_kv", c.heads);
  c.ffn = f.get_int("llama.feed_forward_length");
  c.context_train = f.get_int("llama.context_length");
  c.rope_theta = f.get_real("llama.rope.freq_base", 10000.0);
  c.rms_eps = f.get_real("llama.attention.layer_norm_rms_epsilon");
  auto positive = [&](int64_t v, int64_t max, const char* what) {
    if (v <= 0 || v > max)
      throw Error(f.argument(), f.path() + ": " + what + " = " + std::to_string(v) +
                                    " is out of range [1, " + std::to_string(max) + "]");
  };
  positive(c.layers, 1024, "llama.block_count");
  positive(c.dim, 1 << 16, "llama.embedding_length");
  positive(c.heads, 1024, "llama.attention.head_count");
  positive(c.heads_kv, c.heads, "llama.attention.head_count_kv");
  positive(c.ffn, 1 << 18, "llama.feed_forward_length");
  if (c.dim % c.heads != 0 || c.heads % c.heads_kv != 0)
    throw Error(f.argument(), f.path() + ": heads do not divide the embedding or each other");
  c.head_dim = f.get_int("llama.attention.key_length", c.dim / c.heads);
  const int64_t rope_dims = f.get_int("llama.rope.dimension_count", c.head_dim);
  if (rope_dims != c.head_dim || c.head_dim % 2 != 0)
    throw Error(f.argument(), f.path() + ": rope dimension " + std::to_string(rope_dims) +
                                  " must equal the (even) head dimension " +
                                  std::to_string(c.head_dim));
  if (!(c.rms_eps > 0.0) || !(c.rope_theta > 0.0))
    throw Error(f.argument(), f.path() + ": rms epsilon and rope base must be positive");

  const GgufTensor& embd = f.tensor("token_embd.weight");
  if (embd.dims.size() != 2)
    throw Error(f.argument(), f.path() + ": token_embd.weight must be 2-D");
  c.vocab = embd.dims[1];
  embedding_ = matrix(f, "token_embd.weight", c.dim, c.vocab);
  output_ =
      f.find_tensor("output.weight") ? matrix(f, "output.weight", c.dim, c.vocab) : embedding_;
  output_norm_ = vector_of(f, "output_norm.weight", c.dim);
  const int64_t q_dim = c.heads * c.head_dim, kv_dim = c.heads_kv * c.head_dim;
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LlamaLayer layer;
    layer.attn_norm = vector_of(f, p + "attn_norm.weight", c.dim);
    layer.ffn_norm = vector_of(f, p + "ffn_norm.weight", c.dim);
    layer.wq = matrix(f, p + "attn_q.weight", c.dim, q_dim);
    layer.wk = matrix(f, p + "attn_k.weight", c.dim, kv_dim);
    layer.wv = matrix(f, p + "attn_v.weight", c.dim, kv_dim);
    layer.wo = matrix(f, p + "attn_output.weight", q_dim, c.dim);
    layer.gate = matrix(f, p + "ffn_gate.weight", c.dim, c.ffn);
    layer.up = matrix(f, p + "ffn_up.weight", c.dim, c.ffn);
    layer.down = matrix(f, p + "ffn_down.weight", c.ffn, c.dim);
    layers_.push_back(std::move(layer));
  }
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(f));
  if (tokenizer_->vocab_size() > c.vocab)
    throw Error(f.argument(), f.path() + ": tokenizer has more tokens than the embedding rows");
}

LlamaSession::LlamaSession(std::shared_ptr<const LlamaModel> model, int64_t max_context,
                           int threads, const CacheSpec& cache, DType kv_dtype)
    : model_(std::move(model)),
      max_context_(max_context),
      threads_(threads),
      cache_(cache, model_->config().layers, model_->config().heads_kv, model_->config().head_dim,
             checked_context(max_context), model_->config().rope_theta, kv_dtype),
      plan_states_(model_->config().layers) {}

void LlamaSession::set_modifiers(const AttentionModifiers& modifiers) {
  const LlamaConfig& c = model_->config();
  modifiers.validate(c.layers, c.heads);
  check(!modifiers.act || cache_.spec().kind == CacheSpec::Kind::kFull, "act",
        "applies with the full cache only (its sinks are cache positions), not '" +
            cache_.spec().str() + "'");
  modifiers_ = modifiers;
  act_sinks_.assign(c.layers, {});
  head_modes_.assign(c.layers, {});
  for (const HeadRef& h : modifiers.masked_heads) {
    std::vector<HeadMode>& modes = head_modes_[h.layer];
    if (modes.empty()) modes.assign(c.heads, HeadMode::kNormal);
    modes[h.head] = modifiers.mask_mode;
  }
}

void LlamaSession::forward(const int32_t* tokens, int64_t count, const Pattern* pattern) {
  check(count > 0, "tokens", "nothing to run");
  check(pattern == nullptr || cache_.spec().kind == CacheSpec::Kind::kFull, "pattern",
        "applies with the full cache only, not '" + cache_.spec().str() + "'");
  check(pattern == nullptr || !modifiers_.act, "pattern", "does not combine with act");
  check(can_append(count), "max_context",
        "sequence of " + std::to_string(n_past_ + count) +
            " tokens exceeds the session's context " + std::to_string(max_context_));
  const LlamaConfig& c = model_->config();
  for (int64_t t = 0; t < count; ++t)
    check(tokens[t] >= 0 && tokens[t] < c.vocab, "tokens",
          "id " + std::to_string(tokens[t]) + " out of the vocabulary");
  hidden_.resize(count * c.dim);
  for (int64_t first = 0; first < count; first += cache_.step_limit())
    step(tokens + first, std::min(cache_.step_limit(), count - first), first, pattern);
}

void LlamaSession::step(const int32_t* tokens, int64_t count, int64_t first,
                        const Pattern* pattern) {
  const LlamaConfig& c = model_->config();
  const int64_t T = count, dim = c.dim, hd = c.head_dim;
  const int64_t q_dim = c.heads * hd, kv_dim = c.heads_kv * hd;
  const int nt = threads_ > 0 ? threads_ : omp_get_max_threads();
  x_.resize(T * dim);
  h_.resize(T * dim);
  q_.resize(T * q_dim);
  k_.resize(T * kv_dim);
  v_.resize(T * kv_dim);
  att_.resize(T * q_dim);
  gate_.resize(T * c.ffn);
  up_.resize(T * c.ffn);
  rope_.resize(T * hd);
  if (cache_.needs_raw_keys()) raw_k_.resize(T * kv_dim);
  cache_.make_room(T);
  const int64_t slots = cache_.size() + T;  // keys the step's attention sees
  if (cache_.needs_scores()) {
    lse_.resize(T * c.heads);
    col_sums_.resize(c.heads_kv * slots);
  }

  const QMatrix& embd = model_->embedding();
  for (int64_t t = 0; t < T; ++t)
    dequantize_row(embd.type, embd.row(tokens[t]), x_.data() + t * dim, dim);
  for (int64_t t = 0; t < T; ++t) rope_angles(n_past_ + t, hd, c.rope_theta, &rope_[t * hd]);

  const bool parallel = T >= 16;
  for (int64_t l = 0; l < c.layers; ++l) {
    const LlamaLayer& layer = model_->layers()[l];
#pragma omp parallel for num_threads(nt) if (parallel)
    for (int64_t t = 0; t < T; ++t)
      rmsnorm(&x_[t * dim], layer.attn_norm.data(), &h_[t * dim], dim, c.rms_eps);
    matmul(layer.wq, h_.data(), T, dim, q_.data(), q_dim, threads_);
    matmul(layer.wk, h_.data(), T, dim, k_.data(), kv_dim, threads_);
    matmul(layer.wv, h_.data(), T, dim, v_.data(), kv_dim, threads_);
    if (cache_.needs_raw_keys()) raw_k_.assign(k_.begin(), k_.end());
#pragma omp parallel for num_threads(nt) if (parallel)
    for (int64_t t = 0; t < T; ++t) {
      rope(&q_[t * q_dim], c.heads, hd, &rope_[t * hd]);
      rope(&k_[t * kv_dim], c.heads_kv, hd, &rope_[t * hd]);
    }
    if (capture_) capture_(l, T, q_.data(), k_.data(), v_.data());
    cache_.append(l, T, n_past_, k_.data(), raw_k_.data(), v_.data());

    // q and out: [T, Hq, hd] buffers viewed as [1, Hq, T, hd]; k, v: the cache's slots.
    AttentionArgs args;
    auto view = [&](float* data, int64_t heads, int64_t seq, int64_t s0, int64_t s1, int64_t s2,
                    int64_t last) {
      MutableTensorView v;
      v.data = data;
      v.dtype = DType::kF32;
      v.shape[0] = 1, v.shape[1] = heads, v.shape[2] = seq, v.shape[3] = last;
      v.stride[0] = s0, v.stride[1] = s1, v.stride[2] = s2, v.stride[3] = 1;
      return v;
    };
    args.q = view(q_.data(), c.heads, T, T * q_dim, hd, q_dim, hd);
    // The tile kernel (prefill, patterns) reads one dtype; only plain decode reads a 16-bit cache
    // with the f32 query.
    if (cache_.dtype() != DType::kF32 && (T > 16 || pattern != nullptr)) {
      q16_.resize(T * q_dim);
      const bool f16 = cache_.dtype() == DType::kF16;
      for (int64_t i = 0; i < T * q_dim; ++i)
        q16_[i] = f16 ? f32_to_f16(q_[i]) : f32_to_bf16(q_[i]);
      args.q.data = q16_.data();
      args.q.dtype = cache_.dtype();
    }
    args.out = view(att_.data(), c.heads, T, T * q_dim, hd, q_dim, hd);
    args.k = cache_.keys(l, slots);
    args.v = cache_.values(l, slots);
    args.causal = true;
    args.threads = threads_;
    if (modifiers_.temperature != 1.0f)
      args.scale = 1.0f / (std::sqrt(static_cast<float>(hd)) * modifiers_.temperature);
    args.position_scale = modifiers_.selective_of(l);
    args.first_position = n_past_;  // absolute positions, whatever the cache kept
    if (!head_modes_.empty() && !head_modes_[l].empty()) args.head_modes = head_modes_[l].data();
    if (modifiers_.moh_top > 0) {  // gates routed from this step's queries (RoPE keeps norms)
      moh_gates_.resize(c.heads * T);
      modifiers_.moh_gates(q_.data(), T, c.heads, hd, moh_gates_.data());
      args.output_gate = view(moh_gates_.data(), c.heads, T, c.heads * T, T, 1, 1);
    }
    if (cache_.needs_scores()) args.lse = view(lse_.data(), c.heads, T, T * c.heads, T, 1, 1);
    if (pattern != nullptr) {
      pattern->run(args, &plan_states_[l]);
    } else if (modifiers_.act && l >= modifiers_.act_from) {
      // A decode step calibrates the sinks its layer found last (ACT detects on a map of rows).
      ActOptions act = modifiers_.act_options;
      if (T == 1 && !act_sinks_[l].empty()) act.sinks = act_sinks_[l];
      std::vector<std::vector<int32_t>> sinks = attention_act(args, act);
      if (T > 1) act_sinks_[l] = std::move(sinks);
    } else {
      attention(args);
    }
    if (cache_.needs_scores()) {
      attention_column_sums(args, MutableTensorView::contiguous(col_sums_.data(), DType::kF32,
                                                                {1, c.heads_kv, slots, 1}));
      cache_.add_scores(l, slots, col_sums_.data());
    }

    matmul(layer.wo, att_.data(), T, q_dim, h_.data(), dim, threads_);
#pragma omp parallel for num_threads(nt) if (parallel)
    for (int64_t t = 0; t < T; ++t) {
      float* x = &x_[t * dim];
      for (int64_t i = 0; i < dim; ++i) x[i] += h_[t * dim + i];
      rmsnorm(x, layer.ffn_norm.data(), &h_[t * dim], dim, c.rms_eps);
    }
    matmul(layer.gate, h_.data(), T, dim, gate_.data(), c.ffn, threads_);
    matmul(layer.up, h_.data(), T, dim, up_.data(), c.ffn, threads_);
#pragma omp parallel for num_threads(nt) if (parallel)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = t * c.ffn; i < (t + 1) * c.ffn; ++i) {
        const float g = gate_[i];
        gate_[i] = g / (1.0f + std::exp(-g)) * up_[i];
      }
    matmul(layer.down, gate_.data(), T, c.ffn, h_.data(), dim, threads_);
#pragma omp parallel for num_threads(nt) if (parallel)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = t * dim; i < (t + 1) * dim; ++i) x_[i] += h_[i];
  }
  for (int64_t t = 0; t < T; ++t)
    rmsnorm(&x_[t * dim], model_->output_norm().data(), &hidden_[(first + t) * dim], dim,
            c.rms_eps);
  cache_.commit(T);
  n_past_ += T;
}

void LlamaSession::logits(int64_t first, int64_t count, float* out) const {
  const LlamaConfig& c = model_->config();
  check(first >= 0 && count >= 0 && (first + count) * c.dim <= static_cast<int64_t>(hidden_.size()),
        "logits", "rows out of range");
  matmul(model_->output(), hidden_.data() + first * c.dim, count, c.dim, out, c.vocab, threads_);
}

std::vector<float> LlamaSession::last_logits() const {
  const int64_t rows = static_cast<int64_t>(hidden_.size()) / model_->config().dim;
  check(rows > 0, "logits", "no forward pass yet");
  std::vector<float> out(model_->config().vocab);
  logits(rows - 1, 1, out.data());
  return out;
}

}  // namespace attnkit::model
