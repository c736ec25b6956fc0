// Typed errors: every failure names the argument at fault and its value.
#pragma once

#include <stdexcept>
#include <string>

namespace attnkit {

// Thrown for bad input (shapes, files, values, specs). The CLI prints what() on one line, exit 2.
// what() reads "<argument>: <message>", e.g. "--q: shape [1,2,3] must have rank 4".
class Error : public std::runtime_error {
 public:
  Error(std::string argument, const std::string& message)
      : std::runtime_error(argument + ": " + message), argument_(std::move(argument)) {}
  const std::string& argument() const { return argument_; }

 private:
  std::string argument_;
};

// Throws Error(argument, message) unless `condition` holds.
inline void check(bool condition, const std::string& argument, const std::string& message) {
  if (!condition) throw Error(argument, message);
}

}  // namespace attnkit
