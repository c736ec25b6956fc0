// Tokenizer: the smollm pre-tokenizer split rule, BPE on a small hand-made vocabulary (expected
// ids follow from the merge ranks), and with the real SmolLM2 vocabulary (when set-up fetched it):
// round trips on varied text and ids read off the vocabulary itself.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "model/unicode_class.h"
#include "support/cli_runner.h"
#include "support/json_parse.h"
#include "support/real_model.h"

namespace attnkit::model {
namespace {

using Pieces = std::vector<std::string>;

TEST(TokenizerPreTokenize, Gpt2RuleWithDigitsSplit) {
  EXPECT_EQ(Tokenizer::pre_tokenize("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("I'm here, they'll go"),
            (Pieces{"I", "'m", " here", ",", " they", "'ll", " go"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("abc123 x"), (Pieces{"abc", "1", "2", "3", " x"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("in 2024."), (Pieces{"in", " ", "2", "0", "2", "4", "."}));
  // \s+(?!\S): a run of spaces leaves its last space to the next word.
  EXPECT_EQ(Tokenizer::pre_tokenize("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("end  "), (Pieces{"end", "  "}));
  EXPECT_EQ(Tokenizer::pre_tokenize(" ?!x"), (Pieces{" ?!", "x"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("caf\xC3\xA9 na\xC3\xAFve"),
            (Pieces{"caf\xC3\xA9", " na\xC3\xAFve"}));
  EXPECT_EQ(Tokenizer::pre_tokenize("\xE4\xBD\xA0\xE5\xA5\xBD!"),  // CJK letters then '!'
            (Pieces{"\xE4\xBD\xA0\xE5\xA5\xBD", "!"}));
  EXPECT_TRUE(Tokenizer::pre_tokenize("").empty());
}

TEST(TokenizerPreTokenize, PiecesCoverTheInputExactly) {
  const std::string text = "Mixed: tabs\t\tand\r\nCRLF, 3.14159, \xF0\x9F\x98\x80 emoji, \xFF bad";
  std::string joined;
  for (const auto& p : Tokenizer::pre_tokenize(text)) joined += p;
  EXPECT_EQ(joined, text);
}

TEST(TokenizerUnicode, Classes) {
  EXPECT_EQ(char_class('a'), CharClass::kLetter);
  EXPECT_EQ(char_class('7'), CharClass::kNumber);
  EXPECT_EQ(char_class(0x0663), CharClass::kNumber);  // Arabic-Indic three
  EXPECT_EQ(char_class(0x00E9), CharClass::kLetter);  // e acute
  EXPECT_EQ(char_class(0x4E2D), CharClass::kLetter);  // CJK
  EXPECT_EQ(char_class(0x3000), CharClass::kSpace);   // ideographic space
  EXPECT_EQ(char_class(0x2014), CharClass::kOther);   // em dash
  EXPECT_EQ(char_class(0x1F600), CharClass::kOther);  // emoji
  EXPECT_EQ(char_class(0x0301), CharClass::kOther);   // combining acute accent (Mn)
}

// 256 byte tokens in GPT-2 bytes_to_unicode order, a few merges, three control tokens.
Tokenizer small_tokenizer() {
  std::vector<std::string> tokens = Tokenizer::byte_alphabet();
  std::vector<int32_t> types(256, 1);
  for (const char* t : {"Ġt", "he", "Ġthe", "in", "Ġin"}) tokens.push_back(t), types.push_back(1);
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    tokens.push_back(t), types.push_back(3);
  return Tokenizer(tokens, types, {"Ġ t", "h e", "Ġt he", "i n", "Ġ in"});
}

TEST(TokenizerBpe, SmallVocabularyFollowsMergeRanks) {
  const Tokenizer tok = small_tokenizer();
  const int32_t space = tok.find("Ġ"), t = tok.find("t"), he = tok.find("he");
  // Byte 32 follows the 32 non-printable bytes 0..31 (U+0100..U+011F): U+0120 "Ġ", id 32 here.
  ASSERT_EQ(space, 32);
  ASSERT_EQ(tok.token(32), "\xC4\xA0");
  EXPECT_EQ(tok.encode(" the"), (std::vector<int32_t>{tok.find("Ġthe")}));
  EXPECT_EQ(tok.encode("the"), (std::vector<int32_t>{t, he}));
  // "Ġin" needs "Ġ in", ranked after "i n": "in" forms first, then "Ġ" + "in".
  EXPECT_EQ(tok.encode(" in"), (std::vector<int32_t>{tok.find("Ġin")}));
  EXPECT_EQ(tok.encode("x<|im_start|>y", true),
            (std::vector<int32_t>{tok.find("x"), tok.find("<|im_start|>"), tok.find("y")}));
  // Without special parsing the markers are plain bytes.
  EXPECT_GT(tok.encode("<|im_start|>", false).size(), 1u);
  EXPECT_EQ(tok.decode(tok.encode("<|im_start|>", false)), "<|im_start|>");
}

TEST(TokenizerBpe, SmallVocabularyRoundTripsBytes) {
  const Tokenizer tok = small_tokenizer();
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(tok.decode(tok.encode(all, false)), all);
  EXPECT_EQ(tok.encode(all, false).size(), 256u);
}

class RealTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = locate_model(ATTNKIT_SOURCE_DIR);
    if (path.empty()) return;
    file_ = new GgufFile(GgufFile::open(path));
    tokenizer_ = new Tokenizer(Tokenizer::from_gguf(*file_));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete file_;
    tokenizer_ = nullptr;
    file_ = nullptr;
  }
  void SetUp() override { ATTNKIT_REQUIRE_MODEL(tokenizer_); }
  static GgufFile* file_;
  static Tokenizer* tokenizer_;
};
GgufFile* RealTokenizer::file_ = nullptr;
Tokenizer* RealTokenizer::tokenizer_ = nullptr;

// Ids from an independent BPE: the PyPI `tokenizers` package built from the same vocabulary and
// merges with SmolLM2's pre-tokenizer (tests/data/make_fixtures.py wrote the fixture).
TEST_F(RealTokenizer, IdsEqualThoseOfThePypiTokenizersPackage) {
  const testing::JsonValue cases = testing::parse_json(
      testing::read_file(std::string(ATTNKIT_SOURCE_DIR) + "/tests/data/smollm2_token_ids.json"));
  ASSERT_GE(cases.items.size(), 10u);
  for (const testing::JsonValue& c : cases.items) {
    std::vector<int32_t> expected;
    for (const testing::JsonValue& id : c["ids"].items)
      expected.push_back(static_cast<int32_t>(id.number));
    EXPECT_EQ(tokenizer_->encode(c["text"].text), expected) << c["text"].text;
    EXPECT_EQ(tokenizer_->decode(expected), c["text"].text);
  }
}

TEST_F(RealTokenizer, RoundTripsVariedText) {
  const Tokenizer& tok = *tokenizer_;
  for (const std::string& text : {
           std::string("The quick brown fox jumps over the lazy dog."),
           std::string("Numbers: 3.14159, 2024-11-28, 1,000,000 and 0x1F."),
           std::string("  leading spaces,\ttabs\t\tand\n\n\nnewlines   trailing   "),
           std::string("Unicode: caf\xC3\xA9, na\xC3\xAFve, \xE4\xBD\xA0\xE5\xA5\xBD, "
                       "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xF0\x9F\x98\x80!"),
           std::string("Code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }"),
           std::string("Lone UTF-8 lead and continuation bytes: \xC3 \xA9 end"),
           std::string("I'm sure they'll say it's what we've done; you'd agree."),
       }) {
    const std::vector<int32_t> ids = tok.encode(text, false);
    EXPECT_EQ(tok.decode(ids), text);
    EXPECT_LT(ids.size(), text.size()) << text;  // BPE compresses real text
  }
}

TEST_F(RealTokenizer, BytesOutsideTheVocabularyBecomeUnknown) {
  const Tokenizer& tok = *tokenizer_;
  // 0xFF never occurs in UTF-8 and SmolLM2's vocabulary has no token for it.
  ASSERT_LT(tok.find("\xC3\xBF"), 0);
  const std::vector<int32_t> ids = tok.encode(
      "a\xFF"
      "b",
      false);
  EXPECT_EQ(ids, (std::vector<int32_t>{tok.find("a"), tok.unknown_id, tok.find("b")}));
}

TEST_F(RealTokenizer, SpecialAndKnownIds) {
  const Tokenizer& tok = *tokenizer_;
  // Ids 0..2 as listed in tokenizer.ggml.tokens, bos/eos from the GGUF keys.
  EXPECT_EQ(tok.token(0), "<|endoftext|>");
  EXPECT_EQ(tok.bos_id, 1);
  EXPECT_EQ(tok.token(1), "<|im_start|>");
  EXPECT_EQ(tok.eos_id, 2);
  EXPECT_EQ(tok.token(2), "<|im_end|>");
  EXPECT_EQ(tok.encode("<|im_start|>user\nHi<|im_end|>"),
            (std::vector<int32_t>{1, tok.find("user"), tok.find("Ċ"), tok.find("Hi"), 2}));
  // Digits are always single tokens; " the" and "Ġworld" are whole words of the vocabulary.
  const std::vector<int32_t> year{tok.find("2"), tok.find("0"), tok.find("2"), tok.find("4")};
  EXPECT_EQ(tok.encode("2024"), year);
  EXPECT_EQ(tok.encode(" the"), (std::vector<int32_t>{tok.find("Ġthe")}));
  EXPECT_EQ(tok.encode("Hello world"),
            (std::vector<int32_t>{tok.find("Hello"), tok.find("Ġworld")}));
  for (const char* t : {"2", "0", "4", "Ġthe", "Hello", "Ġworld", "user", "Hi", "Ċ"})
    EXPECT_GE(tok.find(t), 0) << t;
}

}  // namespace
}  // namespace attnkit::model
