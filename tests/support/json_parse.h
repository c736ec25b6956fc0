// A small JSON reader for tests that check the CLI's --json output (full JSON syntax, numbers as
// double). Throws std::runtime_error with the offset on malformed input.
//
//   JsonValue v = parse_json(result.out);
//   ASSERT_TRUE(v.is_object());
//   EXPECT_TRUE(v.has("seconds"));
//   double s = v["seconds"].number;
#pragma once

#include <map>
#include <string>
#include <vector>

namespace attnkit::testing {

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0.0;
  std::string text;
  std::vector<JsonValue> items;
  std::map<std::string, JsonValue> fields;

  bool is_object() const { return kind == Kind::kObject; }
  bool is_number() const { return kind == Kind::kNumber; }
  bool has(const std::string& key) const { return fields.count(key) > 0; }
  // Throws std::out_of_range when the key is missing.
  const JsonValue& operator[](const std::string& key) const { return fields.at(key); }
};

// Parses one JSON value; surrounding whitespace (e.g. a final newline) is allowed, anything else
// after the value is an error.
JsonValue parse_json(const std::string& text);

}  // namespace attnkit::testing
