// Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (run from the
// repository root: build-checked/make_seeds). The committed seeds came from this program; run it
// again after a format change.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "attnkit/npy.h"
#include "attnkit/pattern.h"
#include "attnkit/tensor.h"
#include "model/ggml_types.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace {

using namespace attnkit;
using namespace attnkit::model;
namespace fs = std::filesystem;

void write_file(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void npy_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  Tensor a({2, 3}, DType::kF32);
  for (int i = 0; i < 6; ++i) a.f32()[i] = 0.5f * i - 1.0f;
  write_npy((dir / "f32_2x3").string(), a, "seed");
  write_npy((dir / "f16_1x2x2x4").string(), Tensor({1, 2, 2, 4}, DType::kF32).to(DType::kF16),
            "seed");
  write_npy((dir / "f32_0x4").string(), Tensor({0, 4}, DType::kF32), "seed");
  // A version 2.0 header (uint32 length), the same dict.
  const std::string v1 = read_file(dir / "f32_2x3");
  const uint16_t length = static_cast<uint8_t>(v1[8]) | static_cast<uint8_t>(v1[9]) << 8;
  std::string v2 = v1.substr(0, 6) + std::string("\x02\x00", 2);
  v2 += std::string{static_cast<char>(length & 0xff), static_cast<char>(length >> 8), 0, 0};
  v2 += v1.substr(10);
  write_file(dir / "f32_2x3_v2", v2);
}

// A tiny Llama: 1 layer, dim 64, one head of 64, ffn 64, the 256 byte tokens plus specials,
// weights in F32, F16, Q8_0, Q4_0 and Q4_1 so every dequantiser is reached.
std::string tiny_gguf() {
  const int64_t dim = 64, ffn = 64;
  std::vector<std::string> tokens = Tokenizer::byte_alphabet();
  tokens.push_back("<|endoftext|>");
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 1);
  w.add_u32("llama.embedding_length", dim);
  w.add_u32("llama.feed_forward_length", ffn);
  w.add_u32("llama.attention.head_count", 1);
  w.add_u32("llama.attention.head_count_kv", 1);
  w.add_u32("llama.context_length", 64);
  w.add_u32("llama.rope.dimension_count", 64);
  w.add_f32("llama.rope.freq_base", 10000.0f);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "smollm");
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  w.add_i32_array("tokenizer.ggml.token_type", types);
  w.add_string_array("tokenizer.ggml.merges", {});
  w.add_u32("tokenizer.ggml.eos_token_id", 256);
  uint32_t seed = 1;
  auto matrix = [&](const std::string& name, GgmlType type, int64_t rows, int64_t cols) {
    std::vector<float> values(rows * cols);
    for (auto& x : values) x = ((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    w.add_tensor(name, static_cast<uint32_t>(type),
                 rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows},
                 quantize_rows(type, values.data(), rows, cols));
  };
  matrix("token_embd.weight", GgmlType::kQ8_0, static_cast<int64_t>(tokens.size()), dim);
  matrix("output_norm.weight", GgmlType::kF32, 1, dim);
  matrix("blk.0.attn_norm.weight", GgmlType::kF32, 1, dim);
  matrix("blk.0.ffn_norm.weight", GgmlType::kF32, 1, dim);
  matrix("blk.0.attn_q.weight", GgmlType::kQ4_1, dim, dim);
  matrix("blk.0.attn_k.weight", GgmlType::kQ4_0, dim, dim);
  matrix("blk.0.attn_v.weight", GgmlType::kF16, dim, dim);
  matrix("blk.0.attn_output.weight", GgmlType::kF32, dim, dim);
  matrix("blk.0.ffn_gate.weight", GgmlType::kQ8_0, ffn, dim);
  matrix("blk.0.ffn_up.weight", GgmlType::kQ4_0, ffn, dim);
  matrix("blk.0.ffn_down.weight", GgmlType::kQ4_1, dim, ffn);
  const std::vector<uint8_t> bytes = w.bytes();
  return {bytes.begin(), bytes.end()};
}

