#include "args.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "attnkit/error.h"

namespace attnkit::cli {
namespace {
bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}
}  // namespace

Args::Args(const std::vector<std::string>& argv, const std::vector<std::string>& values,
           const std::vector<std::string>& switches, const std::vector<std::string>& repeated) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& word = argv[i];
    if (word.rfind("--", 0) != 0) {
      check(values_.empty() && switches_.empty(), word, "unexpected argument");
      positional_.push_back(word);
      continue;
    }
    if (contains(switches, word)) {
      switches_[word] = true;
    } else if (contains(values, word) || contains(repeated, word)) {
      check(i + 1 < argv.size(), word, "needs a value");
      check(contains(repeated, word) || values_.count(word) == 0, word, "given twice");
      values_[word].push_back(argv[++i]);
    } else {
      throw Error(word, "unknown flag");
    }
  }
}

bool Args::has(const std::string& flag) const { return values_.count(flag) > 0; }

std::string Args::str(const std::string& flag) const {
  check(has(flag), flag, "is required");
  return values_.at(flag).front();
}

std::string Args::str(const std::string& flag, const std::string& fallback) const {
  return has(flag) ? values_.at(flag).front() : fallback;
}

std::vector<std::string> Args::all(const std::string& flag) const {
  return has(flag) ? values_.at(flag) : std::vector<std::string>{};
}

int64_t Args::integer(const std::string& flag, int64_t lo, int64_t hi) const {
  const std::string text = str(flag);
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  const bool ok = !text.empty() && end && *end == '\0' && errno == 0 && value >= lo && value <= hi;
  check(ok, flag,
        "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
            text + "'");
  return value;
}

int64_t Args::integer(const std::string& flag, int64_t fallback, int64_t lo, int64_t hi) const {
  return has(flag) ? integer(flag, lo, hi) : fallback;
}

double Args::real(const std::string& flag, double fallback, double lo, double hi) const {
  if (!has(flag)) return fallback;
  const std::string text = str(flag);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  const bool ok =
      !text.empty() && end && *end == '\0' && std::isfinite(value) && value >= lo && value <= hi;
  check(ok, flag,
        "must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
            text + "'");
  return value;
}

}  // namespace attnkit::cli
