// `attnkit <command> --help` (or -h): every command prints its usage and exits 0.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace attnkit::cli {

inline bool wants_help(const std::vector<std::string>& argv) {
  return std::any_of(argv.begin(), argv.end(),
                     [](const std::string& word) { return word == "--help" || word == "-h"; });
}

}  // namespace attnkit::cli
