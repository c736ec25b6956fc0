// The pattern registry: spec strings "name:key=value,key=value" -> Pattern objects, and the
// default Pattern::run (plan, then the block-sparse kernel).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>

#include "attnkit/error.h"
#include "attnkit/pattern.h"

namespace attnkit {
namespace {

struct Entry {
  PatternInfo info;
  PatternFactory factory;
};

std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> entries;
  return entries;
}

std::string join(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : ", ") + w;
  return text;
}

std::string pattern_of(const std::string& spec) { return spec.substr(0, spec.find(':')); }

}  // namespace

PatternParams::PatternParams(const PatternInfo& info,
                             const std::map<std::string, std::string>& given,
                             const std::string& spec)
    : spec_(spec) {
  std::vector<std::string> names;
  for (const auto& p : info.params) names.push_back(p.name);
  for (const auto& [key, value] : given) {
    check(
        std::find(names.begin(), names.end(), key) != names.end(), "--pattern",
        "'" + info.name + "' has no parameter '" + key + "' (" +
            (names.empty() ? std::string("it takes no parameters") : "parameters: " + join(names)) +
            ")");
  }
  for (const auto& p : info.params) {
    const auto it = given.find(p.name);
    values_.emplace_back(p.name, it == given.end() ? p.default_value : it->second);
  }
}

std::string PatternParams::get_string(const std::string& key) const {
  for (const auto& [k, v] : values_)
    if (k == key) return v;
  throw Error("--pattern", "'" + pattern_of(spec_) + "' has no parameter '" + key + "'");
}

int64_t PatternParams::get_int(const std::string& key) const {
  const std::string text = get_string(key);
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  check(
      !text.empty() && end && *end == '\0' && errno == 0, "--pattern",
      "'" + pattern_of(spec_) + "' parameter '" + key + "' must be an integer, got '" + text + "'");
  return value;
}

double PatternParams::get_double(const std::string& key) const {
  const std::string text = get_string(key);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  check(!text.empty() && end && *end == '\0' && std::isfinite(value), "--pattern",
        "'" + pattern_of(spec_) + "' parameter '" + key + "' must be a number, got '" + text + "'");
  return value;
}

std::string PatternParams::canonical() const {
  std::string text;
  for (const auto& [k, v] : values_) text += (text.empty() ? "" : ",") + k + "=" + v;
  return text;
}

bool register_pattern(PatternInfo info, PatternFactory factory) {
  const std::string name = info.name;
  return registry().emplace(name, Entry{std::move(info), factory}).second;
}

std::unique_ptr<Pattern> make_pattern(const std::string& spec) {
  check(!spec.empty(), "--pattern", "empty pattern spec (see `attnkit patterns`)");
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  const auto it = registry().find(name);
  if (it == registry().end()) {
    std::vector<std::string> known;
    for (const auto& [n, e] : registry()) known.push_back(n);
    throw Error("--pattern", "unknown pattern '" + name + "' (known: " + join(known) + ")");
  }
  std::map<std::string, std::string> given;
  if (colon != std::string::npos) {
    const std::string rest = spec.substr(colon + 1);
    size_t start = 0;
    while (start <= rest.size() && !rest.empty()) {
      const size_t comma = std::min(rest.find(',', start), rest.size());
      const std::string item = rest.substr(start, comma - start);
      const size_t eq = item.find('=');
      check(eq != std::string::npos && eq > 0, "--pattern",
            "'" + name + "': expected key=value, got '" + item + "' in '" + spec + "'");
      const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
      check(!value.empty(), "--pattern", "'" + name + "' parameter '" + key + "' has no value");
      check(given.emplace(key, value).second, "--pattern",
            "'" + name + "' parameter '" + key + "' given twice");
      start = comma + 1;
    }
  }
  const PatternParams params(it->second.info, given, spec);
  return it->second.factory(params);
}

std::vector<PatternInfo> list_patterns() {
  std::vector<PatternInfo> infos;
  for (const auto& [name, entry] : registry()) infos.push_back(entry.info);
  return infos;  // std::map keeps them sorted by name
}

RunStats Pattern::run(const AttentionArgs& args) const {
  RunStats stats;
  const auto start = std::chrono::steady_clock::now();
  Plan plan = this->plan(args);
  stats.plan_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The kernel counts the pairs it attended (the mask ANDed with args.causal) as it goes.
  int64_t attended = 0;
  AttentionArgs counted = args;
  counted.attended_pairs = &attended;
  attention(counted, plan.mask);
  if (args.attended_pairs) *args.attended_pairs += attended;
  const double cells = static_cast<double>(plan.mask.nq) * static_cast<double>(plan.mask.nk);
  stats.pairs = static_cast<double>(attended) / static_cast<double>(args.q.shape[0] * args.q.shape[1]);
  stats.density = cells > 0 ? stats.pairs / cells : 0.0;
  return stats;
}

}  // namespace attnkit
