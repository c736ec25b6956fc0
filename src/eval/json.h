// A one-line JSON object writer for CLI output that scripts parse (bench, peak, eval...).
//
//   JsonObject json;
//   json.add("seconds", 0.25).add("target", "AVX3").add("causal", true);
//   std::puts(json.str().c_str());   // {"seconds":0.25,"target":"AVX3","causal":true}
// Non-finite numbers have no JSON spelling; they are written as null.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace attnkit {

class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value) {
    if (!std::isfinite(value)) return raw(key, "null");
    char text[40];
    std::snprintf(text, sizeof(text), "%.17g", value);
    // Shortest text that reads back as the same double.
    for (int digits = 6; digits < 17; ++digits) {
      char shorter[40];
      std::snprintf(shorter, sizeof(shorter), "%.*g", digits, value);
      if (std::strtod(shorter, nullptr) == value) {
        std::snprintf(text, sizeof(text), "%s", shorter);
        break;
      }
    }
    return raw(key, text);
  }
  JsonObject& add(const std::string& key, int64_t value) { return raw(key, std::to_string(value)); }
  JsonObject& add(const std::string& key, int value) { return raw(key, std::to_string(value)); }
  JsonObject& add(const std::string& key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonObject& add(const std::string& key, const char* value) { return raw(key, quote(value)); }
  JsonObject& add(const std::string& key, const std::string& value) {
    return raw(key, quote(value));
  }
  // `json` must already be valid JSON (a nested object or array).
  JsonObject& raw(const std::string& key, const std::string& json) {
    // append() rather than operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
    if (!body_.empty()) body_.push_back(',');
    body_.append(quote(key)).append(":").append(json);
    return *this;
  }
  std::string str() const {
    std::string text = "{";
    text.append(body_).push_back('}');
    return text;
  }

  static std::string quote(const std::string& text) {
    std::string out = "\"";
    for (unsigned char c : text) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c < 0x20) {
        char escape[8];
        std::snprintf(escape, sizeof(escape), "\\u%04x", c);
        out += escape;
      } else {
        out += static_cast<char>(c);
      }
    }
    out.push_back('"');
    return out;
  }

 private:
  std::string body_;
};

}  // namespace attnkit
