// What every fuzz target shares: the only failure a parser may report is attnkit::Error, with a
// message that is printable UTF-8 on one line; anything else (a crash, a sanitizer report, another
// exception, a hang) is a finding.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "attnkit/error.h"

namespace attnkit::fuzz {

// Aborts (a finding) unless `text` is non-empty, one line and printable UTF-8.
inline void expect_clean_message(const std::string& text) {
  if (text.empty() || !is_printable(text)) {  // '\n' is not printable: one line
    std::fprintf(stderr, "unclean error message: %s\n", printable(text).c_str());
    std::abort();
  }
}

// Aborts with `what` when `condition` fails: a property the target checks beyond "no crash".
inline void expect(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace attnkit::fuzz
