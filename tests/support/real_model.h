// The real-model tests need models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/setup-model.sh).
// When it is absent they fail, so that a CI run without the model cannot pass; they skip only
// when the user says so with ATTNKIT_SKIP_MODEL=1.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

namespace attnkit::testing {

inline bool model_skip_requested() {
  const char* skip = std::getenv("ATTNKIT_SKIP_MODEL");
  return skip && std::strcmp(skip, "1") == 0;
}

}  // namespace attnkit::testing

// In SetUp() of a real-model fixture: skip or fail when `present` is false.
#define ATTNKIT_REQUIRE_MODEL(present)                                                      \
  do {                                                                                      \
    if (present) break;                                                                     \
    if (::attnkit::testing::model_skip_requested())                                         \
      GTEST_SKIP() << "model file absent and ATTNKIT_SKIP_MODEL=1";                         \
    FAIL() << "model file absent: run scripts/setup-model.sh (or set ATTNKIT_SKIP_MODEL=1 " \
              "to skip the real-model tests on purpose)";                                   \
  } while (0)
