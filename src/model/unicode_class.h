// Code-point classes for the GPT-2 pre-tokenizer regex: \s, \p{L}, \p{N}, and UTF-8 decoding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit::model {

enum class CharClass : uint8_t { kSpace, kLetter, kNumber, kOther };

// Class of a code point. ASCII and Latin-1 are exact; beyond them, whitespace (White_Space) and
// numbers (Nd/Nl/No of the major scripts) come from tables, combining marks, punctuation and
// symbols from the common blocks, and every other assigned code point counts as a letter. This is
// an approximation of the Unicode categories that only matters for rare scripts; tokenization stays
// lossless whatever the class.
CharClass char_class(uint32_t cp);

// Splits UTF-8 into code points with their byte spans. Invalid bytes become one "code point"
// each (value 0xFFFD) spanning that byte, so every byte of the input is covered exactly once.
struct CodePoint {
  uint32_t value;
  uint32_t begin;  // byte offset
  uint32_t length;
};
std::vector<CodePoint> decode_utf8(std::string_view text);
void append_utf8(std::string& out, uint32_t cp);

}  // namespace attnkit::model
