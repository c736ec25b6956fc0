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
         temperature != 1.0f || !masked_heads.empty() || act || moh_top > 0;
}

void AttentionModifiers::parse_moh(const std::string& text, const std::string& argument) {
  for (const std::string& field : fields(text)) {
    const size_t eq = field.find('=');
    const std::string key = field.substr(0, eq),
                      value = eq == std::string::npos ? "" : field.substr(eq + 1);
    check(eq != std::string::npos && (key == "top" || key == "shared" || key == "gates"), argument,
          "'" + text + "': '" + field + "' is not top=K, shared=S or gates=weighted|binary");
    if (key == "gates") {
      check(value == "weighted" || value == "binary", argument,
            "'" + text + "': gates must be weighted or binary, got '" + value + "'");
      moh_weighted = value == "weighted";
    } else {
      (key == "top" ? moh_top : moh_shared) = index(value, argument, text);
    }
  }
  check(moh_top >= 1, argument, "'" + text + "': needs top=K with K >= 1");
}

void AttentionModifiers::moh_gates(const float* q, int64_t tokens, int64_t heads, int64_t head_dim,
                                   float* gates) const {
  std::vector<double> norm(heads), p(heads);
  std::vector<int64_t> order;
  for (int64_t t = 0; t < tokens; ++t) {
    double mean = 0.0;
    for (int64_t h = 0; h < heads; ++h) {
      double sum = 0.0;
      for (int64_t d = 0; d < head_dim; ++d) {
        const double x = q[(t * heads + h) * head_dim + d];
        sum += x * x;
      }
      norm[h] = std::sqrt(sum);
      mean += norm[h] / static_cast<double>(heads);
    }
    double var = 0.0;
    for (int64_t h = 0; h < heads; ++h) var += (norm[h] - mean) * (norm[h] - mean) / heads;
    const double std_dev = std::sqrt(var) > 0.0 ? std::sqrt(var) : 1.0;
    // Softmax over the routed heads of r = ||q|| / std, then the top k by probability.
    double top_r = -1e300, total = 0.0;
    for (int64_t h = moh_shared; h < heads; ++h) top_r = std::max(top_r, norm[h] / std_dev);
    for (int64_t h = moh_shared; h < heads; ++h)
      total += p[h] = std::exp(norm[h] / std_dev - top_r);
    order.clear();
    for (int64_t h = moh_shared; h < heads; ++h) order.push_back(h);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    double kept = 0.0;
    for (int64_t x = 0; x < moh_top; ++x) kept += p[order[x]] / total;
    for (int64_t h = 0; h < heads; ++h) gates[h * tokens + t] = h < moh_shared ? 1.0f : 0.0f;
    for (int64_t x = 0; x < moh_top; ++x) {
      const int64_t h = order[x];
      gates[h * tokens + t] =
          moh_weighted ? static_cast<float>(p[h] / total / kept * static_cast<double>(moh_top))
                       : 1.0f;
    }
  }
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

std::vector<float> AttentionModifiers::parse_numbers(const std::string& text,
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
  check(moh_top == 0 || (moh_shared >= 0 && moh_top >= 1 && moh_top + moh_shared <= heads), "moh",
        "needs 1 <= top and top + shared <= " + std::to_string(heads) + " heads, got top=" +
            std::to_string(moh_top) + ", shared=" + std::to_string(moh_shared));
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
