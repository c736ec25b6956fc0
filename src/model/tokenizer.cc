// Byte-level BPE with the smollm pre-tokenizer (rules in tokenizer.h).
#include "model/tokenizer.h"

#include <algorithm>
#include <climits>

#include "attnkit/error.h"
#include "model/gguf.h"
#include "model/unicode_class.h"

namespace attnkit::model {

namespace {
// GPT-2 bytes_to_unicode: printable bytes map to themselves, the others, in byte order, to
// U+0100, U+0101, ...
uint32_t alphabet_code_point(int byte) {
  static const std::vector<uint32_t> points = [] {
    std::vector<uint32_t> cp(256);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      cp[b] = printable ? static_cast<uint32_t>(b) : next++;
    }
    return cp;
  }();
  return points[byte];
}
}  // namespace

namespace {

constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeUserDefined = 4;

// GPT-2 rule (step 3) on a piece free of digits-splitting concerns; appends byte pieces.
void split_gpt2(std::string_view text, const std::vector<CodePoint>& cps, size_t begin, size_t end,
                std::vector<std::string>& out) {
  auto cls = [&](size_t i) { return char_class(cps[i].value); };
  auto emit = [&](size_t a, size_t b) {  // code points [a, b)
    const uint32_t from = cps[a].begin;
    const uint32_t to = b < cps.size() ? cps[b].begin : static_cast<uint32_t>(text.size());
    out.emplace_back(text.substr(from, to - from));
  };
  auto run = [&](size_t i, CharClass c) {
    while (i < end && cls(i) == c) ++i;
    return i;
  };
  size_t i = begin;
  while (i < end) {
    const uint32_t c = cps[i].value;
    // Contractions: 's 't 'm 'd 're 've 'll (case-sensitive, as in GPT-2).
    if (c == '\'' && i + 1 < end) {
      const uint32_t n1 = cps[i + 1].value;
      const uint32_t n2 = i + 2 < end ? cps[i + 2].value : 0;
      if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
        emit(i, i + 3);
        i += 3;
        continue;
      }
    }
    // " ?X+" where X (letter, number or other) is the class of the first code point after an
    // optional single ' '.
    const size_t at = (c == ' ' && i + 1 < end && cls(i + 1) != CharClass::kSpace) ? i + 1 : i;
    const CharClass k = cls(at);
    if (k != CharClass::kSpace) {
      const size_t stop = run(at, k);
      emit(i, stop);
      i = stop;
      continue;
    }
    // Whitespace: \s+(?!\S) keeps the last space for the next word when a non-space follows.
    const size_t stop = run(i, CharClass::kSpace);
    if (stop == end || stop - i == 1) {
      emit(i, stop);
      i = stop;
    } else {
      emit(i, stop - 1);
      i = stop - 1;
    }
  }
}

}  // namespace

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) {
  std::vector<std::string> out;
  const std::vector<CodePoint> cps = decode_utf8(text);
  size_t begin = 0;
  for (size_t i = 0; i <= cps.size(); ++i) {
    if (i < cps.size() && char_class(cps[i].value) != CharClass::kNumber) continue;
    if (i > begin) split_gpt2(text, cps, begin, i, out);
    if (i < cps.size()) out.emplace_back(text.substr(cps[i].begin, cps[i].length));
    begin = i + 1;
  }
  return out;
}