void gguf_seeds(const fs::path& dir) {
  const std::string model = tiny_gguf();
  write_file(dir / "tiny_llama.gguf", model);
  write_file(dir / "header_only.gguf", model.substr(0, 24));
}

void tokenizer_seeds(const fs::path& dir) {
  const std::vector<std::string> texts = {"Hello world",
                                          "the thing is 1234 and 12",
                                          "  spaces\t\ttabs\n\nnewlines ",
                                          "<|im_start|>user\nhi<|im_end|>",
                                          "caf\xc3\xa9 \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac",
                                          "broken \xff\xfe utf-8 \xc3",
                                          "I'm we'll they've it's",
                                          "\xf0\x9f\x98\x80 emoji"};
  for (size_t i = 0; i < texts.size(); ++i)
    write_file(dir / ("text" + std::to_string(i)), texts[i]);
}

void pattern_seeds(const fs::path& dir) {
  // Shape bytes: self-attention, 100 tokens, causal off / on, then each pattern's bare name
  // and its canonical spec with every default spelled out.
  const std::string plain("\x00\x64\x00\x00", 4), causal("\x08\x64\x00\x00", 4);
  int i = 0;
  for (const PatternInfo& info : list_patterns()) {
    write_file(dir / (info.name + "_" + std::to_string(i++)), plain + info.name);
    std::string spec = info.name;
    for (size_t p = 0; p < info.params.size(); ++p)
      spec += (p ? "," : ":") + info.params[p].name + "=" + info.params[p].default_value;
    write_file(dir / (info.name + "_" + std::to_string(i++)), causal + spec);
  }
}

void cli_seeds(const fs::path& dir) {
  const auto words = [](std::vector<std::string> list) {
    std::string bytes;
    for (size_t i = 0; i < list.size(); ++i) bytes += (i ? std::string(1, '\0') : "") + list[i];
    return bytes;
  };
  write_file(dir / "bench", words({"@ABCEFGHIJKTUa", "--nq", "128", "--nk", "300", "--pattern",
                                   "window:size=64", "--causal"}));
  write_file(dir / "scale",
             words({"BCDEFGb", "--scale", "0.125", "--threads", "2", "--seed", "-3"}));
  write_file(dir / "positional", words({"KL", "info", "--ctx", "1e9"}));
}

// Shapes and lists as index_lists_fuzz reads them: valid lists of each form, one with a duplicate.
void index_list_seeds(const fs::path& dir) {
  auto seed = [](uint8_t nq, uint8_t nk, uint8_t k, uint8_t form, std::vector<int32_t> values) {
    std::string bytes = {char(nq - 1), char(nk - 1), char(k), char(form)};
    bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * 4);
    return bytes;
  };
  write_file(dir / "shared", seed(3, 5, 2, 0, {0, 1, 4, -1, 2, 3}));
  write_file(dir / "per_head", seed(2, 4, 2, 1, {0, 1, 2, 3, -1, 3, 1, 0}));
  write_file(dir / "per_batch", seed(2, 3, 1, 2, {0, 1, 2, -1}));
  write_file(dir / "csr", seed(3, 6, 0, 3, {0, 2, 1, 3, 5, 0, 4, 1, 2, 3}));
  write_file(dir / "duplicate", seed(2, 4, 3, 0, {1, 1, 2, 0, 3, -1}));
}

}  // namespace

int main() {
  const fs::path root = "fuzz/corpus";
  npy_seeds(root / "npy_fuzz");
  gguf_seeds(root / "gguf_fuzz");
  tokenizer_seeds(root / "tokenizer_fuzz");
  pattern_seeds(root / "pattern_spec_fuzz");
  cli_seeds(root / "cli_args_fuzz");
  index_list_seeds(root / "index_lists_fuzz");
  return 0;
}
