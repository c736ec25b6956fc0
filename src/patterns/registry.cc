// The pattern registry: spec strings "name:key=value,key=value" -> Pattern objects.
//
// The built-in patterns come from one explicit table (no static initializers), so a static
// library or a Python module that links attnkit sees every one of them.
#include <algorithm>
#include <map>
#include <mutex>

#include "attnkit/error.h"
#include "attnkit/pattern.h"
#include "patterns/dynamic/dynamic_patterns.h"
#include "patterns/grid/grid_patterns.h"
#include "patterns/static/static_patterns.h"

namespace attnkit {
namespace {

std::vector<PatternRegistration> builtin_patterns() {
  return {
      // static/: 1-D interval rules over positions.
      static_patterns::causal_pattern(),
      static_patterns::window_pattern(),
      static_patterns::dilated_pattern(),
      static_patterns::streaming_pattern(),
      static_patterns::document_pattern(),
      static_patterns::prefix_lm_pattern(),
      static_patterns::power_pattern(),
      static_patterns::s2attn_pattern(),
      static_patterns::sf_attn_pattern(),
      static_patterns::ssa_pattern(),
      // grid/: neighbourhoods on 1-3-D grids (box order) and video frames (radial).
      grid_patterns::natten_pattern(1),
      grid_patterns::natten_pattern(2),
      grid_patterns::natten_pattern(3),
      grid_patterns::halo2d_pattern(),
      grid_patterns::radial_pattern(),
      // dynamic/: content-based planners.
      dynamic_patterns::topk_oracle_pattern(),
      dynamic_patterns::infllm_v2_pattern(),
      dynamic_patterns::hip_pattern(),
      dynamic_patterns::dhsa_pattern(),
      dynamic_patterns::hyper_pattern(),
      dynamic_patterns::routing_pattern(),
      dynamic_patterns::h2o_pattern(),
  };
}

struct Registry {
  Registry() {
    for (PatternRegistration& p : builtin_patterns()) entries.emplace(p.info.name, std::move(p));
  }
  std::mutex mutex;  // register_pattern may run while other threads make patterns
  std::map<std::string, PatternRegistration> entries;
};

Registry& registry() {
  static Registry instance;  // built on first use, thread-safe
  return instance;
}

std::string known_names(const Registry& r) {
  std::string text;
  for (const auto& [name, entry] : r.entries) text += (text.empty() ? "" : ", ") + name;
  return text;
}

}  // namespace

void register_pattern(PatternRegistration registration) {
  Registry& r = registry();
  check(!registration.info.name.empty() && registration.factory != nullptr, "pattern",
        "a registration needs a name and a factory");
  const std::string name = registration.info.name;
  std::lock_guard<std::mutex> lock(r.mutex);
  check(r.entries.emplace(name, std::move(registration)).second, "pattern",
        "'" + name + "' is already registered");
}

std::unique_ptr<Pattern> make_pattern(const std::string& spec) {
  check(!spec.empty(), "pattern", "empty pattern spec (see `attnkit patterns`)");
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  Registry& r = registry();
  PatternRegistration entry;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.entries.find(name);
    if (it == r.entries.end())
      throw Error("pattern", "unknown pattern '" + name + "' (known: " + known_names(r) + ")");
    entry = it->second;
  }
  std::map<std::string, std::string> given;
  if (colon != std::string::npos) {
    const std::string rest = spec.substr(colon + 1);
    size_t start = 0;
    while (start <= rest.size() && !rest.empty()) {
      const size_t comma = std::min(rest.find(',', start), rest.size());
      const std::string item = rest.substr(start, comma - start);
      const size_t eq = item.find('=');
      check(eq != std::string::npos && eq > 0, "pattern",
            "'" + name + "': expected key=value, got '" + item + "' in '" + spec + "'");
      const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
      check(!value.empty(), "pattern", "'" + name + "' parameter '" + key + "' has no value");
      check(given.emplace(key, value).second, "pattern",
            "'" + name + "' parameter '" + key + "' given twice");
      start = comma + 1;
    }
  }
  return entry.factory(PatternParams(entry.info, given));
}

std::vector<PatternInfo> list_patterns() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<PatternInfo> infos;
  for (const auto& [name, entry] : r.entries) infos.push_back(entry.info);
  return infos;  // std::map keeps them sorted by name
}

}  // namespace attnkit