Tokenizer::Tokenizer(std::vector<std::string> tokens, std::vector<int32_t> types,
                     const std::vector<std::string>& merges)
    : tokens_(std::move(tokens)), types_(std::move(types)) {
  check(!tokens_.empty(), "tokenizer", "empty vocabulary");
  check(types_.empty() || types_.size() == tokens_.size(), "tokenizer",
        "token_type has " + std::to_string(types_.size()) + " entries for " +
            std::to_string(tokens_.size()) + " tokens");
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) ids_.emplace(tokens_[i], static_cast<int32_t>(i));
  merge_ranks_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i)
    merge_ranks_.emplace(merges[i], static_cast<int32_t>(i));
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (is_special(static_cast<int32_t>(i)) && !tokens_[i].empty())
      specials_.push_back(static_cast<int32_t>(i));
  std::stable_sort(specials_.begin(), specials_.end(),
                   [this](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  for (int b = 0; b < 256; ++b) char_to_byte_[alphabet_code_point(b)] = static_cast<uint8_t>(b);
}

const std::vector<std::string>& Tokenizer::byte_alphabet() {
  static const std::vector<std::string> alphabet = [] {
    std::vector<std::string> chars(256);
    for (int b = 0; b < 256; ++b) append_utf8(chars[b], alphabet_code_point(b));
    return chars;
  }();
  return alphabet;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& file) {
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    throw Error(file.argument(), file.path() + ": tokenizer model '" + model +
                                     "' is not supported (only gpt2 byte-level BPE)");
  const std::string pre = file.get_string("tokenizer.ggml.pre", "default");
  if (pre != "smollm" && pre != "gpt2" && pre != "default")
    throw Error(file.argument(), file.path() + ": pre-tokenizer '" + pre + "' is not supported");
  const GgufValue& tokens = file.get_array("tokenizer.ggml.tokens");
  const GgufValue& merges = file.get_array("tokenizer.ggml.merges");
  if (tokens.element_type != GgufType::kString || merges.element_type != GgufType::kString)
    throw Error(file.argument(), file.path() + ": tokenizer tokens and merges must be strings");
  std::vector<int32_t> types;
  if (const GgufValue* t = file.find("tokenizer.ggml.token_type"))
    types.assign(t->integers.begin(), t->integers.end());
  Tokenizer tokenizer(tokens.strings, std::move(types), merges.strings);
  const int64_t n = tokenizer.vocab_size();
  auto id = [&](const char* key) {
    const int64_t v = file.get_int(key, -1);
    if (v >= n) throw Error(file.argument(), std::string(key) + " out of the vocabulary");
    return static_cast<int32_t>(v);
  };
  tokenizer.bos_id = id("tokenizer.ggml.bos_token_id");
  tokenizer.eos_id = id("tokenizer.ggml.eos_token_id");
  tokenizer.unknown_id = id("tokenizer.ggml.unknown_token_id");
  return tokenizer;
}

bool Tokenizer::is_special(int32_t id) const {
  if (types_.empty() || id < 0 || id >= static_cast<int32_t>(types_.size())) return false;
  return types_[id] == kTypeControl || types_[id] == kTypeUserDefined;
}

int32_t Tokenizer::find(std::string_view token) const {
  auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

void Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  // Symbols in the byte-level alphabet, one per input byte to start with.
  std::vector<std::string> symbols;
  symbols.reserve(piece.size());
  for (unsigned char b : piece) symbols.push_back(byte_alphabet()[b]);
  std::string key;
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(" ").append(symbols[i + 1]);
      auto it = merge_ranks_.find(key);
      if (it != merge_ranks_.end() && it->second < best_rank) best_rank = it->second, best = i;
    }
    if (best_rank == INT32_MAX) break;
    // Merge every occurrence of the best pair, left to right.
    const std::string left = symbols[best], right = symbols[best + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        ++i;
      } else {
        merged.push_back(std::move(symbols[i]));
      }
    }
    symbols = std::move(merged);
  }
  for (const std::string& s : symbols) {
    const int32_t id = find(s);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // A symbol missing from the vocabulary: fall back to its single-byte tokens. Vocabularies
    // trained on UTF-8 may lack bytes that never occur in it (0xC0, 0xC1, 0xF5..0xFF); those
    // become the unknown token (or are dropped when there is none): the one lossy case.
    for (const CodePoint& cp : decode_utf8(s)) {
      const int32_t byte_id = find(s.substr(cp.begin, cp.length));
      if (byte_id >= 0)
        out.push_back(byte_id);
      else if (unknown_id >= 0)
        out.push_back(unknown_id);
    }
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  auto encode_plain = [&](std::string_view plain) {
    for (const std::string& piece : pre_tokenize(plain)) {
      auto it = cache.find(piece);
      if (it == cache.end()) {
        std::vector<int32_t> ids;
        bpe(piece, ids);
        it = cache.emplace(piece, std::move(ids)).first;
      }
      out.insert(out.end(), it->second.begin(), it->second.end());
    }
  };
  size_t plain_begin = 0;
  for (size_t i = 0; parse_special && i < text.size(); ++i) {
    for (int32_t id : specials_) {
      const std::string& s = tokens_[id];
      if (text.compare(i, s.size(), s) != 0) continue;
      encode_plain(text.substr(plain_begin, i - plain_begin));
      out.push_back(id);
      i += s.size() - 1;
      plain_begin = i + 1;
      break;
    }
  }
  encode_plain(text.substr(plain_begin));
  return out;
}

std::string Tokenizer::decode(int32_t id) const {
  check(id >= 0 && id < vocab_size(), "token", "id " + std::to_string(id) + " out of range");
  const std::string& s = tokens_[id];
  if (is_special(id)) return s;
  std::string bytes;
  for (const CodePoint& cp : decode_utf8(s)) {
    auto it = char_to_byte_.find(cp.value);
    if (it != char_to_byte_.end())
      bytes += static_cast<char>(it->second);
    else
      bytes.append(s, cp.begin, cp.length);
  }
  return bytes;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += decode(id);
  return text;
}

}  // namespace attnkit::model
