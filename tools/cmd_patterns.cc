// `attnkit patterns`: every registered pattern with its parameters, defaults and paper.
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
    "    Lists every pattern: name, parameters with their defaults, summary and paper. Use one as\n"
    "    --pattern name:key=value,... (keys left out take the defaults). --json prints one object\n"
    "    {\"patterns\": [{\"name\", \"spec\", \"summary\", \"paper\", \"params\": [{\"name\",\n"
    "    \"default\", \"help\"}]}]}.";

std::string default_spec(const PatternInfo& info) {
  std::string spec = info.name;
  for (size_t k = 0; k < info.params.size(); ++k)
    spec += (k == 0 ? ":" : ",") + info.params[k].name + "=" + info.params[k].default_value;
  return spec;
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
            .add("help", info.params[k].help);
        if (k) params += ",";
        params += param.str();
      }
      params += "]";
      JsonObject entry;
      entry.add("name", info.name)
          .add("spec", default_spec(info))
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
    std::printf("%s\n    %s\n    paper: %s\n", default_spec(info).c_str(), info.summary.c_str(),
                info.paper.c_str());
    for (const PatternParam& param : info.params)
      std::printf("    %-12s default %-8s %s\n", param.name.c_str(), param.default_value.c_str(),
                  param.help.c_str());
    std::printf("\n");
  }
  return 0;
}

[[maybe_unused]] const bool registered = register_command({"patterns", kUsage, patterns_main});

}  // namespace
}  // namespace attnkit::cli
