// Fuzz target: command-line parsing. Input: NUL-separated words. The first word declares flags
// (each character picks one from a fixed table as a value flag, a switch or a repeated flag);
// the remaining words are argv. Then every typed getter the commands use runs on every flag:
// integer and real range checks, strings, repeated values, the --causal / --non-causal choice,
// and --pattern values through make_pattern, as `attnkit bench --pattern` reads them.
// Property: each step returns or throws one clean Error.
#include <cstdint>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/pattern.h"
#include "direction.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit;
  static const std::vector<std::string> kFlags = {"--nq",         "--nk",   "--scale", "--threads",
                                                  "--pattern",    "--out",  "--seed",  "--causal",
                                                  "--non-causal", "--json", "--heads", "--ctx"};
  std::vector<std::string> words(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0)
      words.emplace_back();
    else
      words.back() += static_cast<char>(data[i]);
  }
  std::vector<std::string> values, switches, repeated;
  for (const char c : words[0]) {
    const std::string& flag = kFlags[static_cast<uint8_t>(c) % kFlags.size()];
    (c & 0x30) == 0x10   ? switches.push_back(flag)
    : (c & 0x30) == 0x20 ? repeated.push_back(flag)
                         : values.push_back(flag);
  }
  const std::vector<std::string> argv(words.begin() + 1, words.end());
  try {
    const cli::Args args(argv, values, switches, repeated);
    for (const std::string& flag : kFlags) {
      auto attempt = [](auto step) {
        try {
          step();
        } catch (const Error& error) {
          fuzz::expect_clean_message(error.what());
        }
      };
      attempt([&] { (void)args.integer(flag, 7, -1000, 1 << 20); });
      attempt([&] { (void)args.real(flag, 0.5, -1e6, 1e6); });
      attempt([&] { (void)args.str(flag); });
      attempt([&] { (void)args.flag(flag); });
      for (const std::string& value : args.all(flag))
        if (flag == "--pattern") attempt([&] { (void)make_pattern(value); });
    }
    (void)cli::direction_choice(args);
  } catch (const Error& error) {
    fuzz::expect_clean_message(error.what());
  }
  return 0;
}
