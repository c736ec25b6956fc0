// GPT-2 byte-level BPE tokenizer read from a GGUF vocabulary (tokenizer.ggml.model = "gpt2"),
// with the "smollm" pre-tokenizer:
//   1. special tokens (token_type 3 = control, 4 = user-defined) are matched verbatim first
//      (longest match wins) when parse_special is set;
//   2. every \p{N} code point is split off on its own;
//   3. the rest is split by the GPT-2 rule
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   4. each piece is mapped byte by byte to the GPT-2 printable alphabet (bytes_to_unicode) and
//      merged by BPE: repeatedly merge the adjacent pair whose "left right" merge has the lowest
//      rank in tokenizer.ggml.merges.
// No BOS is added (tokenizer.ggml.add_bos_token is false for SmolLM2). Decoding maps the alphabet
// back to bytes, so decode(encode(text)) == text for every valid UTF-8 string (and for any byte
// string when the vocabulary has all 256 byte tokens).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace attnkit::model {

class GgufFile;

class Tokenizer {
 public:
  // tokens: vocabulary strings in the byte-level alphabet; types: tokenizer.ggml.token_type
  // (may be empty: all normal); merges: "left right" strings in rank order.
  Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> types,
            const std::vector<std::string>& merges);
  static Tokenizer from_gguf(const GgufFile& file);

  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode(int32_t id) const;  // the bytes of one token

  // Id of a vocabulary string (alphabet form, e.g. "Ġthe"), or -1.
  int32_t find(std::string_view token) const;
  const std::string& token(int32_t id) const { return tokens_.at(id); }
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  bool is_special(int32_t id) const;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unknown_id = -1;  // stands for bytes the vocabulary cannot spell

  // GPT-2's bytes_to_unicode: the alphabet form (UTF-8) of each byte, indexed by the byte.
  // Printable bytes stand for themselves, the others for U+0100, U+0101, ... in byte order.
  static const std::vector<std::string>& byte_alphabet();

  // The pre-tokenizer alone (steps 2-3): byte pieces of a text without special tokens.
  static std::vector<std::string> pre_tokenize(std::string_view text);

 private:
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;
  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<std::string, int32_t> merge_ranks_;  // "left right" -> rank
  std::vector<int32_t> specials_;                         // sorted by length, longest first
  std::unordered_map<uint32_t, uint8_t> char_to_byte_;
};

}  // namespace attnkit::model
