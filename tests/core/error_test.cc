// printable() and Error: valid UTF-8 passes unchanged, every other byte is escaped, and so an
// Error's message never carries raw outside bytes; end to end, the CLI's stderr for a .npy
// header full of binary bytes is printable UTF-8 on one line.
#include "attnkit/error.h"

#include <gtest/gtest.h>

#include <string>

#include "support/cli_runner.h"

namespace attnkit {
namespace {

TEST(Printable, KeepsUtf8AndEscapesEverythingElse) {
  EXPECT_EQ(printable("plain ascii, [1,2] 'x'"), "plain ascii, [1,2] 'x'");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("tab\there\nnew\x7f"), "tab\\x09here\\x0anew\\x7f");
  EXPECT_EQ(printable("back\\slash"), "back\\\\slash");
  EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");                    // never valid
  EXPECT_EQ(printable("\xc3"), "\\xc3");                             // truncated sequence
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // surrogate U+D800
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(printable("\xc2\x85"), "\\xc2\\x85");                    // C1 control NEL
}

TEST(Printable, IsPrintableAcceptsExactlyWhatPrintableReturns) {
  for (const std::string& text : {std::string("a\\b \xc3\xa9"), std::string("\x01"),
                                  std::string("\xff"), std::string("ok"), std::string("\x7f")}) {
    EXPECT_TRUE(is_printable(printable(text))) << text;
    EXPECT_EQ(is_printable(text), printable(text) == text || text.find('\\') != std::string::npos)
        << text;
  }
}

TEST(Printable, ErrorsEscapeTheirArgumentAndMessage) {
  const Error e("arg\x01", "bad \xff byte");
  EXPECT_EQ(e.argument(), "arg\\x01");
  EXPECT_EQ(e.message(), "bad \\xff byte");
  EXPECT_STREQ(e.what(), "arg\\x01: bad \\xff byte");
}

TEST(Printable, CliErrorForABinaryNpyHeaderIsPrintable) {
  testing::TempDir dir;
  // A v1.0 header whose dict has a key of raw control and non-UTF-8 bytes.
  std::string header = "{'\x1b[31m\xff\xfe': 1, }";
  header.resize(118, ' ');
  header += '\n';
  std::string file = std::string("\x93NUMPY\x01\x00", 8);
  file += static_cast<char>(header.size() & 0xff);
  file += static_cast<char>(header.size() >> 8);
  testing::write_file(dir.path("q.npy"), file + header);
  const testing::CliResult r =
      testing::run_cli({"run", "--q", dir.path("q.npy"), "--k", dir.path("q.npy"), "--v",
                        dir.path("q.npy"), "--out", dir.path("o.npy")});
  EXPECT_TRUE(testing::IsCleanError(r, "--q"));
  EXPECT_TRUE(is_printable(r.err.substr(0, r.err.size() - 1))) << r.err;
  EXPECT_NE(r.err.find("\\x1b[31m\\xff\\xfe"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace attnkit
