// `attnkit patterns`: every registered pattern with its parameters, defaults and paper.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "attnkit/pattern.h"
#include "command.h"
#include "eval/json.h"

namespace attnkit::cli {
namespace {

constexpr char kUsage[] =
    "attnkit patterns [--json]\n"
    "    Lists every pattern: name, family (static / grid / dynamic), direction at its defaults\n"
    "    (causal or bidirectional by its own rule, or caller: as the attention call says),\n"
    "    parameters with their defaults and accepted values, summary and paper. Use one as\n"
    "    --pattern name:key=value,... (keys left out take the defaults). --json prints one object\n"
    "    {\"patterns\": [{\"name\", \"spec\", \"family\", \"direction\", \"summary\", \"paper\",\n"
    "    \"params\": [{\"name\", \"default\", \"accepts\", \"help\"}]}]}.";

std::string number(double value, bool integer) {
  if (integer) {
    if (value >= 9.2e18) return "2^63-1";  // the int64 limits
    if (value <= -9.2e18) return "-2^63";
    const double magnitude = std::fabs(value);
    const int exponent = std::ilogb(magnitude);
    if (magnitude >= 1048576.0 && std::ldexp(1.0, exponent) == magnitude)
      return (value < 0 ? "-2^" : "2^") + std::to_string(exponent);
  }
  char text[32];
  std::snprintf(text, sizeof(text), integer ? "%.0f" : "%g", value);
  return text;
}

std::string range(double lo, double hi, bool integer) {
  std::string text = "[";
  text.append(number(lo, integer)).append(", ").append(number(hi, integer)).append("]");
  return text;
}

// What values a parameter accepts, e.g. "[1, 2^40]", "hunyuan|wan".
std::string accepts(const PatternParam& p) {
  switch (p.type) {
    case PatternParam::Type::kInt:
      return range(p.lo, p.hi, true);
    case PatternParam::Type::kBlock:
      return "multiple of 16";
    case PatternParam::Type::kReal:
      return range(p.lo, p.hi, false);
    case PatternParam::Type::kChoice: {
      std::string text;
      for (const auto& c : p.choices) text += (text.empty() ? "" : "|") + c;
      return text;
    }
    case PatternParam::Type::kText:
      return "text";
  }
  return "";
}

int patterns_main(const std::vector<std::string>& argv) {
  const Args args(argv, {}, {"--json"});
  const std::vector<PatternInfo> infos = list_patterns();
  if (args.flag("--json")) {
    std::string list = "[";
    for (size_t p = 0; p < infos.size(); ++p) {
      const PatternInfo& info = infos[p];
      std::string params = "[";
      for (size_t k = 0; k < info.params.size(); ++k) {
        JsonObject param;
        param.add("name", info.params[k].name)
            .add("default", info.params[k].default_value)
            .add("accepts", accepts(info.params[k]))
            .add("help", info.params[k].help);
        if (k) params += ",";
        params += param.str();
      }
      params += "]";
      const auto pattern = make_pattern(info.name);
      JsonObject entry;
      entry.add("name", info.name)
          .add("spec", pattern->spec())
          .add("family", family_name(info.family))
          .add("direction", direction_name(pattern->direction()))
          .add("summary", info.summary)
          .add("paper", info.paper)
          .raw("params", params);
      if (p) list += ",";
      list += entry.str();
    }
    list += "]";
    JsonObject json;
    json.raw("patterns", list);
    std::printf("%s\n", json.str().c_str());
    return 0;
  }
  for (const PatternInfo& info : infos) {
    const auto pattern = make_pattern(info.name);
    std::printf("%s\n    %s (%s family, %s)\n    paper: %s\n", pattern->spec().c_str(),
                info.summary.c_str(), family_name(info.family),
                direction_name(pattern->direction()), info.paper.c_str());
    for (const PatternParam& param : info.params)
      std::printf("    %-12s default %-8s %-16s %s\n", param.name.c_str(),
                  param.default_value.c_str(), accepts(param).c_str(), param.help.c_str());
    std::printf("\n");
  }
  return 0;
}

[[maybe_unused]] const bool registered = register_command({"patterns", kUsage, patterns_main});

}  // namespace
}  // namespace attnkit::cli
