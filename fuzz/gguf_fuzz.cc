// Fuzz target: the GGUF reader (header, metadata, tensor table), then, when the file parses, the
// model loader and a forward pass of a few tokens on it. The seeds are a tiny Llama model
// (fuzz/corpus/gguf_fuzz/, written by fuzz/make_seeds.cc) and its truncations.
// Property: every file is either refused with one clean Error or loads and runs.
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_support.h"
#include "model/gguf.h"
#include "model/llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit;
  using namespace attnkit::model;
  try {
    GgufFile file = GgufFile::from_bytes(std::vector<uint8_t>(data, data + size));
    // Every accessor over every entry, as `attnkit model info` reads them.
    for (const auto& entry : file.metadata()) (void)file.find(entry.first);
    for (const auto& tensor : file.tensors()) (void)file.find_tensor(tensor.name);
    auto model = std::make_shared<const LlamaModel>(std::move(file));
    LlamaSession session(model, /*max_context=*/8, /*threads=*/1);
    std::vector<int32_t> tokens = model->tokenizer().encode("Hi, attnkit!");
    if (tokens.size() > 4) tokens.resize(4);
    if (tokens.empty()) tokens.push_back(0);
    session.forward(tokens.data(), static_cast<int64_t>(tokens.size()));
    const std::vector<float> logits = session.last_logits();
    fuzz::expect(static_cast<int64_t>(logits.size()) == model->config().vocab, "logits size");
    const int32_t next = 0;
    session.forward(&next, 1);  // one decode step
  } catch (const Error& error) {
    fuzz::expect_clean_message(error.what());
  }
  return 0;
}
