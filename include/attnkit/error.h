// Typed errors: every failure names the argument at fault and its value.
#pragma once

#include <stdexcept>
#include <string>

namespace attnkit {

// Thrown for bad input (shapes, files, values, specs). what() reads "<argument>: <message>",
// e.g. "q: shape [1,2,3] must have rank 4". Library errors name API parameters ("q", "pattern",
// "block_mask", "max_context"); the CLI shows them as the flag the user gave, one line, exit 2.
class Error : public std::runtime_error {
 public:
  Error(std::string argument, std::string message)
      : std::runtime_error(argument + ": " + message),
        argument_(std::move(argument)),
        message_(std::move(message)) {}
  const std::string& argument() const { return argument_; }
  const std::string& message() const { return message_; }

 private:
  std::string argument_, message_;
};

// Throws Error(argument, message) unless `condition` holds.
inline void check(bool condition, const std::string& argument, const std::string& message) {
  if (!condition) throw Error(argument, message);
}

}  // namespace attnkit
