// The tiny Llama model of the model tests (2 layers, dim 128, 2 query heads sharing 1 kv head,
// mixed weight types: Q8_0, Q4_1, Q4_0, F16, F32), written in memory with GgufWriter. It also
// keeps each weight matrix as a Hugging Face reference reads it: dequantized from the file and,
// for Q and K, with the converter's row permutation undone.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/llama.h"

namespace attnkit::model {

constexpr int64_t kLayers = 2, kDim = 128, kHeads = 2, kHeadsKv = 1, kHeadDim = 64, kFfn = 192;
constexpr double kTheta = 10000.0, kEps = 1e-5;

struct TinyModel {
  std::shared_ptr<const LlamaModel> model;
  int64_t vocab = 0;  // the 256 byte tokens and 3 specials (bos 257, eos 258)
  std::vector<std::vector<float>> attn_norm, ffn_norm, wq, wk, wv, wo, gate, up, down;
  std::vector<float> embedding, output_norm;
};

// Built once (seeded), shared by every test.
const TinyModel& tiny();

}  // namespace attnkit::model
