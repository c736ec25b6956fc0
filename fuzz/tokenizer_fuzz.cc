// Fuzz target: the BPE tokenizer on arbitrary bytes. The vocabulary has all 256 byte tokens, a
// few merges and the SmolLM2 special tokens, so its properties are exact:
//   decode(encode(text)) == text, with or without special-token parsing;
//   every id is in the vocabulary; the pre-tokenizer's pieces concatenate back to the text.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "model/tokenizer.h"

namespace {

using attnkit::model::Tokenizer;

const Tokenizer& tokenizer() {
  static const Tokenizer instance = [] {
    const std::vector<std::string>& alphabet = Tokenizer::byte_alphabet();
    std::vector<std::string> tokens = alphabet;
    const std::string space = alphabet[' '];
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"t", "h"}, {"th", "e"},  {space, "t"}, {space + "t", "he"}, {"i", "n"},
        {"e", "r"}, {space, "a"}, {"in", "g"},  {"1", "2"},          {"\xc3\xa9", "t"}};
    std::vector<std::string> merge_texts;
    for (const auto& [left, right] : merges) {
      tokens.push_back(left + right);
      merge_texts.push_back(left + " " + right);
    }
    std::vector<int32_t> types(tokens.size(), 1);
    for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
      tokens.push_back(special);
      types.push_back(3);
    }
    return Tokenizer(tokens, types, merge_texts);
  }();
  return instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const Tokenizer& tok = tokenizer();
  for (const bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, special);
    for (const int32_t id : ids) fuzz::expect(id >= 0 && id < tok.vocab_size(), "id in vocab");
    fuzz::expect(tok.decode(ids) == text, "decode(encode(text)) == text");
  }
  std::string joined;
  for (const std::string& piece : Tokenizer::pre_tokenize(text)) joined += piece;
  fuzz::expect(joined == text, "pre-tokenizer pieces cover the text");
  return 0;
}
