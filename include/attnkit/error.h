// Typed errors: every failure names the argument at fault and its value.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace attnkit {

// `text` made safe to print: valid UTF-8 stays as it is; control characters, DEL and bytes that
// are not valid UTF-8 become \xNN (a backslash becomes \\). Outside bytes (file headers, spec
// strings, paths) pass through this before they reach a message, so stderr is always UTF-8 text.
std::string printable(std::string_view text);
// Whether `text` is already safe to print: printable ASCII and valid UTF-8 only (what printable()
// returns, and so every Error message).
bool is_printable(std::string_view text);

// Thrown for bad input (shapes, files, values, specs). what() reads "<argument>: <message>",
// e.g. "q: shape [1,2,3] must have rank 4". Library errors name API parameters ("q", "pattern",
// "block_mask", "max_context"); the CLI shows them as the flag the user gave, one line, exit 2.
// Both parts are passed through printable(), so no message carries raw outside bytes.
class Error : public std::runtime_error {
 public:
  Error(const std::string& argument, const std::string& message);
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
