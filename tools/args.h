// Command-line flags: "--name value" and bare "--flag"; every flag must be known to the command.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace attnkit::cli {

class Args {
 public:
  // `values`: flags that take a value; `switches`: bare flags; `repeated`: value flags that may
  // appear several times (e.g. --pattern). Throws Error naming the first unknown or
  // incomplete flag.
  Args(const std::vector<std::string>& argv, const std::vector<std::string>& values,
       const std::vector<std::string>& switches = {},
       const std::vector<std::string>& repeated = {});

  bool has(const std::string& flag) const;
  std::string str(const std::string& flag) const;  // required: throws if missing
  std::string str(const std::string& flag, const std::string& fallback) const;
  std::vector<std::string> all(const std::string& flag) const;  // repeated flags
  // Integers and floats, range-checked: throws Error(flag, "must be an integer in [lo, hi], got
  // X").
  int64_t integer(const std::string& flag, int64_t lo, int64_t hi) const;
  int64_t integer(const std::string& flag, int64_t fallback, int64_t lo, int64_t hi) const;
  double real(const std::string& flag, double fallback, double lo, double hi) const;
  bool flag(const std::string& name) const { return switches_.count(name) > 0; }
  // Positional words before the first flag (e.g. "info" in `attnkit model info`).
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::map<std::string, bool> switches_;
  std::vector<std::string> positional_;
};

}  // namespace attnkit::cli
