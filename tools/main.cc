// attnkit: the command-line entry point. Dispatches to the registered sub-commands.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "cli_help.h"
#include "command.h"

namespace attnkit::cli {

namespace {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace

bool register_command(Command command) {
  registry().push_back(std::move(command));
  return true;
}

const std::vector<Command>& commands() { return registry(); }

}  // namespace attnkit::cli

namespace {

// Library errors name API parameters; shown as the flag that set it when the user gave one
// ("pattern" -> "--pattern", "max_context" -> "--ctx"), else as they are.
std::string shown_argument(const std::string& argument, const std::vector<std::string>& argv) {
  static const std::map<std::string, std::string> kFlagOf = {{"heads_kv", "--kv-heads"},
                                                             {"max_context", "--ctx"},
                                                             {"length", "--len"},
                                                             {"masked_heads", "--mask-heads"}};
  if (argument.rfind("--", 0) == 0) return argument;  // already a flag (CLI code)
  const auto it = kFlagOf.find(argument);
  std::string flag = it != kFlagOf.end() ? it->second : "--" + argument;
  std::replace(flag.begin() + 2, flag.end(), '_', '-');
  return std::find(argv.begin(), argv.end(), flag) != argv.end() ? flag : argument;
}

int usage(FILE* stream) {
  std::fprintf(stream, "usage: attnkit <command> [flags]\n\n");
  for (const auto& command : attnkit::cli::commands())
    std::fprintf(stream, "%s\n\n", command.usage.c_str());
  return stream == stdout ? 0 : 2;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(stderr);
  const std::string name = argv[1];
  if (name == "help" || name == "--help" || name == "-h") return usage(stdout);
  const std::vector<std::string> args(argv + 2, argv + argc);
  for (const auto& command : attnkit::cli::commands()) {
    if (command.name != name) continue;
    if (attnkit::cli::wants_help(args)) {  // every command: --help or -h prints its usage
      std::printf("%s\n", command.usage.c_str());
      return 0;
    }
    try {
      return command.main(args);
    } catch (const attnkit::cli::QuietExit& exit) {
      return exit.code;
    } catch (const attnkit::Error& error) {
      std::fprintf(stderr, "attnkit %s: error: %s: %s\n", name.c_str(),
                   shown_argument(error.argument(), args).c_str(), error.message().c_str());
      return 2;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "attnkit %s: error: out of memory (input too large)\n", name.c_str());
      return 2;
    } catch (const std::exception& error) {
      std::fprintf(stderr, "attnkit %s: internal error: %s\n", name.c_str(), error.what());
      return 1;
    }
  }
  std::fprintf(stderr, "attnkit: error: command: unknown command '%s' (see attnkit help)\n",
               attnkit::printable(name).c_str());
  return 2;
}
