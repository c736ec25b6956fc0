#include "model/attention_modifiers.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "attnkit/error.h"

namespace attnkit::model {
namespace {

// The comma-separated fields of `text` (empty fields kept, so that "1,,2" is an error).
std::vector<std::string> fields(const std::string& text) {
  std::vector<std::string> out(1);
  for (char c : text) {
    if (c == ',')
      out.emplace_back();
    else
      out.back().push_back(c);
  }
  return out;
}

double number(const std::string& field, const std::string& argument, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(field.c_str(), &end);
  check(!field.empty() && end == field.c_str() + field.size() && errno == 0 && std::isfinite(x),
        argument, "'" + text + "': '" + field + "' is not a number");
  return x;
}

int64_t index(const std::string& field, const std::string& argument, const std::string& text) {
  const bool digits =
      !field.empty() && field.size() <= 9 &&
      std::all_of(field.begin(), field.end(), [](char c) { return c >= '0' && c <= '9'; });
  check(digits, argument, "'" + text + "': '" + field + "' is not a layer or head index");
  return std::stoll(field);
}

}  // namespace

bool AttentionModifiers::any() const {
  return std::any_of(selective.begin(), selective.end(), [](float s) { return s != 0.0f; }) ||
         temperature != 1.0f || !masked_heads.empty() || act;
}

void AttentionModifiers::parse_act(const std::string& text, const std::string& argument) {
  act = true;
  if (text == "on") return;
  for (const std::string& field : fields(text)) {
    const size_t eq = field.find('=');
    const std::string key = field.substr(0, eq);
    check(eq != std::string::npos && (key == "tau" || key == "beta" || key == "from"), argument,
          "'" + text + "': '" + field + "' is not tau=X, beta=X or from=LAYER (or 'on')");
    const std::string value = field.substr(eq + 1);
    if (key == "from")
      act_from = index(value, argument, text);
    else
      (key == "tau" ? act_options.tau : act_options.beta) =
          static_cast<float>(number(value, argument, text));
  }
}

float AttentionModifiers::selective_of(int64_t l) const {
  if (selective.empty()) return 0.0f;
  return selective.size() == 1 ? selective[0] : selective[static_cast<size_t>(l)];
}

std::vector<float> AttentionModifiers::parse_selective(const std::string& text,
                                                       const std::string& argument) {
  std::vector<float> out;
  for (const std::string& field : fields(text))
    out.push_back(static_cast<float>(number(field, argument, text)));
  return out;
}

std::vector<HeadRef> AttentionModifiers::parse_heads(const std::string& text,
                                                     const std::string& argument) {
  std::vector<HeadRef> out;
  if (text.empty()) return out;
  for (const std::string& field : fields(text)) {
    const size_t dot = field.find('.');
    check(dot != std::string::npos, argument,
          "'" + text + "': '" + field + "' is not LAYER.HEAD (e.g. 3.7)");
    out.push_back({index(field.substr(0, dot), argument, text),
                   index(field.substr(dot + 1), argument, text)});
  }
  return out;
}

HeadMode AttentionModifiers::parse_mask_mode(const std::string& text, const std::string& argument) {
  if (text == "uniform") return HeadMode::kUniform;
  if (text == "zero") return HeadMode::kZero;
  throw Error(argument, "'" + text + "' is not a mask mode (uniform or zero)");
}

std::string AttentionModifiers::heads_text(const std::vector<HeadRef>& heads) {
  std::string out;
  for (const HeadRef& h : heads) {
    if (!out.empty()) out.push_back(',');
    out.append(std::to_string(h.layer)).append(".").append(std::to_string(h.head));
  }
  return out;
}

void AttentionModifiers::validate(int64_t layers, int64_t heads) const {
  check(selective.size() <= 1 || static_cast<int64_t>(selective.size()) == layers, "selective",
        "takes one value or one per layer (" + std::to_string(layers) + "), got " +
            std::to_string(selective.size()));
  for (float s : selective)
    check(std::isfinite(s) && s >= 0.0f && s <= 100.0f, "selective",
          "values must be in [0, 100], got " + std::to_string(s));
  check(std::isfinite(temperature) && temperature >= 1e-3f && temperature <= 1e3f, "temperature",
        "must be in [0.001, 1000], got " + std::to_string(temperature));
  check(!act || (act_from >= 0 && act_from < layers), "act",
        "from must be a layer in [0, " + std::to_string(layers) + "), got " +
            std::to_string(act_from));
  check(!act || (act_options.tau > 0.0f && act_options.tau <= 1.0f), "act",
        "tau must be in (0, 1], got " + std::to_string(act_options.tau));
  check(!act || (act_options.beta >= 0.0f && act_options.beta <= 1.0f), "act",
        "beta must be in [0, 1], got " + std::to_string(act_options.beta));
  check(mask_mode == HeadMode::kUniform || mask_mode == HeadMode::kZero, "mask_mode",
        "must be uniform or zero");
  for (size_t x = 0; x < masked_heads.size(); ++x) {
    const HeadRef& h = masked_heads[x];
    check(h.layer >= 0 && h.layer < layers && h.head >= 0 && h.head < heads, "masked_heads",
          "head " + std::to_string(h.layer) + "." + std::to_string(h.head) +
              " is outside the model's " + std::to_string(layers) + " layers x " +
              std::to_string(heads) + " heads");
    check(std::find(masked_heads.begin(), masked_heads.begin() + static_cast<int64_t>(x), h) ==
              masked_heads.begin() + static_cast<int64_t>(x),
          "masked_heads",
          "head " + std::to_string(h.layer) + "." + std::to_string(h.head) + " is listed twice");
  }
}

}  // namespace attnkit::model
