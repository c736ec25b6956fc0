// The tiny Llama model of the model tests (tiny_model.h).
#include "support/tiny_model.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "model/ggml_types.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace attnkit::model {
namespace {

std::vector<std::string> byte_tokens() {
  std::vector<std::string> tokens = Tokenizer::byte_alphabet();
  for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    tokens.push_back(special);
  return tokens;
}

// convert_hf_to_gguf.py: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2): GGUF row
// h*hd + 2b + a holds HF row h*hd + a*hd/2 + b.
int64_t hf_row_of(int64_t gguf_row) {
  const int64_t h = gguf_row / kHeadDim, i = gguf_row % kHeadDim;
  return h * kHeadDim + (i % 2) * (kHeadDim / 2) + i / 2;
}

TinyModel build_tiny_model() {
  TinyModel tiny;
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](int64_t n, float scale, float offset = 0.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * normal(rng);
    return v;
  };
  const std::vector<std::string> tokens = byte_tokens();
  tiny.vocab = static_cast<int64_t>(tokens.size());
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", kLayers);
  w.add_u32("llama.embedding_length", kDim);
  w.add_u32("llama.feed_forward_length", kFfn);
  w.add_u32("llama.attention.head_count", kHeads);
  w.add_u32("llama.attention.head_count_kv", kHeadsKv);
  w.add_u32("llama.context_length", 256);
  w.add_u32("llama.rope.dimension_count", kHeadDim);
  w.add_f32("llama.rope.freq_base", static_cast<float>(kTheta));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(kEps));
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "smollm");
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  std::vector<int32_t> types(tokens.size(), 1);
  types[256] = types[257] = types[258] = 3;
  w.add_i32_array("tokenizer.ggml.token_type", types);
  w.add_string_array("tokenizer.ggml.merges", {});
  w.add_u32("tokenizer.ggml.bos_token_id", 257);
  w.add_u32("tokenizer.ggml.eos_token_id", 258);

  // Adds a matrix [rows, cols] of `type` and returns its dequantized rows in HF order.
  auto add_matrix = [&](const std::string& name, GgmlType type, int64_t rows, int64_t cols,
                        float scale, bool permuted) {
    const std::vector<float> values = random(rows * cols, scale);
    std::vector<uint8_t> bytes = quantize_rows(type, values.data(), rows, cols);
    std::vector<float> dequantized(rows * cols);
    const int64_t row_bytes = ggml_row_bytes(*ggml_type_info(static_cast<uint32_t>(type)), cols);
    for (int64_t r = 0; r < rows; ++r)
      dequantize_row(type, &bytes[r * row_bytes], &dequantized[r * cols], cols);
    w.add_tensor(name, static_cast<uint32_t>(type), {cols, rows}, std::move(bytes));
    if (!permuted) return dequantized;
    std::vector<float> hf(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(&hf[hf_row_of(r) * cols], &dequantized[r * cols], cols * sizeof(float));
    return hf;
  };
  auto add_norm = [&](const std::string& name) {
    std::vector<float> v = random(kDim, 0.1f, 1.0f);
    std::vector<uint8_t> bytes(kDim * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    w.add_tensor(name, static_cast<uint32_t>(GgmlType::kF32), {kDim}, std::move(bytes));
    return v;
  };
  tiny.embedding = add_matrix("token_embd.weight", GgmlType::kQ8_0, tiny.vocab, kDim, 1.0f, false);
  tiny.output_norm = add_norm("output_norm.weight");
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    tiny.attn_norm.push_back(add_norm(p + "attn_norm.weight"));
    tiny.ffn_norm.push_back(add_norm(p + "ffn_norm.weight"));
    tiny.wq.push_back(add_matrix(p + "attn_q.weight", GgmlType::kQ4_1, kHeads * kHeadDim, kDim,
                                 3 * in_scale, true));
    tiny.wk.push_back(add_matrix(p + "attn_k.weight", GgmlType::kQ4_1, kHeadsKv * kHeadDim, kDim,
                                 3 * in_scale, true));
    tiny.wv.push_back(add_matrix(p + "attn_v.weight", GgmlType::kQ8_0, kHeadsKv * kHeadDim, kDim,
                                 in_scale, false));
    tiny.wo.push_back(add_matrix(p + "attn_output.weight", GgmlType::kF32, kDim, kHeads * kHeadDim,
                                 in_scale, false));
    tiny.gate.push_back(
        add_matrix(p + "ffn_gate.weight", GgmlType::kQ4_0, kFfn, kDim, in_scale, false));
    tiny.up.push_back(add_matrix(p + "ffn_up.weight", GgmlType::kF16, kFfn, kDim, in_scale, false));
    tiny.down.push_back(add_matrix(p + "ffn_down.weight", GgmlType::kQ4_1, kDim, kFfn,
                                   1.0f / std::sqrt(static_cast<float>(kFfn)), false));
  }
  tiny.model = std::make_shared<const LlamaModel>(GgufFile::from_bytes(w.bytes()));
  return tiny;
}

}  // namespace

const TinyModel& tiny() {
  static const TinyModel model = build_tiny_model();
  return model;
}

}  // namespace attnkit::model
